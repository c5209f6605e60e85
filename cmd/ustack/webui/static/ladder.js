// ladder.js draws the ladder (sequence) diagram of the selected connection
// in #ladder: the kernel's side (the peer) on the left, the userspace stack on
// the right, time flowing down, one arrow per segment in arrival order.
//
// DOM contract (a chromedp test relies on it): an <svg> whose arrows are
// <g class="arrow" data-n data-dir data-label> in the order received, with
// class `retrans` / `drop` when those apply, and brackets
// <g class="phase" data-phase="handshake|teardown">.
//
// Arrows are spaced evenly, not by time: a handshake takes microseconds and
// a typed line seconds, and a time scale would squash the one or stretch the
// other. The time of each arrow is printed in the left margin instead.

import { esc, fmtTime, truncate } from "./util.js";

// MAX_ARROWS: the ladder draws only the newest arrows; an SVG with thousands
// of groups makes every update slow, and nobody reads that far back.
export const MAX_ARROWS = 300;

const ROW = 28; // vertical space per arrow: a typed line and its echo fit the screen
const SLANT = 8; // how far an arrow goes down across the ladder: time passes
const TOP = 20; // space above the first arrow for its label
const TIME_W = 64; // left margin with the arrival time
const STATE_W = 96; // right of the stack's lifeline: the state it moved to
const BRACKET_W = 26; // right margin: handshake / teardown brackets
const HEAD = 7; // arrowhead length
const CHAR_W = 6.7; // width of one character of the 11px monospace label

