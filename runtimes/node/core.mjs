// fifoflow module-execution core for JavaScript (runtime protocol v1, PROTOCOL.md).
//
// No I/O and no node-only API: the node host (host.mjs) feeds it protocol frames and
// writes what it returns; a browser client runner can import this very file.
//
// Deliveries flow through same-runtime wires as arrays of native values, breadth first
// (a work queue of [module, port, msgs, seq, direct]), per-wire order kept. The sync path
// never creates a Promise; when a handler (or init) returns a thenable, the rest of the
// work continues after it settles and drain() returns a Promise.

const DEFAULT_TIMEOUT = 30;

function errorRecord(err) {
  if (err instanceof Error) {
    return { type: err.name || "Error", message: String(err.message), traceback: String(err.stack || "") };
  }
  return { type: "Error", message: String(err), traceback: "" };
}

function jsonCopy(value) {
  try {
    return JSON.parse(JSON.stringify(value));
  } catch {
    return value;
  }
}

function isThenable(value) {
  return value !== null && typeof value === "object" && typeof value.then === "function";
}

class Ctx {
  constructor(mod, id, config, state, host) {
    this._mod = mod;
    this._host = host;
    this.module = id;
    this.config = config;
    this.state = state;
    this.port = null;
  }

  emit(port, msg) {
    const outs = this._mod.outs;
    const list = outs.get(port);
    if (list === undefined) outs.set(port, [msg]);
    else list.push(msg);
  }

  log(...parts) {
    const text = parts.map((p) => (typeof p === "string" ? p : safeStringify(p))).join(" ");
    this._host.frames.push({ op: "log", module: this.module, level: "info", text });
  }
}

function safeStringify(value) {
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s;
  } catch {
    return String(value);
  }
}

class Mod {
  constructor(id) {
    this.id = id;
    this.handle = null;
    this.ctx = null;
    this.timeout = DEFAULT_TIMEOUT;
    this.outs = new Map();
    this.sentState = "{}";
    this.index = 0; // position in the watchdog's name table
  }
}

export class ModuleHost {
  // options.require: given to module code as `require` (undefined in a browser)
  // options.progress: an Int32Array(8) the watchdog reads: [state, gen, index, seq, direct, module]
  // options.onModule(mod): called when a module is (re)loaded, e.g. to tell the watchdog its name
  constructor(options = {}) {
    this.requireFor = options.requireFor || (() => options.require);
    this.progress = options.progress || new Int32Array(8);
    this.onModule = options.onModule || (() => {});
    this.modules = new Map();
    this.routes = new Map();
    this.frames = [];
    this.ran = new Set();
    this.lastSeq = null; // the highest seq handled, with all it caused: the next done
    this.queuedSeq = null; // the highest seq taken in, not yet handled
    this.work = [];
    this.head = 0;
    this.modCount = 0;
    // Direct channels (PROTOCOL.md section 11); the I/O is the host's (host.mjs).
    // Sending: the channel paths of the route table, the channels given up, the frame
    // counter, this batch's frames per channel, `cut` frames for the runner.
    this.channelPaths = new Map();
    this.deadChannels = new Set();
    this.liveChannels = new Set(); // channels the host has open for writing
    this.dcount = 0;
    this.directOut = new Map();
    this.cutFrames = [];
    // Frames (runner deliveries, channel lines) taken in from the chunk being handled
    // (the host resets it per chunk): while it is at most one, a channel's line is
    // written as soon as it is made, through writeChannel(ch, line) -> false when the
    // channel was given up (null: a host without channels; lines wait for flush).
    this.framesIn = 0;
    this.writeChannel = null;
    // Receiving: channels being read, the highest d handled per channel this batch
    // (acknowledged in `done`), per channel/module/port the highest d ever handled.
    this.listening = new Set();
    this.directAcks = new Map(); // channel -> highest d handled: the next done
    this.queuedAcks = new Map(); // channel -> highest d taken in, not yet handled
    this.lastD = new Map();
    this.seqHandled = 0;
    this.cutEcho = [];
    // "src\tport\tdst\tdstPort" -> messages delivered inside this host since the
    // last done (reported in its "local", PROTOCOL.md section 12)
    this.localCounts = new Map();
    this.onListen = options.onListen || (() => {});
    this.onCut = options.onCut || (() => {});
    this.onRoutes = options.onRoutes || (() => {});
  }

