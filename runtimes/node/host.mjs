// fifoflow node runtime host, protocol v1 (see runtimes/PROTOCOL.md).
//
//   node host.mjs <to-runtime fifo> <from-runtime fifo>
//
// The FIFO I/O layer around core.mjs: it reads whatever the pipe holds, hands every
// complete line to the core, and writes everything the batch produced in one write.
// A worker thread is the watchdog: it shares an Int32Array with the main thread and
// writes the `hung` frame itself when one handler call runs past its module's timeout
// (a synchronous endless loop blocks the main thread, so only another thread can tell).
//
// Resource handling: both FIFO fds live as long as the process; the watchdog worker is
// unref'd and dies with it. Error handling: user errors become `error` frames (in the
// core); a protocol error becomes `fatal` and exit status 3.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { ModuleHost, ProtocolViolation, handleLines, parseLine } from "./core.mjs";

const PROTOCOL = 1;
const VERSION = "1.0.0";
const MAX_LINE = 64 * 1024 * 1024;

const [toRuntime, fromRuntime] = process.argv.slice(2);
if (!toRuntime || !fromRuntime) {
  process.stderr.write("usage: node host.mjs <to-runtime fifo> <from-runtime fifo>\n");
  process.exit(2);
}

// Exit when the runner that started this host is gone (PROTOCOL.md section 1): a killed
// runner never opens our FIFOs or reads them again, and the main thread may be blocked
// in openSync or in a handler, so another thread watches: the parent we started with,
// and the process named by FIFOFLOW_RUNNER_PID.
new Worker(
  `const { workerData } = require("node:worker_threads");
   const gone = () => {
     if (process.ppid !== workerData.parent) return true;
     if (!workerData.runner) return false;
     try { process.kill(workerData.runner, 0); return false; }
     catch (err) { return err.code === "ESRCH"; }
   };
   setInterval(() => { if (gone()) process.kill(workerData.self, "SIGKILL"); }, 1000);`,
  {
    eval: true,
    workerData: {
      parent: process.ppid,
      runner: Number(process.env.FIFOFLOW_RUNNER_PID) || 0,
      self: process.pid,
    },
  },
).unref();

// Order matters (PROTOCOL.md section 1): read end first, then write end.
const rfd = fs.openSync(toRuntime, "r");
const wfd = fs.openSync(fromRuntime, "w");

function writeAll(text) {
  const buf = Buffer.from(text, "utf8");
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(wfd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code === "EAGAIN") continue;
      throw err;
    }
  }
}

// ------------------------------------------------------------------ watchdog

// [0] state: 0 idle, 1 running a handler, 2 hung reported (writing), 3 hung written
// [1] generation  [2] index in msgs  [3] seq  [4] direct (1) or same-runtime wire (0)
// [5] module number (names are posted to the worker when modules load)
const shared = new SharedArrayBuffer(8 * 4);
const P = new Int32Array(shared);

const WATCHDOG = `
const { workerData, parentPort } = require("node:worker_threads");
const fs = require("node:fs");
const P = new Int32Array(workerData.shared);
const names = new Map();
parentPort.on("message", (m) => names.set(m.index, m));
let gen = -1, idx = -1, since = 0;
setInterval(() => {
  if (Atomics.load(P, 0) !== 1) { gen = -1; return; }
  const g = P[1], i = P[2], now = performance.now();
  if (g !== gen || i !== idx) { gen = g; idx = i; since = now; return; }
  const info = names.get(P[5]);
  const timeout = info ? info.timeout : 30;
  if (now - since < timeout * 1000) return;
  if (Atomics.compareExchange(P, 0, 1, 2) !== 1) return;
  const frame = { op: "hung", module: info ? info.id : null, port: null, msg: null, seq: P[3],
                  index: P[4] ? i : null, elapsed: Math.round(now - since) / 1000 };
  try { fs.writeSync(workerData.wfd, JSON.stringify(frame) + "\\n"); } catch {}
  Atomics.store(P, 0, 3);
  Atomics.notify(P, 0);
}, 20);
`;
const watchdog = new Worker(WATCHDOG, { eval: true, workerData: { shared, wfd } });
watchdog.unref();

// ------------------------------------------------------------------ the core

