// util.js: small helpers shared by the views.
//
// The views build their SVG and tables as strings (one innerHTML per
// redraw is much cheaper than thousands of createElement calls for a 300
// arrow ladder), so everything that came from the stream goes through esc.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

// esc makes any value safe as HTML text or as a quoted attribute value.
export function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (ch) => ESCAPES[ch]);
}

// fmtCount formats a counter: grouped digits, and something readable for
// values that are not numbers (the Go side may one day send a string).
export function fmtCount(v) {
  if (typeof v === "number" && Number.isFinite(v)) {
    // Beyond 2^53 the digits are not exact anyway, and 300 of them would
    // push the strip off the screen.
    if (Math.abs(v) >= 1e15) return v.toExponential(3);
    return v.toLocaleString("en-US");
  }
  if (typeof v === "string") return v;
  return "–";
}

// fmtMs formats a duration in milliseconds with a precision that suits it:
// RTTs on a TUN device are fractions of a millisecond, timeouts are hundreds.
export function fmtMs(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  if (v < 1) return v.toFixed(2) + " ms";
  if (v < 100) return v.toFixed(1) + " ms";
  if (v < 10000) return Math.round(v) + " ms";
  return (v / 1000).toFixed(1) + " s";
}

// fmtSegs formats cwnd/ssthresh (segments); ssthresh ≥ 2^30 means unset.
export function fmtSegs(v, infinite) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  if (v >= infinite) return "∞";
  return String(v);
}

// fmtBytes formats a byte count: exact below 10 kB, where a user typing
// into nc wants to see every byte counted, rounded above.
export function fmtBytes(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  if (v < 10000) return v + " B";
  if (v < 10e6) return (v / 1e3).toFixed(1) + " kB";
  if (v < 10e9) return (v / 1e6).toFixed(1) + " MB";
  return (v / 1e9).toFixed(1) + " GB";
}

// fmtTime formats a stream time `t` (ms since the UI server started).
export function fmtTime(t) {
  if (typeof t !== "number" || !Number.isFinite(t)) return "";
  return (t / 1000).toFixed(3) + "s";
}

// truncate shortens text to max characters with an ellipsis.
export function truncate(s, max) {
  s = String(s ?? "");
  return s.length > max ? s.slice(0, Math.max(0, max - 1)) + "…" : s;
}
