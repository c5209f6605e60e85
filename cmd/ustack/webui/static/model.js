// model.js holds what the page knows, built from the /events stream; it
// draws nothing. app.js feeds it events and the views (conns.js, ladder.js,
// statemachine.js, chart.js) read it.
//
// Two rules shape it:
//   - Never throw on unexpected input. The stream comes from a program that
//     will change after this page was written, so every field is read through
//     str/num/bool with a default, and an event that makes no sense is ignored.
//   - Bounded memory. The page may stay open for days on a busy stack: at most
//     `keep` packet events (and as many samples) per connection, at most
//     MAX_CLOSED closed connections, and connections that left the server's
//     list are forgotten.

// DEFAULT_KEEP is used until hello says how many packet events the server
// keeps per connection; the page keeps the same number so that a reload
// shows what the live view showed.
export const DEFAULT_KEEP = 1000;
// MAX_KEEP guards against a hello with an absurd keep filling memory.
const MAX_KEEP = 100000;
// MAX_CLOSED is how many closed connections the page remembers at most.
export const MAX_CLOSED = 200;
// MAX_PATH bounds the list of states a connection went through; a real path
// is under a dozen states, so more means flapping we need not keep.
const MAX_PATH = 64;
// FORGET_AFTER_MS: a connection that is not in the server's list and had no
// packet for this long is dropped. It must be longer than the gap between a
// new connection's first packet and the next `conns` event (one second).
const FORGET_AFTER_MS = 5000;
// MISSING_SELECTION_MS: for how long (stream time, from the first `conns`
// list after a reconnect) a selected connection may be missing before the
// page selects another. Counting lists would not do: the server may send
// lists in the middle of its replay.
const MISSING_SELECTION_MS = 3000;
// SSTHRESH_INFINITE: netstack starts ssthresh at 2^30-1 segments
// (1073741823) to mean "not set yet"; such values, and larger ones, are
// shown as ∞ and not plotted.
export const SSTHRESH_INFINITE = 2 ** 30 - 1;

export function str(v, dflt = "") {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  return dflt;
}

export function num(v, dflt = NaN) {
  return typeof v === "number" && Number.isFinite(v) ? v : dflt;
}

export function bool(v) {
  return v === true;
}

function arr(v) {
  return Array.isArray(v) ? v : [];
}

// normState turns the state names of the stream into the RFC 9293 names of
// the state machine figure ("FIN-WAIT1", "fin_wait_1", "SYN-RECEIVED" all
// become "FIN-WAIT-1" / "SYN-RCVD"), so that a small naming change on the
// Go side does not silently un-highlight the figure.
export function normState(s) {
  let name = str(s).trim().toUpperCase().replace(/[_ ]+/g, "-");
  name = name.replace(/^FIN-?WAIT-?([12])$/, "FIN-WAIT-$1");
  if (/^SYN-?(RCVD|RECV|RECEIVED)$/.test(name)) return "SYN-RCVD";
  if (/^SYN-?SENT$/.test(name)) return "SYN-SENT";
  if (name === "CLOSE" || name === "INITIAL" || name === "BOUND") return "CLOSED";
  return name;
}

// flagSet splits "PSH-ACK" into {"PSH","ACK"}.
function flagSet(flags) {
  return new Set(str(flags).toUpperCase().split(/[-,| ]+/).filter(Boolean));
}

// A Conn is everything known about one connection.
class Conn {
  constructor(key, now) {
    this.key = key;
    // info is the connection's row as the last `conns` event gave it, or one
    // made up from its packets until that event comes.
    this.info = null;
    this.listed = false; // in the last `conns` list
    this.packets = []; // packet events, oldest first, at most keep
    this.samples = []; // probe samples, oldest first, at most keep
    this.droppedHere = 0; // packet events this page dropped to stay under keep
    this.totalPackets = 0; // packet events received for it on this stream
    // path is the stack side's states in the order visited, from the packets'
    // `state` and the list's `state`. It is kept apart from packets so that
    // trimming old packets does not forget how the connection started.
    this.path = [];
    this.lastT = now;
    this.version = 0; // bumped whenever anything here changes
  }

  // visit appends a state to the path when it differs from the last one.
  visit(state) {
    const s = normState(state);
    if (!s || this.path[this.path.length - 1] === s) return;
    this.path.push(s);
    if (this.path.length > MAX_PATH) this.path.splice(0, this.path.length - MAX_PATH);
  }

  // notKept is how many of this connection's first packet events are gone,
  // whether the server trimmed them before we connected or we did here.
  // Both count the same oldest events, so the larger one is the answer.
  notKept() {
    return Math.max(num(this.info && this.info.trimmed, 0), this.droppedHere);
  }

  isClosed() {
    return !!this.info && this.info.open === false;
  }
}