  // ---------------------------------------------------------------- ops

  deliver(frame) {
    const { seq, module, port, msgs } = frame;
    if (!Number.isInteger(seq) || typeof module !== "string" || typeof port !== "string" || !Array.isArray(msgs)) {
      throw new ProtocolViolation("'deliver' needs seq (integer), module, port (strings) and msgs (array)");
    }
    this.queuedSeq = seq;
    this.framesIn++;
    if (frame.ch !== undefined) {
      // the runner's copy of a direct channel's frame: skip it if handled already
      if (!Number.isInteger(frame.d)) throw new ProtocolViolation("'deliver' with 'ch' needs an integer 'd'");
      const key = `${frame.ch}\u0000${module}\u0000${port}`;
      if (frame.d <= (this.lastD.get(key) || 0)) return;
      this.lastD.set(key, frame.d);
    }
    this.work.push([module, port, msgs, seq, true]);
  }

  // A frame read from direct channel `ch`; ignored once the channel is cut.
  directDeliver(ch, frame) {
    const { d, module, port, msgs } = frame;
    const also = frame.also === undefined ? [] : frame.also;
    if (frame.op !== "deliver" || frame.ch !== ch || !Number.isInteger(d) || typeof module !== "string" || typeof port !== "string" || !Array.isArray(msgs) || !Array.isArray(also) || (also.length !== 0 && !also.every(Array.isArray))) {
      throw new ProtocolViolation(`direct channel ${ch}: a frame is not a 'deliver' with ch, d, module, port and msgs`);
    }
    if (!this.listening.has(ch)) return;
    this.framesIn++;
    // indexed, without an array and an iterator per frame: at a light load this runs
    // cold, in the interpreter
    this.lastD.set(`${ch}\u0000${module}\u0000${port}`, d);
    this.work.push([module, port, msgs, 0, false]);
    for (let i = 0; i < also.length; i++) {
      const m = String(also[i][0]);
      const p = String(also[i][1]);
      this.lastD.set(`${ch}\u0000${m}\u0000${p}`, d);
      this.work.push([m, p, msgs, 0, false]);
    }
    this.queuedAcks.set(ch, d);
  }

  listen(frame) {
    if (typeof frame.ch !== "string" || typeof frame.path !== "string") throw new ProtocolViolation("'listen' needs strings 'ch' and 'path'");
    if (this.listening.has(frame.ch)) return;
    this.listening.add(frame.ch);
    this.onListen(frame.ch, frame.path);
  }

  cut(frame) {
    if (typeof frame.ch !== "string") throw new ProtocolViolation("'cut' needs a string 'ch'");
    this.cutEcho.push(frame.ch); // confirmed after the next done
    if (!this.listening.delete(frame.ch)) return;
    this.onCut(frame.ch);
  }

  // The host could not write a batch to channel `ch`: never again; the runner is told
  // before anything else of the batch (it holds the copies).
  giveUp(ch) {
    this.liveChannels.delete(ch);
    this.deadChannels.add(ch);
    this.cutFrames.push(`{"op":"cut","ch":${JSON.stringify(ch)}}`);
  }

  // This batch's frames per channel (strings of JSON lines), to be written first.
  takeDirect() {
    const out = this.directOut;
    this.directOut = new Map();
    return out;
  }

