// statemachine.js draws the TCP state machine of RFC 9293 (section 3.3.2,
// Figure 5) in #state-machine, and marks on it the selected connection's
// current state and the path it took to get there.
//
// DOM contract (a chromedp test relies on it): <g class="state"
// data-state="ESTABLISHED"> per state, with class `current` on the current
// one and `visited` on the others the connection went through.
//
// Like the RFC's figure, CLOSED is drawn twice: at the top where connections
// start and at the bottom right where they end, so that no arrow has to
// climb back across the figure. Only the top one is a `g.state`; the bottom
// one is a `g.state-alias` lit in step with it.

import { normState } from "./model.js";
import { esc } from "./util.js";

const W = 480;
const H = 362;
const BOX_W = 104;
const BOX_H = 26;

// Positions follow the RFC figure: opening on top, ESTABLISHED in the
// middle, the side that closes first on the left, the other on the right.
// Rows are 54px apart: room for a label between boxes, and no more, since
// the figure must stay legible when squeezed into a short window.
const NODES = {
  CLOSED: [240, 18],
  LISTEN: [240, 72],
  "SYN-RCVD": [66, 128],
  "SYN-SENT": [414, 128],
  ESTABLISHED: [240, 184],
  "FIN-WAIT-1": [66, 238],
  "CLOSE-WAIT": [414, 238],
  "FIN-WAIT-2": [66, 292],
  CLOSING: [240, 292],
  "LAST-ACK": [414, 292],
  "TIME-WAIT": [240, 344],
};
const CLOSED_END = [414, 344]; // the RFC's second CLOSED box
const END = "CLOSED'"; // edge target meaning the bottom CLOSED box

// EDGES are the figure's transitions: [from, to, event / action, bend,
// label placement]. bend curves an edge sideways (px) so that the two
// directions of a pair, and edges that would cross a box, stay apart. The
// label goes at the middle of the curve unless placed: [dx, dy, anchor].
const EDGES = [
  ["CLOSED", "LISTEN", "passive OPEN", 14, [-16, 0, "end"]],
  ["LISTEN", "CLOSED", "CLOSE", 14, [16, 0, "start"]],
  ["CLOSED", "SYN-SENT", "active OPEN / snd SYN", -40],
  ["SYN-SENT", "CLOSED", "CLOSE", -12],
  ["LISTEN", "SYN-RCVD", "rcv SYN / snd SYN,ACK", 0],
  ["LISTEN", "SYN-SENT", "SEND / snd SYN", 0],
  ["SYN-RCVD", "LISTEN", "rcv RST", -34],
  ["SYN-SENT", "SYN-RCVD", "rcv SYN / snd SYN,ACK", 0],
  ["SYN-RCVD", "ESTABLISHED", "rcv ACK of SYN", 0],
  ["SYN-SENT", "ESTABLISHED", "rcv SYN,ACK / snd ACK", 0],
  ["SYN-RCVD", "FIN-WAIT-1", "CLOSE / snd FIN", 0],
  ["ESTABLISHED", "FIN-WAIT-1", "CLOSE / snd FIN", 0],
  ["ESTABLISHED", "CLOSE-WAIT", "rcv FIN / snd ACK", 0],
  ["FIN-WAIT-1", "FIN-WAIT-2", "rcv ACK of FIN", 0],
  ["FIN-WAIT-1", "CLOSING", "rcv FIN / snd ACK", 0],
  ["CLOSE-WAIT", "LAST-ACK", "CLOSE / snd FIN", 0],
  ["FIN-WAIT-2", "TIME-WAIT", "rcv FIN / snd ACK", 20],
  ["CLOSING", "TIME-WAIT", "rcv ACK of FIN", 0],
  ["LAST-ACK", END, "rcv ACK of FIN", 0],
  ["TIME-WAIT", END, "timeout 2MSL", 0, [0, 12, "middle"]],
];

function pos(name) {
  return name === END ? CLOSED_END : NODES[name];
}

// edgeGeometry returns a quadratic curve from box to box, clipped at the
// boxes' borders, and where to put its label.
function edgeGeometry(from, to, bend) {
  const [x1, y1] = pos(from);
  const [x2, y2] = pos(to);
  const dx = x2 - x1;
  const dy = y2 - y1;
  const len = Math.hypot(dx, dy) || 1;
  // Control point: the middle, pushed sideways along the normal.
  const cx = (x1 + x2) / 2 + (-dy / len) * bend * 2;
  const cy = (y1 + y2) / 2 + (dx / len) * bend * 2;
  const [sx, sy] = clip(x1, y1, cx, cy);
  const [ex, ey] = clip(x2, y2, cx, cy);
  // The curve's middle (t = 0.5) is where the label goes.
  const mx = 0.25 * sx + 0.5 * cx + 0.25 * ex;
  const my = 0.25 * sy + 0.5 * cy + 0.25 * ey;
  return { d: `M${f(sx)} ${f(sy)}Q${f(cx)} ${f(cy)} ${f(ex)} ${f(ey)}`, mx, my };
}

// clip moves from a box's centre (x, y) toward (tx, ty) to the box's border.
function clip(x, y, tx, ty) {
  const dx = tx - x;
  const dy = ty - y;
  const sx = dx === 0 ? Infinity : BOX_W / 2 / Math.abs(dx);
  const sy = dy === 0 ? Infinity : BOX_H / 2 / Math.abs(dy);
  const s = Math.min(sx, sy, 1);
  return [x + dx * s, y + dy * s];
}