export class Model {
  constructor() {
    this.selected = ""; // key of the selected connection
    this.userSelected = false; // the user clicked it: never change it for them
    this.selectedArrow = -1; // `n` of the clicked arrow, -1 for none
    this.version = 0;
    this.reset();
  }

  // reset forgets the stream's state; it runs on every hello because the
  // server replays its history on each new stream.
  reset() {
    this.hello = null;
    this.keep = DEFAULT_KEEP;
    this.conns = new Map(); // key → Conn, in order of first appearance
    this.counters = []; // [{name, values:[[label, number]]}]
    this.faults = "";
    this.countersT = NaN;
    this.lost = 0;
    this.lostWhy = "";
    this.otherPackets = 0; // packets of no connection (ICMP, ARP-less noise)
    this.lastT = 0;
    this.firstListT = NaN; // `t` of the first `conns` list of this stream
    if (!this.userSelected) this.selected = "";
    this.selectedArrow = -1;
    this.version++;
  }

  // lostTotal is the server's count of events its taps lost for the UI. It
  // counts from the server's start and is sent again on every new stream,
  // so it is not added up across streams.
  lostTotal() {
    return this.lost;
  }

  selectedConn() {
    return this.conns.get(this.selected) || null;
  }

  select(key, byUser) {
    if (byUser) this.userSelected = true;
    if (this.selected === key) return;
    this.selected = key;
    this.selectedArrow = -1;
    this.version++;
  }

  // autoSelect picks the first connection to appear when none is selected.
  autoSelect(key) {
    if (!this.selected && key) this.select(key, false);
  }

  conn(key, t) {
    let c = this.conns.get(key);
    if (!c) {
      c = new Conn(key, t);
      this.conns.set(key, c);
      this.autoSelect(key);
    }
    return c;
  }

  onHello(data) {
    this.reset();
    const d = data && typeof data === "object" ? data : {};
    this.hello = {
      version: str(d.version),
      iface: str(d.iface),
      stack: arr(d.stack).map((a) => str(a)).filter(Boolean),
    };
    const keep = Math.floor(num(d.keep, DEFAULT_KEEP));
    this.keep = Math.min(Math.max(keep, 1), MAX_KEEP);
  }

  onPacket(d) {
    if (!d || typeof d !== "object") return;
    const t = num(d.t, this.lastT);
    this.lastT = Math.max(this.lastT, t);
    const key = str(d.conn);
    if (!key) {
      this.otherPackets++;
      this.version++;
      return;
    }
    const p = {
      n: num(d.n, -1),
      t,
      dir: str(d.dir) === "out" ? "out" : "in",
      proto: str(d.proto),
      src: str(d.src),
      dst: str(d.dst),
      label: str(d.label),
      line: str(d.line),
      flags: str(d.flags),
      len: num(d.len, 0),
      retrans: bool(d.retrans),
      drop: str(d.drop),
      note: str(d.note),
      state: str(d.state),
      stateChanged: bool(d.stateChanged),
      phase: str(d.phase),
      step: str(d.step),
      annotations: arr(d.annotations).map((a) => str(a)).filter(Boolean),
      layers: arr(d.layers),
    };
    const c = this.conn(key, t);
    if (c.totalPackets === 0) {
      // The state before the first segment is not in any event: a bare SYN
      // coming in means the stack was listening, going out that it dialled.
      const f = flagSet(p.flags);
      if (f.has("SYN") && !f.has("ACK") && p.proto.toUpperCase() !== "UDP") {
        c.visit(p.dir === "in" ? "LISTEN" : "CLOSED");
      }
    }
    c.totalPackets++;
    c.lastT = t;
    // A dropped packet never reached the stack (or the wire), so its state
    // field, if any, is the state before it.
    if (p.state && !p.drop) c.visit(p.state);
    c.packets.push(p);
    while (c.packets.length > this.keep) {
      c.packets.shift();
      c.droppedHere++;
    }
    if (!c.listed) c.info = this.provisionalInfo(c, p);
    c.version++;
    this.version++;
  }

  // provisionalInfo makes a table row for a connection the server has not
  // listed yet, so that it shows up with its first packet instead of up to a
  // second later.
  provisionalInfo(c, p) {
    const old = c.info || {};
    const local = p.dir === "in" ? p.dst : p.src;
    const remote = p.dir === "in" ? p.src : p.dst;
    return {
      conn: c.key,
      local: old.local || local,
      remote: old.remote || remote,
      proto: p.proto || old.proto || "",
      state: p.state || old.state || "",
      open: true,
      closedAt: null,
      client: old.client || (p.dir === "in" ? "peer" : "stack"),
      segsIn: num(old.segsIn, 0) + (p.dir === "in" ? 1 : 0),
      segsOut: num(old.segsOut, 0) + (p.dir === "out" ? 1 : 0),
      bytesIn: num(old.bytesIn, 0) + (p.dir === "in" ? p.len : 0),
      bytesOut: num(old.bytesOut, 0) + (p.dir === "out" ? p.len : 0),
      provisional: true,
    };
  }

