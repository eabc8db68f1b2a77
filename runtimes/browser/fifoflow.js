// fifoflow client runner: runs a flow's `browser` modules in this page.
//
//   import { connect } from "/client/fifoflow.js";
//   const runner = await connect(location.origin, { token });
//   runner.on("flow/module", "out", (msg) => draw(msg));   // what a module emits
//   await runner.inject("flow", "module", "in", msg);        // into a module's input
//   runner.on("run", (event) => show(event));                // runs' browser parts here
//   runner.close();                                          // sign off
//
// Runs: a run whose flow has browser modules runs its server part on a runner and its
// browser part in a page that takes it (connect(url, {token, runs: false}) takes none).
// The page hears {op: "run", event: "started", run, attempt, side, modules} when its
// client runner took a part, and {op: "run", event: "ended", run, attempt, side, state,
// reason} when that part ended.
//
// The page is a runtime host of the dispatcher's client runner for this page
// (runtimes/browser/DESIGN.md): each host is a WebSocket carrying the frames of
// runtimes/PROTOCOL.md, executed by the node host's own core (core.mjs). No build step,
// no dependency. The control socket reconnects with backoff (up to 10 s, and up to a
// third of the TTL in the last welcome) when it drops; the hosts
// are asked for again and get their modules' state and every unacknowledged message.
// The first welcome of a page id carries its page secret; the page keeps it with the id
// (session storage) and brings it on every later connection, or the dispatcher refuses.

import { ModuleHost, ProtocolViolation, handleLines } from "./core.mjs";

const PROTOCOL = 1;
const VERSION = "1.0.0";