  setRoutes(frame) {
    const routes = frame.routes;
    if (routes === null || typeof routes !== "object" || Array.isArray(routes)) {
      throw new ProtocolViolation("'route' needs an object 'routes'");
    }
    const table = new Map();
    for (const [mid, ports] of Object.entries(routes)) {
      if (ports === null || typeof ports !== "object") throw new ProtocolViolation(`'route' routes[${mid}] is not an object`);
      const entry = new Map();
      for (const [port, spec] of Object.entries(ports)) {
        if (spec === null || typeof spec !== "object") throw new ProtocolViolation(`'route' routes[${mid}][${port}] is not an object`);
        const local = (spec.local || []).map((d) => [String(d[0]), String(d[1])]);
        const byCh = new Map();
        for (const d of spec.direct || []) {
          const ch = String(d[0]);
          if (!byCh.has(ch)) byCh.set(ch, []);
          byCh.get(ch).push([String(d[1]), String(d[2])]);
        }
        // A channel's frame is head + d + tail + msgs + "}": all the port's targets on
        // that channel in one line (module, port, then "also"); made once, here.
        let direct = null;
        if (byCh.size) {
          direct = [];
          for (const [ch, targets] of byCh) {
            const also = targets.length > 1 ? `,"also":${JSON.stringify(targets.slice(1))}` : "";
            direct.push([ch, `{"op":"deliver","ch":${JSON.stringify(ch)},"d":`, `,"module":${JSON.stringify(targets[0][0])},"port":${JSON.stringify(targets[0][1])}${also},"msgs":`]);
          }
        }
        const emitHead = `{"op":"emit","module":${JSON.stringify(mid)},"port":${JSON.stringify(port)},"n":`;
        entry.set(port, { local, external: Boolean(spec.external), direct, emitHead });
      }
      table.set(mid, entry);
    }
    const channels = frame.channels || {};
    if (channels === null || typeof channels !== "object" || Array.isArray(channels)) throw new ProtocolViolation("'route' field 'channels' is not an object");
    this.channelPaths = new Map(Object.entries(channels).filter(([ch]) => !this.deadChannels.has(ch)));
    this.routes = table;
    this.onRoutes();
  }

  // Returns undefined, or a Promise when init/migrate is async.
  load(frame) {
    const id = frame.module;
    if (typeof id !== "string") throw new ProtocolViolation("'load' needs a string 'module'");
    const code = frame.code;
    const filename = frame.filename || id;
    if (typeof code !== "string") {
      this.frames.push({ op: "loaded", module: id, error: { type: "LoadError", message: "'load' carries no code", traceback: "" } });
      return undefined;
    }
    const old = this.modules.get(id);
    const mod = new Mod(id);
    if (typeof frame.timeout === "number" && frame.timeout > 0) mod.timeout = frame.timeout;
    let exportsObj;
    try {
      const moduleObj = { exports: {} };
      // eslint-disable-next-line no-new-func
      const fn = new Function("module", "exports", "require", "console", `${code}\n//# sourceURL=${filename}`);
      fn(moduleObj, moduleObj.exports, this.requireFor(filename), console);
      exportsObj = moduleObj.exports;
      const handle = typeof exportsObj === "function" ? exportsObj : exportsObj && exportsObj.handle;
      if (typeof handle !== "function") {
        this.frames.push({
          op: "loaded",
          module: id,
          error: { type: "LoadError", message: "module defines no handle(msg, ctx) function (exports.handle)", traceback: "" },
        });
        return undefined;
      }
      mod.handle = handle;
    } catch (err) {
      this.frames.push({ op: "loaded", module: id, error: errorRecord(err) });
      return undefined;
    }
    let state = frame.state;
    // A replacement works on a copy: if it fails, the old version is untouched.
    if (state === null || state === undefined) state = old ? jsonCopy(old.ctx.state) : {};
    mod.ctx = new Ctx(mod, id, frame.config || {}, state, this);
    const finish = () => {
      // The runner learns the state a load produced (migrate, init, a kept state) before
      // `loaded`, unless it is the state the runner sent.
      let baseline;
      try {
        mod.sentState = JSON.stringify(mod.ctx.state) ?? "null";
        const given = frame.state;
        baseline = given === null || given === undefined ? (old ? null : "{}") : JSON.stringify(given);
      } catch {
        mod.sentState = "";
        baseline = "";
      }
      if (mod.sentState !== baseline) {
        this.frames.push({ op: "state", module: id, state: mod.ctx.state });
      }
      mod.index = old ? old.index : ++this.modCount;
      const initOuts = mod.outs;
      mod.outs = new Map();
      this.modules.set(id, mod);
      this.onModule(mod);
      this.frames.push({ op: "loaded", module: id });
      if (initOuts.size) this.routeOutputs(mod, initOuts, 0);
    };
    const fail = (err) => {
      this.frames.push({ op: "loaded", module: id, error: errorRecord(err) });
    };
    const hasMigrate = Boolean(old) && typeof exportsObj.migrate === "function" && frame.migrate !== false;
    const migrated = (v) => {
      if (hasMigrate && v !== undefined && v !== null) mod.ctx.state = v;
    };
    const init = () => (typeof exportsObj.init === "function" ? exportsObj.init(mod.ctx) : undefined);
    try {
      const r = hasMigrate ? exportsObj.migrate(jsonCopy(old.ctx.state), mod.ctx) : undefined;
      if (isThenable(r)) {
        return Promise.resolve(r)
          .then((v) => {
            migrated(v);
            return init();
          })
          .then(finish, fail);
      }
      migrated(r);
      const r2 = init();
      if (isThenable(r2)) return Promise.resolve(r2).then(finish, fail);
      finish();
    } catch (err) {
      fail(err);
    }
    return undefined;
  }