const inlineRequire = createRequire(path.join(process.cwd(), "inline-module.js"));
const host = new ModuleHost({
  progress: P,
  requireFor: (filename) => (path.isAbsolute(filename) ? createRequire(filename) : inlineRequire),
  onModule: (mod) => watchdog.postMessage({ index: mod.index, id: mod.id, timeout: mod.timeout }),
});
// ------------------------------------------------------------------ direct channels

// PROTOCOL.md section 11. Writers: channel -> fd opened O_WRONLY|O_NONBLOCK (the runner
// holds each FIFO open, so the open never fails with ENXIO). Readers: channel -> one
// more net.Socket read with `onread`: libuv reads into one buffer shared by every
// channel and calls us straight from its read callback, without the stream machinery
// (no Buffer per read, no push/`data` event). An idle host handles what came right
// there; a busy one (an async handler in flight) copies it into the backlog.
const writers = new Map();
const readers = new Map();
// 64 KiB per read, as node's streams read: a long backlog is handled (and answered) in
// pieces; 1 MiB reads cost the python -> node -> python chain ~10% of its throughput
const CHANNEL_READ = 1 << 16;
let channelBuffer = null;

function closeWriter(ch) {
  const fd = writers.get(ch);
  writers.delete(ch);
  host.liveChannels.delete(ch);
  if (fd !== undefined) {
    try {
      fs.closeSync(fd);
    } catch {
      // already gone
    }
  }
}

host.onRoutes = () => {
  for (const ch of [...writers.keys()]) if (!host.channelPaths.has(ch)) closeWriter(ch);
  for (const [ch, p] of host.channelPaths) {
    if (writers.has(ch) || host.deadChannels.has(ch)) continue;
    try {
      writers.set(ch, fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      host.liveChannels.add(ch);
    } catch {
      host.giveUp(ch);
    }
  }
};

function writeDirect() {
  for (const [ch, text] of host.takeDirect()) writeChannel(ch, text);
}

// One non-blocking write of `text` to channel `ch`; a channel that does not take all of
// it at once is given up for good (the runner is told first): false then.
function writeChannel(ch, text) {
  const fd = writers.get(ch);
  if (fd === undefined) return false;
  const buf = Buffer.from(text, "utf8");
  let n = -1;
  try {
    n = fs.writeSync(fd, buf, 0, buf.length);
  } catch {
    n = -1;
  }
  if (n === buf.length) return true;
  closeWriter(ch);
  host.giveUp(ch);
  return false;
}
host.writeChannel = writeChannel;

host.onListen = (ch, p) => {
  let fd;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    host.listening.delete(ch); // already cut: the runner delivers the copies
    return;
  }
  if (channelBuffer === null) channelBuffer = Buffer.allocUnsafe(CHANNEL_READ);
  const sock = new net.Socket({
    fd,
    readable: true,
    writable: false,
    onread: { buffer: channelBuffer, callback: (n, buf) => onChannelRead(ch, n, buf) },
  });
  readers.set(ch, { sock, rest: null });
  sock.on("error", (err) => fatal(err));
};

// `buf` is the shared read buffer: what is kept past this call is copied.
function onChannelRead(ch, n, buf) {
  if (busy || backlog.length) {
    backlog.push([ch, Buffer.from(buf.subarray(0, n))]);
    return;
  }
  let p;
  try {
    p = onDirectChunk(ch, buf, n);
  } catch (err) {
    fatal(err);
    return;
  }
  settle(p);
}

host.onCut = (ch) => {
  // what was read of it is handled (control ops drain first); a partial line is dropped
  const r = readers.get(ch);
  readers.delete(ch);
  if (r !== undefined) r.sock.destroy();
};

host.endProgress = () => {
  if (Atomics.compareExchange(P, 0, 1, 0) !== 1) {
    // The watchdog reported this call as hung and is (or was) writing: let it finish,
    // so our next write cannot interleave with its frame. The runner will kill us.
    Atomics.wait(P, 0, 2, 1000);
    P[0] = 0;
  }
};

function flush(final = false) {
  if (host.directOut.size) writeDirect();
  const text = host.flush(final);
  if (text) writeAll(text);
}

function shutdown() {
  const p = host.drain();
  const finish = () => {
    flush(true);
    writeAll('{"op":"bye"}\n');
    process.exit(0);
  };
  if (p) return p.then(finish);
  finish();
  return undefined;
}