function wsBase(url) {
  const u = new URL(url, location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.origin;
}

function pageId() {
  try {
    let id = sessionStorage.getItem("fifoflow.page");
    if (!id) {
      id = "p" + Math.random().toString(36).slice(2, 12);
      sessionStorage.setItem("fifoflow.page", id);
    }
    return id;
  } catch {
    return "p" + Math.random().toString(36).slice(2, 12);
  }
}

function loadSecret(page) {
  try {
    return sessionStorage.getItem(`fifoflow.secret.${page}`);
  } catch {
    return null;
  }
}

function saveSecret(page, secret) {
  try {
    sessionStorage.setItem(`fifoflow.secret.${page}`, secret);
  } catch {
    // kept in memory only: a reload gets a new page id's secret
  }
}

class Host {
  // One runtime host: a socket and a ModuleHost, like host.mjs around its FIFOs.
  constructor(runner, name) {
    this.runner = runner;
    this.name = name;
    this.core = new ModuleHost({ require: undefined });
    this.busy = false;
    this.backlog = [];
    const q = runner.query({ host: name });
    this.ws = new WebSocket(`${runner.base}/client/host?${q}`);
    this.ws.onopen = () => {
      this.send(JSON.stringify({ op: "hello", protocol: PROTOCOL, runtime: "browser", version: VERSION, pid: 0, features: ["counts"] }) + "\n");
    };
    this.ws.onmessage = (event) => {
      this.backlog.push(event.data);
      this.pump();
    };
    this.ws.onclose = () => runner.hosts.delete(name);
  }

  send(text) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  flush(final = false) {
    for (const frame of this.core.frames) {
      if (frame.op === "emit") this.runner._emitted(frame);
    }
    const text = this.core.flush(final);
    if (text) this.send(text);
  }

  pump() {
    while (!this.busy && this.backlog.length) {
      let pending;
      try {
        pending = this.process(this.backlog.shift().split("\n"), 0);
      } catch (err) {
        this.fatal(err);
        return;
      }
      if (pending) {
        this.busy = true;
        pending.then(
          () => {
            this.busy = false;
            this.flush();
            this.pump();
          },
          (err) => this.fatal(err),
        );
        return;
      }
      this.flush();
    }
  }

  process(lines, start) {
    return handleLines(this.core, lines, start, () => {
      const finish = () => {
        this.flush(true);
        this.send('{"op":"bye"}\n');
        this.ws.close();
      };
      const p = this.core.drain();
      if (p) return p.then(finish);
      finish();
      return undefined;
    });
  }

  fatal(err) {
    const message = err instanceof ProtocolViolation ? err.message : `host error: ${err && err.stack ? err.stack : err}`;
    try {
      this.flush();
    } catch {
      // the fatal frame matters more
    }
    this.send(JSON.stringify({ op: "fatal", error: message }) + "\n");
    this.ws.close();
  }

  close() {
    this.ws.onclose = null;
    this.ws.close();
  }
}

class ClientRunner {
  constructor(url, options) {
    this.base = wsBase(url);
    this.token = options.token;
    this.page = options.page || pageId();
    this.secret = loadSecret(this.page);
    this.hosts = new Map();
    this.listeners = new Map(); // "flow/module.port" -> Set(callback); "run" -> Set(callback)
    this.runs = options.runs !== false;
    this.pending = new Map();
    this.nextId = 1;
    this.closed = false;
    this.runnerId = null;
    this.delay = 200;
    this.maxDelay = 10000; // ms; a third of the dispatcher's TTL once welcomed
    this.onstatus = options.onstatus || (() => {});
  }

  // The query of this page's sockets: client token, page id and, once known, its secret.
  query(extra = {}) {
    const q = { token: this.token, page: this.page, ...extra };
    if (!this.runs) q.runs = "0";
    if (this.secret) q.secret = this.secret;
    return new URLSearchParams(q);
  }

  open() {
    return new Promise((resolve, reject) => {
      const q = this.query();
      const ws = new WebSocket(`${this.base}/client/ws?${q}`);
      let welcomed = false;
      this.ws = ws;
      ws.onmessage = (event) => {
        const m = JSON.parse(event.data);
        if (m.op === "welcome") {
          welcomed = true;
          this.runnerId = m.runner;
          if (m.secret) {
            this.secret = m.secret;
            saveSecret(this.page, m.secret);
          }
          this.delay = 200;
          // a dispatcher that restarts gives this page's runner one TTL to come back:
          // wait at most a third of it between two tries (jitter included, two tries)
          if (typeof m.ttl === "number" && m.ttl > 0) this.maxDelay = Math.max(200, Math.min(10000, (m.ttl * 1000) / 3));
          this.onstatus("connected");
          resolve(this);
        } else if (m.op === "refused") {
          this.closed = true;
          reject(new Error(`fifoflow: refused: ${m.message}`));
        } else if (m.op === "spawn") {
          const old = this.hosts.get(m.host);
          if (old) old.close();
          this.hosts.set(m.host, new Host(this, m.host));
        } else if (m.op === "run") {
          const { op, ...event } = m;
          for (const cb of this.listeners.get("run") || []) cb(event);
        } else if (m.op === "injected" || m.op === "error") {
          const p = this.pending.get(m.id);
          if (p) {
            this.pending.delete(m.id);
            if (m.op === "error") p.reject(new Error(m.message));
            else p.resolve();
          }
        }
      };
      ws.onclose = () => {
        for (const p of this.pending.values()) p.reject(new Error("fifoflow: the connection dropped"));
        this.pending.clear();
        if (this.closed) return;
        if (!welcomed && this.runnerId === null) {
          reject(new Error("fifoflow: cannot connect to the dispatcher"));
          return;
        }
        // Reconnect with backoff and jitter; the hosts are asked for again.
        this.onstatus("reconnecting");
        for (const host of this.hosts.values()) host.close();
        this.hosts.clear();
        const wait = Math.min(this.delay, this.maxDelay) * (0.5 + Math.random());
        this.delay = Math.min(this.delay * 2, this.maxDelay);
        setTimeout(() => this.open().catch(() => {}), wait);
      };
    });
  }

  // What a module of this page emits on a port: on("flow/module", "out", cb).
  // The browser parts of runs this page takes and ends: on("run", cb).
  on(flowModule, port, callback) {
    if (typeof port === "function") {
      callback = port;
      port = null;
    }
    const key = port === null ? flowModule : `${flowModule}.${port}`;
    if (!this.listeners.has(key)) this.listeners.set(key, new Set());
    this.listeners.get(key).add(callback);
    return () => this.listeners.get(key).delete(callback);
  }

  _emitted(frame) {
    const set = this.listeners.get(`${frame.module}.${frame.port}`);
    if (!set) return;
    for (const msg of frame.msgs) for (const cb of set) cb(msg);
  }

  // Send messages into a module of a deployed flow (on whichever runner holds it).
  inject(flow, module, port, ...msgs) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ op: "inject", id, flow, module, port, msgs }));
    });
  }

  // Drop the connection as a network failure would (tests, and pages that want to).
  drop() {
    this.ws.close();
  }

  close() {
    this.closed = true;
    try {
      this.ws.send(JSON.stringify({ op: "bye" }));
    } catch {
      // already gone
    }
    for (const host of this.hosts.values()) host.close();
    this.ws.close();
  }
}

export async function connect(url, options = {}) {
  if (!options.token) throw new Error("fifoflow: connect(url, {token}) needs the client token");
  const runner = new ClientRunner(url, options);
  window.addEventListener("pagehide", () => runner.close());
  return runner.open();
}
