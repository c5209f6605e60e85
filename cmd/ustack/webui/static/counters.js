// counters.js draws the per-layer counters strip (#counters). The server
// decides which layers and numbers exist, so this renders whatever list it
// gets: a box per layer, a label and a number per value.

import { esc, fmtCount } from "./util.js";

export function renderCounters(model, box, note) {
  const layers = model.counters;
  let html = layers
    .map(
      (layer) =>
        `<div class="layer" data-layer="${esc(layer.name)}"><h3>${esc(layer.name)}</h3><dl>` +
        layer.values
          .map(([label, value]) => {
            // A non-zero drop or error count is what the user came to find.
            const bad = /drop|error|invalid|malformed|fail|lost|retrans|timeout/i.test(label) && typeof value === "number" && value > 0;
            return `<div${bad ? ' class="bad"' : ""}><dt>${esc(label)}</dt><dd>${esc(fmtCount(value))}</dd></div>`;
          })
          .join("") +
        `</dl></div>`,
    )
    .join("");
  if (!html) html = `<div class="layer empty">waiting for counters…</div>`;
  box.innerHTML = html;
  // The fault settings and the packets of no connection go in the panel's
  // title line: a box of their own would not fit the strip.
  if (note) {
    const extra = [];
    if (model.faults) extra.push(`faults: <b>${esc(model.faults)}</b>`);
    if (model.otherPackets > 0) extra.push(`packets of no connection (ICMP…): <b>${fmtCount(model.otherPackets)}</b>`);
    note.innerHTML = extra.join(" · ");
  }
}