function fatal(err) {
  const message = err instanceof ProtocolViolation ? err.message : `host error: ${err && err.stack ? err.stack : err}`;
  try {
    flush();
  } catch {
    // best effort: the fatal frame matters more
  }
  try {
    writeAll(JSON.stringify({ op: "fatal", error: message }) + "\n");
  } catch {
    // the runner is gone
  }
  process.stderr.write(`fifoflow node host: protocol error: ${message}\n`);
  process.exit(3);
}

// Returns undefined when every line is handled, or a Promise (async handler or init).
function processLines(lines, start) {
  return handleLines(host, lines, start, shutdown);
}

// ------------------------------------------------------------------ the read loop

writeAll(
  JSON.stringify({ op: "hello", protocol: PROTOCOL, runtime: "node", version: VERSION, pid: process.pid, features: ["raw", "direct", "counts", "watchdog"] }) +
    "\n",
);

const input = new net.Socket({ fd: rfd, readable: true, writable: false });
let rest = null;
let busy = false;
const backlog = [];

// The first `size` bytes of `chunk` came from channel `ch` (`chunk` may be the shared
// read buffer: what is kept is copied).
function onDirectChunk(ch, chunk, size) {
  const r = readers.get(ch);
  if (r === undefined) return undefined; // cut: dropped
  host.framesIn = 0;
  let buf = chunk;
  let n = size;
  if (r.rest !== null) {
    buf = Buffer.concat([r.rest, chunk.subarray(0, size)]);
    n = buf.length;
  }
  // the usual read ends with a complete line: no search, no view
  const end = buf[n - 1] === 10 ? n - 1 : buf.lastIndexOf(10, n - 1);
  if (end < 0) {
    if (n > MAX_LINE) throw new ProtocolViolation(`direct channel ${ch}: line longer than ${MAX_LINE} bytes`);
    r.rest = r.rest === null ? Buffer.from(chunk.subarray(0, size)) : buf;
    return undefined;
  }
  r.rest = end + 1 < n ? Buffer.from(buf.subarray(end + 1, n)) : null;
  const text = buf.toString("utf8", 0, end);
  if (text.indexOf("\n") < 0) {
    host.directDeliver(ch, parseLine(text)); // the usual case: one frame
  } else {
    for (const line of text.split("\n")) {
      if (line.length) host.directDeliver(ch, parseLine(line));
    }
  }
  return host.drain();
}

function onChunk(source, chunk) {
  if (source !== null) return onDirectChunk(source, chunk, chunk.length);
  host.framesIn = 0;
  let buf = rest === null ? chunk : Buffer.concat([rest, chunk]);
  const end = buf.lastIndexOf(10);
  if (end < 0) {
    if (buf.length > MAX_LINE) throw new ProtocolViolation(`line longer than ${MAX_LINE} bytes`);
    rest = buf;
    return undefined;
  }
  rest = end + 1 < buf.length ? Buffer.from(buf.subarray(end + 1)) : null;
  const lines = buf.toString("utf8", 0, end).split("\n");
  buf = null;
  return processLines(lines, 0);
}

function pump() {
  while (!busy && backlog.length) {
    let p;
    try {
      const [source, chunk] = backlog.shift();
      p = onChunk(source, chunk);
    } catch (err) {
      fatal(err);
      return;
    }
    if (p) {
      wait(p);
      return;
    }
    flush();
  }
  maybeEnd();
}

// After a chunk handled outside pump(): write what it produced, or wait for its Promise.
function settle(p) {
  if (p) {
    wait(p);
    return;
  }
  flush();
  maybeEnd();
}

// An async handler (or init) is in flight: read no more runner frames until it settles.
function wait(p) {
  busy = true;
  input.pause();
  p.then(
    () => {
      busy = false;
      flush();
      input.resume();
      pump();
    },
    fatal,
  );
}

input.on("data", (chunk) => {
  backlog.push([null, chunk]);
  pump();
});
let ended = false;
function maybeEnd() {
  if (!ended || busy || backlog.length) return;
  ended = false;
  try {
    const p = shutdown();
    if (p) p.then(undefined, fatal);
  } catch (err) {
    fatal(err);
  }
}
input.on("end", () => {
  ended = true;
  maybeEnd();
});
input.on("error", (err) => fatal(err));
