// conns.js draws the connections table (#conns), like `ss -ti`: one row per
// connection, closed ones greyed for the minute the server keeps them.
//
// DOM contract (a chromedp test relies on it): each `tbody tr` has
// data-conn="<conn>", a `td.state` whose text is exactly the state, class
// `closed` once closed and `selected` when selected.

import { SSTHRESH_INFINITE, num } from "./model.js";
import { esc, fmtBytes, fmtMs, fmtSegs } from "./util.js";

// MAX_ROWS bounds the table on a stack with thousands of connections; the
// newest are shown, and the selected one always.
const MAX_ROWS = 300;

export function renderConns(model, table, note) {
  const tbody = table.tBodies[0] || table.appendChild(document.createElement("tbody"));
  let conns = [...model.conns.values()].filter((c) => c.info);
  const total = conns.length;
  if (conns.length > MAX_ROWS) {
    const sel = conns.find((c) => c.key === model.selected);
    conns = conns.slice(-MAX_ROWS);
    if (sel && !conns.includes(sel)) conns.unshift(sel);
  }
  if (conns.length === 0) {
    tbody.innerHTML = `<tr class="empty"><td colspan="13">No connections yet. Try <code>nc ${esc(firstAddr(model))} 5000</code> and type something.</td></tr>`;
  } else {
    tbody.innerHTML = conns.map((c) => row(c, model.selected)).join("");
  }
  if (note) note.textContent = total > conns.length ? `showing the newest ${MAX_ROWS} of ${total} connections` : "";
}

function firstAddr(model) {
  const a = (model.hello && model.hello.stack[0]) || "198.18.0.2/24";
  return a.replace(/\/\d+$/, "");
}

function row(c, selected) {
  const i = c.info;
  const classes = [];
  if (c.isClosed()) classes.push("closed");
  if (c.key === selected) classes.push("selected");
  const opener = i.client === "peer" ? "kernel" : i.client === "stack" ? "ustack" : i.client || "–";
  const tcp = String(i.proto).toUpperCase() !== "UDP";
  const ssthresh = fmtSegs(i.ssthresh, SSTHRESH_INFINITE);
  const title = i.provisional ? "from its packets; full numbers come with the next update" : c.key;
  return (
    `<tr data-conn="${esc(c.key)}" class="${classes.join(" ")}" title="${esc(title)}">` +
    `<td>${esc(i.proto || "–")}</td>` +
    `<td class="addr">${esc(i.remote)}</td>` +
    `<td class="addr">${esc(i.local)}</td>` +
    `<td class="state">${esc(i.state)}</td>` +
    `<td>${esc(opener)}</td>` +
    `<td class="num">${tcp ? fmtSegs(i.cwnd, Infinity) : "–"}</td>` +
    `<td class="num">${tcp ? ssthresh : "–"}</td>` +
    `<td class="num">${tcp ? fmtMs(i.srtt) : "–"}</td>` +
    `<td class="num">${tcp ? fmtMs(i.rto) : "–"}</td>` +
    `<td class="num${num(i.retrans, 0) > 0 ? " warn" : ""}">${cell(i.retrans)}${num(i.timeouts, 0) > 0 ? ` <span class="sub">(${i.timeouts} RTO)</span>` : ""}</td>` +
    `<td class="num">${fmtBytes(i.bytesIn)}</td>` +
    `<td class="num">${fmtBytes(i.bytesOut)}</td>` +
    `<td class="num">${cell(i.segsIn)} / ${cell(i.segsOut)}</td>` +
    `</tr>`
  );
}

function cell(v) {
  return typeof v === "number" && Number.isFinite(v) ? String(v) : "–";
}
