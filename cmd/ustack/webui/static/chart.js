// chart.js draws cwnd, ssthresh and the smoothed RTT of the selected
// connection over time in #chart, with a vertical mark at each
// retransmission (orange) and each packet dropped by fault injection (red).
//
// Hand-written SVG rather than a charting library: the page must work
// offline from the binary, and three lines need a few dozen lines of code.
//
// cwnd and ssthresh (segments) share the left axis, srtt (ms) has the right
// one. They are drawn as steps: a value holds until the next sample
// changes it. ssthresh ≥ 2^30 means "not set yet" and leaves a gap.

import { SSTHRESH_INFINITE } from "./model.js";
import { esc } from "./util.js";

const PAD = { left: 40, right: 46, top: 22, bottom: 22 };

export function renderChart(model, box) {
  const c = model.selectedConn();
  const width = Math.max(box.clientWidth || 440, 240);
  const height = Math.max(box.clientHeight || 200, 120);
  const samples = c ? c.samples : [];
  const marks = c ? c.packets.filter((p) => p.retrans || p.drop) : [];
  if (samples.length === 0) {
    const why = !c ? "No connection selected." : "No TCP samples for this connection yet.";
    box.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><text class="hint" x="${width / 2}" y="${height / 2}" text-anchor="middle">${why}</text></svg>`;
    return;
  }

  // Time axis: from the first sample to the last thing that happened.
  let t0 = samples[0].t;
  let t1 = samples[samples.length - 1].t;
  for (const m of marks) {
    if (m.t >= t0) t1 = Math.max(t1, m.t);
  }
  if (!(t1 - t0 > 1)) t1 = t0 + 1; // one sample, or all in one millisecond
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * plotW;

  const ssthreshOf = (s) => (s.ssthresh >= SSTHRESH_INFINITE ? NaN : s.ssthresh);
  let segMax = 1;
  let rttMax = 0;
  for (const s of samples) {
    if (s.cwnd > segMax) segMax = s.cwnd;
    const st = ssthreshOf(s);
    if (st > segMax) segMax = st;
    if (s.srtt > rttMax) rttMax = s.srtt;
  }
  const segTicks = ticks(segMax);
  const rttTicks = ticks(rttMax > 0 ? rttMax : 1);
  const segTop = segTicks[segTicks.length - 1];
  const rttTop = rttTicks[rttTicks.length - 1];
  const ySeg = (v) => PAD.top + plotH - (v / segTop) * plotH;
  const yRtt = (v) => PAD.top + plotH - (v / rttTop) * plotH;

  const parts = [];
  // Grid and axes.
  for (const v of segTicks) {
    const y = ySeg(v).toFixed(1);
    parts.push(`<line class="grid" x1="${PAD.left}" x2="${width - PAD.right}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text class="axis seg" x="${PAD.left - 4}" y="${+y + 3}" text-anchor="end">${v}</text>`);
  }
  for (const v of rttTicks) {
    parts.push(`<text class="axis rtt" x="${width - PAD.right + 4}" y="${(yRtt(v) + 3).toFixed(1)}">${fmtTick(v)}</text>`);
  }
  const tt = timeTicks(t0, t1, Math.max(2, Math.floor(plotW / 80)));
  // As many decimals as the tick step needs, so that ticks never read alike.
  const step = tt.length > 1 ? tt[1] - tt[0] : t1 - t0;
  const decimals = Math.min(Math.max(Math.ceil(-Math.log10(step / 1000)), 0), 4);
  for (const v of tt) {
    const xv = x(v).toFixed(1);
    parts.push(`<text class="axis" x="${xv}" y="${height - 6}" text-anchor="middle">${(v / 1000).toFixed(decimals)}s</text>`);
    parts.push(`<line class="tick" x1="${xv}" x2="${xv}" y1="${PAD.top + plotH}" y2="${PAD.top + plotH + 3}"/>`);
  }
  parts.push(`<rect class="frame" x="${PAD.left}" y="${PAD.top}" width="${plotW}" height="${plotH}"/>`);

  // Marks first, under the lines.
  for (const m of marks) {
    if (m.t < t0) continue;
    const xv = x(m.t).toFixed(1);
    const cls = m.drop ? "mark drop" : "mark retrans";
    const what = m.drop ? `dropped (${m.drop})` : "retransmission";
    parts.push(`<line class="${cls}" x1="${xv}" x2="${xv}" y1="${PAD.top}" y2="${PAD.top + plotH}"><title>${esc(what)}: ${esc(m.label)} at ${(m.t / 1000).toFixed(3)}s</title></line>`);
  }

  const xEnd = PAD.left + plotW;
  parts.push(`<path class="line ssthresh" d="${stepPath(samples, x, ssthreshOf, ySeg, xEnd)}"/>`);
  parts.push(`<path class="line srtt" d="${stepPath(samples, x, (s) => s.srtt, yRtt, xEnd)}"/>`);
  parts.push(`<path class="line cwnd" d="${stepPath(samples, x, (s) => s.cwnd, ySeg, xEnd)}"/>`);

  // Legend with the latest values, so the chart answers "what is it now".
  const last = samples[samples.length - 1];
  const st = ssthreshOf(last);
  const legend = [
    ["cwnd", `cwnd ${fmtNum(last.cwnd)}`],
    ["ssthresh", `ssthresh ${Number.isNaN(st) ? "∞" : fmtNum(st)}`],
    ["srtt", `srtt ${fmtTick(last.srtt)} ms`],
  ];
  let lx = PAD.left;
  for (const [cls, text] of legend) {
    parts.push(`<line class="line ${cls}" x1="${lx}" x2="${lx + 14}" y1="11" y2="11"/><text class="legend" x="${lx + 18}" y="14">${esc(text)}</text>`);
    lx += 18 + text.length * 6.2 + 14;
  }
  if (marks.length) {
    parts.push(`<line class="mark retrans" x1="${lx + 4}" x2="${lx + 4}" y1="4" y2="17"/><text class="legend" x="${lx + 10}" y="14">retrans/drop</text>`);
  }
  parts.push(`<text class="axis seg" x="4" y="${PAD.top - 6}">segs</text>`);
  parts.push(`<text class="axis rtt" x="${width - 4}" y="${PAD.top - 6}" text-anchor="end">ms</text>`);

  box.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${parts.join("")}</svg>`;
}

// stepPath draws value(s) as steps; a NaN value lifts the pen. The last
// value holds to the right edge: it is still the current one.
function stepPath(samples, x, value, y, xEnd) {
  let d = "";
  let prevY = NaN;
  for (const s of samples) {
    const v = value(s);
    const xv = x(s.t).toFixed(1);
    if (!Number.isFinite(v)) {
      prevY = NaN;
      continue;
    }
    const yv = y(v).toFixed(1);
    if (Number.isNaN(prevY)) d += `M${xv} ${yv}`;
    else d += `H${xv}V${yv}`;
    prevY = yv;
  }
  if (!Number.isNaN(prevY)) d += `H${xEnd.toFixed(1)}`;
  return d;
}

// ticks returns round tick values from 0 to at least max (about 4 steps).
function ticks(max) {
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = 0; v <= max + step * 0.999 && out.length < 12; v += step) out.push(+v.toPrecision(12));
  if (out.length < 2) out.push(step);
  return out;
}

function timeTicks(t0, t1, count) {
  const raw = (t1 - t0) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(t0 / step) * step; v <= t1 && out.length < 20; v += step) out.push(v);
  return out;
}

function fmtTick(v) {
  if (!Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  if (v < 1) return v.toFixed(2);
  if (v < 10) return v.toFixed(1);
  return String(Math.round(v));
}

function fmtNum(v) {
  return Number.isFinite(v) ? String(v) : "–";
}