  onSample(d) {
    if (!d || typeof d !== "object") return;
    const key = str(d.conn);
    if (!key) return;
    const t = num(d.t, this.lastT);
    this.lastT = Math.max(this.lastT, t);
    const c = this.conn(key, t);
    c.samples.push({
      n: num(d.n, -1),
      t,
      cwnd: num(d.cwnd),
      ssthresh: num(d.ssthresh),
      srtt: num(d.srtt),
      rttvar: num(d.rttvar),
      rto: num(d.rto),
      inflight: num(d.inflight),
      mss: num(d.mss),
      sndWnd: num(d.sndWnd),
      fastRecovery: bool(d.fastRecovery),
    });
    if (c.samples.length > this.keep) c.samples.splice(0, c.samples.length - this.keep);
    c.lastT = t;
    c.version++;
    this.version++;
  }

  onConns(d) {
    if (!d || typeof d !== "object") return;
    const t = num(d.t, this.lastT);
    this.lastT = Math.max(this.lastT, t);
    const listed = new Set();
    for (const raw of arr(d.conns)) {
      if (!raw || typeof raw !== "object") continue;
      const key = str(raw.conn);
      if (!key || listed.has(key)) continue;
      listed.add(key);
      const c = this.conn(key, t);
      const before = c.info;
      c.info = {
        conn: key,
        local: str(raw.local),
        remote: str(raw.remote),
        proto: str(raw.proto),
        state: str(raw.state),
        open: raw.open !== false,
        closedAt: num(raw.closedAt, NaN),
        client: str(raw.client),
        cwnd: num(raw.cwnd),
        ssthresh: num(raw.ssthresh),
        srtt: num(raw.srtt),
        rto: num(raw.rto),
        retrans: num(raw.retrans),
        timeouts: num(raw.timeouts),
        bytesIn: num(raw.bytesIn),
        bytesOut: num(raw.bytesOut),
        segsIn: num(raw.segsIn),
        segsOut: num(raw.segsOut),
        kept: num(raw.kept),
        trimmed: num(raw.trimmed, 0),
      };
      c.listed = true;
      // TIME-WAIT → CLOSED happens on a timer, with no packet to say so.
      if (c.info.proto.toUpperCase() !== "UDP") c.visit(c.info.state);
      if (!before || JSON.stringify(before) !== JSON.stringify(c.info)) c.version++;
    }
    for (const c of this.conns.values()) {
      if (!listed.has(c.key) && c.listed) {
        c.listed = false;
      }
    }
    if (Number.isNaN(this.firstListT)) this.firstListT = t;
    this.forget(t);
    this.version++;
  }

  // forget drops connections the server no longer lists (after their quiet
  // period) and the oldest closed ones beyond MAX_CLOSED. The selected
  // connection is kept: the user is looking at it.
  forget(now) {
    for (const c of [...this.conns.values()]) {
      if (c.key === this.selected) continue;
      if (!c.listed && now - c.lastT > FORGET_AFTER_MS) this.conns.delete(c.key);
    }
    const closed = [...this.conns.values()].filter((c) => c.isClosed() && c.key !== this.selected);
    if (closed.length > MAX_CLOSED) {
      const closedTime = (c) => num(c.info.closedAt, c.lastT);
      closed.sort((a, b) => closedTime(a) - closedTime(b));
      for (const c of closed.slice(0, closed.length - MAX_CLOSED)) this.conns.delete(c.key);
    }
    // A selection the server does not have (it was made before a reconnect
    // and the connection is gone now) gives way to the first connection once
    // the replayed history is surely in.
    if (this.selected && !this.conns.has(this.selected) && now - this.firstListT >= MISSING_SELECTION_MS) {
      this.selected = "";
      this.userSelected = false;
      const first = this.conns.keys().next();
      if (!first.done) this.select(first.value, false);
    }
  }

  onCounters(d) {
    if (!d || typeof d !== "object") return;
    this.countersT = num(d.t, NaN);
    this.counters = arr(d.layers)
      .filter((l) => l && typeof l === "object")
      .map((l) => ({
        name: str(l.name, "?"),
        values: arr(l.values)
          .filter((v) => Array.isArray(v))
          .map((v) => [str(v[0], "?"), v[1]]),
      }));
    this.faults = str(d.faults);
    this.version++;
  }

  onLost(d) {
    if (!d || typeof d !== "object") return;
    const n = num(d.n, 0);
    // n is cumulative; never let a smaller one hide earlier losses.
    this.lost = Math.max(this.lost, n);
    this.lostWhy = str(d.why);
    this.version++;
  }
}