function f(v) {
  return v.toFixed(1);
}

// target says which CLOSED box a transition into CLOSED goes to: the top
// one from the opening states (as in the RFC figure), the bottom one from
// every other state.
function target(from, to) {
  if (to !== "CLOSED") return to;
  return from === "LISTEN" || from === "SYN-SENT" ? "CLOSED" : END;
}

function edgeKey(from, to) {
  return from + ">" + to;
}

// StateMachine owns the static figure and updates its classes in place.
export class StateMachine {
  constructor(box) {
    this.box = box;
    const parts = [
      `<defs><marker id="sm-head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" class="sm-head"/></marker>` +
        `<marker id="sm-head-taken" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" class="sm-head-taken"/></marker></defs>`,
      `<g class="edges">`,
    ];
    for (const [from, to, label, bend, place] of EDGES) {
      const g = edgeGeometry(from, to, bend);
      const [dx, dy, anchor] = place || [0, 0, "middle"];
      const shown = to === END ? "CLOSED" : to;
      parts.push(
        `<g class="edge" data-key="${esc(edgeKey(from, to))}" data-from="${esc(from)}" data-to="${esc(shown)}"><title>${esc(from)} → ${esc(shown)}: ${esc(label)}</title>` +
          `<path d="${g.d}" marker-end="url(#sm-head)"/>` +
          `<text x="${f(g.mx + dx)}" y="${f(g.my + 3 + dy)}" text-anchor="${anchor}">${esc(label)}</text></g>`,
      );
    }
    parts.push(`</g><g class="extra-edges"></g><g class="nodes">`);
    for (const [name, [x, y]] of Object.entries(NODES)) {
      parts.push(node("state", name, x, y));
    }
    parts.push(node("state-alias", "CLOSED", CLOSED_END[0], CLOSED_END[1]));
    parts.push(`</g>`);
    box.innerHTML =
      `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" preserveAspectRatio="xMidYMid meet">${parts.join("")}</svg>` +
      `<div class="sm-path mono"></div>`;
    this.svg = box.querySelector("svg");
    this.caption = box.querySelector(".sm-path");
    this.extra = box.querySelector(".extra-edges");
    this.drawn = "";
  }

  render(model) {
    const c = model.selectedConn();
    const udp = c && c.info && String(c.info.proto).toUpperCase() === "UDP";
    const path = c && !udp ? c.path : [];
    const key = (c ? c.key : "") + "|" + path.join(",");
    if (key === this.drawn) return;
    this.drawn = key;

    const current = path[path.length - 1] || "";
    const visited = new Set(path);
    for (const g of this.svg.querySelectorAll("g.state")) {
      const name = g.dataset.state;
      g.classList.toggle("current", name === current);
      g.classList.toggle("visited", visited.has(name) && name !== current);
    }
    // The bottom CLOSED box is the end of a connection: light it when the
    // connection closed after having been open, the top one when it never was.
    const alias = this.svg.querySelector("g.state-alias");
    const ended = current === "CLOSED" && path.length > 1 && target(path[path.length - 2], "CLOSED") === END;
    alias.classList.toggle("current", ended);
    // The top CLOSED box stays `current` (the DOM contract says which state
    // the connection is in), but is drawn as visited when the path ended at
    // the bottom one, so that the eye follows the path to its real end.
    this.svg.classList.toggle("ended", ended);

    // Mark the transitions taken; one the figure lacks (a RST from
    // ESTABLISHED, FIN-WAIT-1 straight to TIME-WAIT on a FIN-ACK) is drawn
    // dashed.
    const taken = new Set();
    for (let i = 1; i < path.length; i++) taken.add(edgeKey(path[i - 1], target(path[i - 1], path[i])));
    for (const g of this.svg.querySelectorAll("g.edge")) {
      const on = taken.has(g.dataset.key);
      g.classList.toggle("taken", on);
      g.querySelector("path").setAttribute("marker-end", on ? "url(#sm-head-taken)" : "url(#sm-head)");
      taken.delete(g.dataset.key);
    }
    const extras = [];
    for (const k of taken) {
      const [from, to] = k.split(">");
      if (!pos(from) || !pos(to)) continue; // a state the figure does not have
      const g = edgeGeometry(from, to, 10);
      const shown = to === END ? "CLOSED" : to;
      extras.push(`<g class="edge taken unusual"><title>${esc(from)} → ${esc(shown)} (not in the RFC figure: a RST, or FIN and ACK together)</title><path d="${g.d}" marker-end="url(#sm-head-taken)"/></g>`);
    }
    this.extra.innerHTML = extras.join("");

    if (!c) this.caption.textContent = "";
    else if (udp) this.caption.textContent = "UDP: no TCP states";
    else this.caption.textContent = path.length ? path.join(" → ") : "state not known yet";
  }
}

function node(cls, name, x, y) {
  const rx = name === "ESTABLISHED" ? 13 : 5;
  return (
    `<g class="${cls}" data-state="${esc(name)}"><title>${esc(name)}</title>` +
    `<rect x="${x - BOX_W / 2}" y="${y - BOX_H / 2}" width="${BOX_W}" height="${BOX_H}" rx="${rx}"/>` +
    `<text x="${x}" y="${y + 4}" text-anchor="middle">${esc(name)}</text></g>`
  );
}