export function renderLadder(model, box) {
  const c = model.selectedConn();
  const head = box.querySelector(".lifelines");
  const note = box.querySelector(".ladder-note");
  const scroller = box.querySelector(".ladder-scroll");
  if (!c) {
    head.innerHTML = "";
    note.textContent = "";
    const why = model.selected ? `Waiting for ${esc(model.selected)}…` : "No connection selected yet.";
    scroller.innerHTML = `<p class="hint">${why}</p><svg class="empty" width="0" height="0"></svg>`;
    return;
  }

  const width = Math.max(scroller.clientWidth || 600, 480);
  const left = TIME_W + 14; // the peer's lifeline
  const right = width - STATE_W - BRACKET_W; // the stack's lifeline
  const info = c.info || {};
  // The peer is whoever is not the stack; packets name both ends even before
  // the `conns` list does.
  const first = c.packets[0];
  const peer = info.remote || (first ? (first.dir === "in" ? first.src : first.dst) : "");
  const local = info.local || (first ? (first.dir === "in" ? first.dst : first.src) : "");
  head.innerHTML =
    `<div class="lifeline-head peer" style="left:${left}px" title="the kernel's side: its sockets, nc, curl…">kernel<br><b class="mono">${esc(peer)}</b></div>` +
    `<div class="lifeline-head stack" style="left:${right}px" title="the userspace stack (gVisor netstack)">ustack<br><b class="mono">${esc(local)}</b></div>`;

  const packets = c.packets.length > MAX_ARROWS ? c.packets.slice(-MAX_ARROWS) : c.packets;
  const notes = [];
  const notKept = c.notKept();
  if (notKept > 0) notes.push(`first ${notKept} events not kept`);
  if (c.packets.length > MAX_ARROWS) notes.push(`showing last ${MAX_ARROWS} of ${c.packets.length + notKept}`);
  note.textContent = notes.join(" · ");

  const height = TOP + packets.length * ROW + 16;
  const parts = [];
  parts.push(`<line class="lifeline" x1="${left}" y1="0" x2="${left}" y2="${height}"/>`);
  parts.push(`<line class="lifeline" x1="${right}" y1="0" x2="${right}" y2="${height}"/>`);
  const maxChars = Math.max(8, Math.floor((right - left - 12) / CHAR_W));
  // A state is printed where it changed; a repeat of the last one printed
  // (an event flagged as a change that kept the state) would only add noise.
  let shownState = "";
  packets.forEach((p, i) => {
    const showState = p.stateChanged && !p.drop && p.state !== "" && p.state !== shownState;
    if (showState) shownState = p.state;
    parts.push(arrow(p, TOP + i * ROW, left, right, maxChars, p.n === model.selectedArrow, showState));
  });
  parts.push(...brackets(packets, width - BRACKET_W + 4));
  if (packets.length === 0) parts.push(`<text class="hint" x="${(left + right) / 2}" y="${TOP + 14}" text-anchor="middle">no packets yet</text>`);

  // Follow new arrows only when the user is at the bottom already: never
  // yank the view away from an older arrow they are reading.
  const atBottom = scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - ROW * 2;
  const switched = scroller.dataset.conn !== c.key;
  scroller.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${parts.join("")}</svg>`;
  scroller.dataset.conn = c.key;
  if (atBottom || switched) scroller.scrollTop = scroller.scrollHeight;
}

// arrow draws one segment: from the peer's lifeline to the stack's for
// "in", the other way for "out"; a dropped one stops half-way with an ✕.
function arrow(p, y, left, right, maxChars, selected, showState) {
  const from = p.dir === "in" ? left : right;
  const to = p.dir === "in" ? right : left;
  const y2 = y + SLANT;
  const classes = ["arrow", p.dir === "out" ? "out" : "in"];
  if (p.retrans) classes.push("retrans");
  if (p.drop) classes.push("drop");
  if (p.note) classes.push("noted");
  if (selected) classes.push("selected");

  let endX = to;
  let endY = y2;
  if (p.drop) {
    endX = (from + to) / 2;
    endY = y + SLANT / 2;
  }
  const tip = [p.line || p.label];
  if (p.retrans) tip.push("retransmission");
  if (p.drop) tip.push("dropped by fault injection: " + p.drop);
  if (p.note) tip.push(p.note);
  if (p.phase) tip.push(p.phase + (p.step ? " " + p.step : ""));

  let g = `<g class="${classes.join(" ")}" data-n="${esc(p.n)}" data-dir="${esc(p.dir)}" data-label="${esc(p.label)}">`;
  g += `<title>${esc(tip.join("\n"))}</title>`;
  // An invisible band over the whole row, so that the click target is the
  // row and not a 1.5px line.
  g += `<rect class="hit" x="0" y="${y - 15}" width="${right + STATE_W}" height="${ROW}"/>`;
  g += `<text class="time" x="4" y="${y + 4}">${esc(fmtTime(p.t))}</text>`;
  g += `<line x1="${from}" y1="${y}" x2="${endX}" y2="${endY}"/>`;
  if (p.drop) {
    const s = 5;
    g += `<path class="cross" d="M${endX - s} ${endY - s}L${endX + s} ${endY + s}M${endX - s} ${endY + s}L${endX + s} ${endY - s}"/>`;
  } else {
    g += arrowhead(from, y, endX, endY);
  }
  let label = p.label || p.flags || "?";
  if (p.drop) label += " ✕ " + p.drop;
  else if (p.note) label += " · " + p.note;
  // A dropped arrow's label starts at its sender and may run past the ✕:
  // centred on half an arrow it would have room for half the text.
  let labelAttrs = `x="${(left + right) / 2}" text-anchor="middle"`;
  if (p.drop) labelAttrs = p.dir === "in" ? `x="${left + 6}" text-anchor="start"` : `x="${right - 6}" text-anchor="end"`;
  // Raised a little more when dropped, to clear the ✕ it runs past.
  const labelY = y + SLANT / 2 - (p.drop ? 8 : 5);
  g += `<text class="label" ${labelAttrs} y="${labelY}">${esc(truncate(label, maxChars))}</text>`;
  if (showState) {
    g += `<circle class="state-dot" cx="${right}" cy="${p.dir === "in" ? y2 : y}" r="3"/>`;
    g += `<text class="state-change" x="${right + 7}" y="${(p.dir === "in" ? y2 : y) + 4}">${esc(p.state)}</text>`;
  }
  return g + `</g>`;
}

function arrowhead(x1, y1, x2, y2) {
  const angle = Math.atan2(y2 - y1, x2 - x1);
  const spread = 0.42; // radians either side of the shaft
  const ax = x2 - HEAD * Math.cos(angle - spread);
  const ay = y2 - HEAD * Math.sin(angle - spread);
  const bx = x2 - HEAD * Math.cos(angle + spread);
  const by = y2 - HEAD * Math.sin(angle + spread);
  return `<path class="head" d="M${x2} ${y2}L${ax.toFixed(1)} ${ay.toFixed(1)}L${bx.toFixed(1)} ${by.toFixed(1)}Z"/>`;
}

// brackets groups consecutive arrows of the same phase into one bracket at
// the right margin, named after the phase.
function brackets(packets, x) {
  const out = [];
  let start = -1;
  for (let i = 0; i <= packets.length; i++) {
    const phase = i < packets.length ? packets[i].phase : "";
    if (start >= 0 && phase !== packets[start].phase) {
      out.push(bracket(packets[start].phase, start, i - 1, x));
      start = -1;
    }
    if (start < 0 && phase) start = i;
  }
  return out;
}

function bracket(phase, first, last, x) {
  const y1 = TOP + first * ROW - 12;
  const y2 = TOP + last * ROW + SLANT + 4;
  const mid = (y1 + y2) / 2;
  return (
    `<g class="phase" data-phase="${esc(phase)}">` +
    `<path d="M${x} ${y1}h6V${y2}h-6"/>` +
    `<text x="${x + 16}" y="${mid}" text-anchor="middle" transform="rotate(-90 ${x + 16} ${mid})">${esc(phase)}</text>` +
    `</g>`
  );
}
