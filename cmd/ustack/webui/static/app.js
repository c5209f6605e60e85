// app.js is the page's entry point: it reads the /events stream (Server-Sent
// Events) into the model and redraws the views, at most every RENDER_MS.
//
// Events can come in bursts (the server replays its whole history on every
// new stream, and a bulk transfer makes thousands of segments a second), so
// an event only updates the model; drawing is batched.

import { Model } from "./model.js";
import { renderConns } from "./conns.js";
import { renderCounters } from "./counters.js";
import { renderDetail } from "./detail.js";
import { renderLadder } from "./ladder.js";
import { renderChart } from "./chart.js";
import { StateMachine } from "./statemachine.js";
import { esc } from "./util.js";

const RENDER_MS = 80;
// When the server answers with an error (not an SSE stream), EventSource
// gives up for good; we try again ourselves after this long, doubling up to
// the maximum.
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;

const model = new Model();
const el = {
  status: document.getElementById("status"),
  helloInfo: document.getElementById("hello-info"),
  conns: document.getElementById("conns"),
  connsNote: document.getElementById("conns-note"),
  ladder: document.getElementById("ladder"),
  detail: document.getElementById("detail"),
  chart: document.getElementById("chart"),
  counters: document.getElementById("counters"),
  countersNote: document.getElementById("counters-note"),
};
const stateMachine = new StateMachine(document.getElementById("state-machine"));

let link = "connecting"; // connecting | live | reconnecting
let badEvents = 0; // events whose data was not JSON
let retryMs = RETRY_MIN_MS;

// ---- the stream

const handlers = {
  hello: (d) => model.onHello(d),
  packet: (d) => model.onPacket(d),
  sample: (d) => model.onSample(d),
  conns: (d) => model.onConns(d),
  counters: (d) => model.onCounters(d),
  lost: (d) => model.onLost(d),
};

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => {
    link = "live";
    retryMs = RETRY_MIN_MS;
    scheduleRender();
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      // Not an SSE answer (the server is gone or says 404/500): EventSource
      // will not retry on its own.
      link = "reconnecting";
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    } else {
      link = "reconnecting"; // EventSource retries by itself
    }
    scheduleRender();
  };
  for (const [type, apply] of Object.entries(handlers)) {
    source.addEventListener(type, (event) => onEvent(type, event, apply));
  }
  // Unnamed messages and event types this page does not know are ignored:
  // the server may learn new ones before the page does.
}

function onEvent(type, event, apply) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    badEvents++;
    scheduleRender();
    return;
  }
  try {
    apply(data);
  } catch (err) {
    // One odd event must not stop the stream; show it and carry on.
    if (window.ustackReportError) window.ustackReportError(`${type} event: ${(err && err.stack) || err}`);
  }
  if (type === "hello") link = "live";
  scheduleRender();
}

// ---- drawing

let renderTimer = 0;
function scheduleRender() {
  if (!renderTimer) renderTimer = setTimeout(render, RENDER_MS);
}

// drawn remembers what each view last drew, so that a view is redrawn only
// when its input changed.
const drawn = { model: -1, ladder: "", chart: "", detail: "" };

function render() {
  renderTimer = 0;
  renderStatus();
  const c = model.selectedConn();
  if (drawn.model !== model.version) {
    drawn.model = model.version;
    renderConns(model, el.conns, el.connsNote);
    renderCounters(model, el.counters, el.countersNote);
  }
  const scroller = el.ladder.querySelector(".ladder-scroll");
  const ladderKey = [model.selected, c && c.version, model.selectedArrow, scroller.clientWidth].join("|");
  if (ladderKey !== drawn.ladder) {
    drawn.ladder = ladderKey;
    renderLadder(model, el.ladder);
  }
  const chartKey = [model.selected, c && c.version, el.chart.clientWidth, el.chart.clientHeight].join("|");
  if (chartKey !== drawn.chart) {
    drawn.chart = chartKey;
    renderChart(model, el.chart);
  }
  const detailKey = [model.selected, model.selectedArrow, c ? c.packets.length > 0 : false].join("|");
  if (detailKey !== drawn.detail) {
    drawn.detail = detailKey;
    renderDetail(model, el.detail);
  }
  stateMachine.render(model);
}

function renderStatus() {
  const parts = [];
  const word = link === "live" ? "live" : link === "reconnecting" ? "reconnecting…" : "connecting…";
  parts.push(`<span class="dot ${link}"></span><span class="conn-state">${word}</span>`);
  const lost = model.lostTotal();
  if (lost > 0) {
    const why = model.lostWhy ? ` (${esc(model.lostWhy)})` : "";
    parts.push(`<span class="warn">${lost} events not shown${why}</span>`);
  }
  const c = model.selectedConn();
  const notKept = c ? c.notKept() : 0;
  if (notKept > 0) {
    parts.push(`<span class="warn" title="the server keeps the last ${model.keep} packet events per connection">${esc(c.key)}: first ${notKept} events not kept</span>`);
  }
  if (badEvents > 0) parts.push(`<span class="warn">${badEvents} unreadable events ignored</span>`);
  const html = parts.join(" · ");
  if (el.status.innerHTML !== html) el.status.innerHTML = html;
  el.status.className = link;

  const h = model.hello;
  el.helloInfo.textContent = h ? [h.version, h.iface, h.stack.join(", ")].filter(Boolean).join(" · ") : "";
}

// ---- interaction

el.conns.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-conn]");
  if (!row) return;
  model.select(row.dataset.conn, true);
  render();
});

el.ladder.addEventListener("click", (event) => {
  const arrow = event.target.closest("g.arrow");
  if (!arrow) return;
  const n = Number(arrow.dataset.n);
  model.selectedArrow = model.selectedArrow === n ? -1 : n;
  render();
});

// Up/down (or k/j) step through the arrows once one is selected: reading a
// handshake header by header is the point of the detail panel.
document.addEventListener("keydown", (event) => {
  if (event.target.closest && event.target.closest("input, textarea, select")) return;
  const c = model.selectedConn();
  if (!c || model.selectedArrow < 0) return;
  const step = event.key === "ArrowDown" || event.key === "j" ? 1 : event.key === "ArrowUp" || event.key === "k" ? -1 : 0;
  if (!step) return;
  const i = c.packets.findIndex((p) => p.n === model.selectedArrow);
  const next = c.packets[i + step];
  if (i < 0 || !next) return;
  event.preventDefault();
  model.selectedArrow = next.n;
  render();
  const g = el.ladder.querySelector(`g.arrow[data-n="${next.n}"]`);
  if (g && g.scrollIntoView) g.scrollIntoView({ block: "nearest" });
});

// Redraw the views that size themselves when their boxes change size.
if (typeof ResizeObserver === "function") {
  new ResizeObserver(() => scheduleRender()).observe(el.ladder);
  new ResizeObserver(() => scheduleRender()).observe(el.chart);
}

render();
connect();