  unload(frame) {
    const id = frame.module;
    if (typeof id !== "string") throw new ProtocolViolation("'unload' needs a string 'module'");
    const mod = this.modules.get(id);
    this.modules.delete(id);
    this.frames.push({ op: "unloaded", module: id, state: mod ? mod.ctx.state : null });
  }

  // ---------------------------------------------------------------- delivery

  // Runs queued work; returns undefined when done, or a Promise if a handler was async.
  drain() {
    const work = this.work;
    while (this.head < work.length) {
      const item = work[this.head];
      work[this.head++] = undefined;
      const p = this.runModule(item, 0);
      if (p !== undefined) return p.then(() => this.drain());
    }
    work.length = 0;
    this.head = 0;
    // Only now is every delivery taken in handled: a host that ends before (a protocol
    // error in a later line of the same chunk) must not acknowledge what it never ran.
    if (this.queuedSeq !== null) {
      this.lastSeq = this.queuedSeq;
      this.queuedSeq = null;
    }
    if (this.queuedAcks.size) {
      for (const [ch, d] of this.queuedAcks) this.directAcks.set(ch, d);
      this.queuedAcks = new Map();
    }
    return undefined;
  }

  runModule(item, start) {
    const [mid, port, msgs, seq, direct] = item;
    const mod = this.modules.get(mid);
    if (mod === undefined) {
      for (const msg of msgs) {
        this.errorFrame(mid, port, msg, seq, { type: "UnknownModule", message: `no module '${mid}' is loaded in this host`, traceback: "" });
      }
      return undefined;
    }
    const ctx = mod.ctx;
    ctx.port = port;
    let out = mod.outs.get("out");
    if (out === undefined) {
      out = [];
      mod.outs.set("out", out);
    }
    const handle = mod.handle;
    const P = this.progress;
    P[1]++;
    P[3] = seq | 0;
    P[4] = direct ? 1 : 0;
    P[5] = mod.index;
    P[2] = start;
    P[0] = 1;
    const n = msgs.length;
    for (let i = start; i < n; i++) {
      P[2] = i;
      let r;
      try {
        r = handle(msgs[i], ctx);
      } catch (err) {
        this.errorFrame(mid, port, msgs[i], seq, errorRecord(err));
        continue;
      }
      if (r !== undefined && r !== null) {
        if (isThenable(r)) {
          return Promise.resolve(r).then(
            (v) => {
              if (v !== undefined && v !== null) out.push(v);
              return this.runModule(item, i + 1);
            },
            (err) => {
              this.errorFrame(mid, port, msgs[i], seq, errorRecord(err));
              return this.runModule(item, i + 1);
            },
          );
        }
        out.push(r);
      }
    }
    this.endProgress();
    this.ran.add(mod);
    const outs = mod.outs;
    mod.outs = new Map();
    this.routeOutputs(mod, outs, seq);
    return undefined;
  }

