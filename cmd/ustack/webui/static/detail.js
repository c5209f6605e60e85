// detail.js fills the detail panel (#detail) with the headers of the arrow
// clicked in the ladder, layer by layer as the server decoded them (link,
// IP, TCP or UDP, payload): one <section data-layer="…"> with a table each.

import { esc, fmtTime } from "./util.js";

export function renderDetail(model, box) {
  const c = model.selectedConn();
  const p = c && c.packets.find((pk) => pk.n === model.selectedArrow);
  if (!p) {
    box.innerHTML = `<p class="hint">Click an arrow in the ladder to see its headers, layer by layer.</p>`;
    return;
  }
  const dir = p.dir === "in" ? "kernel → ustack" : "ustack → kernel";
  const tags = [];
  if (p.retrans) tags.push(`<span class="tag retrans">retransmission</span>`);
  if (p.drop) tags.push(`<span class="tag drop">dropped: ${esc(p.drop)}</span>`);
  if (p.note) tags.push(`<span class="tag note">${esc(p.note)}</span>`);
  if (p.phase) tags.push(`<span class="tag phase">${esc(p.phase)}${p.step ? " " + esc(p.step) : ""}</span>`);
  for (const a of p.annotations) tags.push(`<span class="tag">${esc(a)}</span>`);
  if (p.stateChanged && p.state) tags.push(`<span class="tag state">→ ${esc(p.state)}</span>`);
  let html =
    `<header><h3 class="mono">${esc(p.label || p.flags || "packet")}</h3>` +
    `<div class="meta">#${esc(p.n)} · ${esc(fmtTime(p.t))} · ${esc(dir)} · ${esc(p.src)} → ${esc(p.dst)}</div>` +
    (tags.length ? `<div class="tags">${tags.join(" ")}</div>` : "") +
    (p.line ? `<pre class="line" title="the trace line">${esc(p.line)}</pre>` : "") +
    `</header>`;
  for (const layer of p.layers) {
    if (!layer || typeof layer !== "object") continue;
    const name = typeof layer.name === "string" ? layer.name : "?";
    const fields = Array.isArray(layer.fields) ? layer.fields : [];
    html +=
      `<section data-layer="${esc(name)}"><h4>${esc(name)}</h4><table>` +
      fields
        .filter((f) => Array.isArray(f))
        .map((f) => `<tr><th>${esc(f[0])}</th><td class="mono">${esc(f[1])}</td></tr>`)
        .join("") +
      `</table></section>`;
  }
  box.innerHTML = html;
}