  // Overridden by the host to coordinate with its watchdog.
  endProgress() {
    this.progress[0] = 0;
  }

  routeOutputs(mod, outs, seq) {
    const table = this.routes.get(mod.id);
    for (const [port, list] of outs) {
      if (list.length === 0) continue;
      const route = table === undefined ? undefined : table.get(port);
      if (route === undefined) {
        this.frames.push({ op: "emit", module: mod.id, port, n: list.length, msgs: list });
        continue;
      }
      for (const [dst, dstPort] of route.local) {
        this.work.push([dst, dstPort, list, seq, false]);
        const key = `${mod.id}\t${port}\t${dst}\t${dstPort}`;
        this.localCounts.set(key, (this.localCounts.get(key) || 0) + list.length);
      }
      if (route.direct !== null && route.direct !== undefined) this.emitDirect(mod, port, list, route);
      else if (route.external) this.frames.push({ op: "emit", module: mod.id, port, n: list.length, msgs: list });
    }
  }

  // An emit whose port has direct targets: its frame to each live channel, and the
  // runner's copy with `d` and `ch` (PROTOCOL.md section 11).
  emitDirect(mod, port, list, route) {
    let data;
    try {
      data = JSON.stringify(list);
    } catch {
      data = undefined;
    }
    const k = this.dcount + 1;
    let live = null;
    // One frame in this chunk (a light load): its lines go out now, not after the rest
    // of the chunk's bookkeeping; more frames: one write per channel at flush.
    const now = this.framesIn <= 1 && this.writeChannel !== null;
    if (data !== undefined) {
      for (const [ch, head, tail] of route.direct) {
        if (!this.liveChannels.has(ch)) continue;
        const line = `${head}${k}${tail}${data}}\n`;
        if (now) {
          if (!this.writeChannel(ch, line)) continue;
        } else {
          const prev = this.directOut.get(ch);
          this.directOut.set(ch, prev === undefined ? line : prev + line);
        }
        live = live === null ? ch : `${live} ${ch}`;
      }
    }
    if (live === null) {
      this.frames.push({ op: "emit", module: mod.id, port, n: list.length, msgs: list });
      return;
    }
    this.dcount = k;
    this.frames.push(`${route.emitHead}${list.length},"d":${k},"ch":${JSON.stringify(live)},"msgs":${data}}`);
  }

  errorFrame(module, port, msg, seq, error) {
    this.frames.push({ op: "error", module, port, msg: msg === undefined ? null : msg, seq, error });
  }

  // ---------------------------------------------------------------- output

  // Everything produced since the last flush, as one string of JSON lines.
  flush(final = false) {
    const parts = this.cutFrames;
    this.cutFrames = [];
    for (const f of this.frames) parts.push(typeof f === "string" ? f : encodeFrame(f, this));
    this.frames = [];
    const mods = final ? this.modules.values() : this.ran;
    for (const mod of mods) {
      let data;
      try {
        data = JSON.stringify(mod.ctx.state) ?? "null";
      } catch (err) {
        parts.push(JSON.stringify({ op: "log", module: mod.id, level: "error", text: `ctx.state is not JSON-serializable, snapshot skipped: ${err.message}` }));
        continue;
      }
      if (data !== mod.sentState) {
        mod.sentState = data;
        parts.push(`{"op":"state","module":${JSON.stringify(mod.id)},"state":${data}}`);
      }
    }
    this.ran = new Set();
    if (this.lastSeq !== null) this.seqHandled = this.lastSeq;
    if (this.directAcks.size || this.localCounts.size) {
      let done = `{"op":"done","seq":${this.seqHandled}`;
      if (this.directAcks.size) {
        done += `,"direct":${JSON.stringify(Object.fromEntries(this.directAcks))}`;
        this.directAcks = new Map();
      }
      if (this.localCounts.size) {
        const local = [];
        for (const [key, n] of this.localCounts) local.push([...key.split("\t"), n]);
        done += `,"local":${JSON.stringify(local)}`;
        this.localCounts = new Map();
      }
      parts.push(`${done}}`);
      this.lastSeq = null;
    } else if (this.lastSeq !== null) {
      parts.push(`{"op":"done","seq":${this.lastSeq}}`);
      this.lastSeq = null;
    }
    // after the done that acknowledges the last frames handled from them
    for (const ch of this.cutEcho) parts.push(`{"op":"cut","ch":${JSON.stringify(ch)}}`);
    this.cutEcho = [];
    return parts.length ? parts.join("\n") + "\n" : "";
  }
}

function encodeFrame(frame, host) {
  try {
    return JSON.stringify(frame);
  } catch (err) {
    if (frame.op === "emit") {
      const good = [];
      const bad = [];
      for (const m of frame.msgs) {
        try {
          JSON.stringify(m);
          good.push(m);
        } catch (e) {
          bad.push(
            JSON.stringify({
              op: "error",
              module: frame.module,
              port: frame.port,
              msg: String(m),
              seq: null,
              error: { type: "TypeError", message: `emitted message is not JSON-serializable: ${e.message}`, traceback: "" },
            }),
          );
        }
      }
      return [...bad, JSON.stringify({ ...frame, n: good.length, msgs: good })].join("\n");
    }
    return JSON.stringify({ ...frame, msg: String(frame.msg), state: undefined });
  }
}

export class ProtocolViolation extends Error {}

// Split a chunk of JSON lines; returns the parsed frames. Throws ProtocolViolation.
export function parseLine(line) {
  let frame;
  try {
    frame = JSON.parse(line);
  } catch (err) {
    throw new ProtocolViolation(`line is not JSON (${err.message}): ${line.slice(0, 200)}`);
  }
  if (frame === null || typeof frame !== "object" || Array.isArray(frame)) {
    throw new ProtocolViolation(`frame is not a JSON object: ${line.slice(0, 200)}`);
  }
  if (typeof frame.op !== "string") throw new ProtocolViolation(`frame has no string 'op': ${line.slice(0, 200)}`);
  return frame;
}

// Handle the frames in `lines` from index `start` on: deliveries go to the work queue,
// every other op takes effect between two messages. Returns undefined when every line
// is handled, or a Promise (an async handler, init or migrate) after which the rest is
// handled. `onShutdown()` is called for `shutdown` (and may return a Promise). Both the
// node host (host.mjs) and the browser client (runtimes/browser/fifoflow.js) use it.
export function handleLines(host, lines, start, onShutdown) {
  for (let i = start; i < lines.length; i++) {
    const line = lines[i];
    if (line.length === 0) continue;
    const frame = parseLine(line);
    const op = frame.op;
    if (op === "deliver") {
      host.deliver(frame);
      continue;
    }
    // Control ops take effect between two messages: finish what came before.
    const pending = host.drain();
    if (pending) return pending.then(() => handleLines(host, lines, i, onShutdown));
    switch (op) {
      case "load": {
        const p = host.load(frame);
        if (p) return p.then(() => handleLines(host, lines, i + 1, onShutdown));
        break;
      }
      case "route":
        host.setRoutes(frame);
        break;
      case "unload":
        host.unload(frame);
        break;
      case "listen":
        host.listen(frame);
        break;
      case "cut":
        host.cut(frame);
        break;
      case "ping":
        host.frames.push({ op: "pong", id: frame.id === undefined ? null : frame.id });
        break;
      case "shutdown":
        return onShutdown() || new Promise(() => {});
      default:
        host.frames.push({ op: "unsupported", ref: op });
    }
  }
  return host.drain();
}
