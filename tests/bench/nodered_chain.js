// Node-RED side by side: the same three-function chain as fifoflow's benchmarks,
// embedded in this node process. Messages are handed to the first function node's
// receive() and counted by the last one, through a function in functionGlobalContext.
//
// usage: node nodered_chain.js NODE_RED_DIR USER_DIR MESSAGES ROUNDS
// prints one JSON line: {"version": "...", "rounds": [msgs_per_s, ...]}
"use strict";
const path = require("path");
const http = require("http");

const [nodeRedDir, userDir, messagesArg, roundsArg] = process.argv.slice(2);
const RED = require(path.join(nodeRedDir, "node_modules", "node-red"));
const N = Number(messagesArg);
const ROUNDS = Number(roundsArg);

let count = 0;
let target = 0;
let finished = null;
function done() {
  count += 1;
  if (count === target && finished) finished();
}

const identity = "return msg;";
const flows = [
  { id: "tab", type: "tab", label: "bench" },
  { id: "f1", type: "function", z: "tab", name: "a", func: identity, outputs: 1, wires: [["f2"]] },
  { id: "f2", type: "function", z: "tab", name: "b", func: identity, outputs: 1, wires: [["f3"]] },
  { id: "f3", type: "function", z: "tab", name: "c", func: identity, outputs: 1, wires: [["end"]] },
  { id: "end", type: "function", z: "tab", name: "count", func: "global.get('done')(); return null;", outputs: 1, wires: [[]] },
];

async function round(n) {
  count = 0;
  target = n;
  const first = RED.nodes.getNode("f1");
  const start = process.hrtime.bigint();
  const finishedP = new Promise((resolve) => { finished = resolve; });
  // Hand messages over in batches, yielding between them as an inject node would.
  const batch = 1000;
  for (let i = 0; i < n; i += batch) {
    for (let j = i; j < Math.min(n, i + batch); j++) first.receive({ payload: { n: 1, payload: "xxxxxxxxxxxxxxxx" } });
    await new Promise((r) => setImmediate(r));
  }
  await finishedP;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return n / seconds;
}

async function main() {
  require("fs").writeFileSync(path.join(userDir, "flows.json"), JSON.stringify(flows));
  const server = http.createServer();
  RED.init(server, {
    userDir,
    flowFile: "flows.json",
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    credentialSecret: false,
    logging: { console: { level: "off", metrics: false, audit: false } },
    functionGlobalContext: { done },
  });
  const started = new Promise((resolve) => {
    RED.events.on("flows:started", resolve);
  });
  await RED.start();
  await started;
  const results = [];
  await round(Math.min(N, 20000)); // warm-up
  for (let r = 0; r < ROUNDS; r++) results.push(await round(N));
  await RED.stop();
  process.stdout.write(JSON.stringify({ version: RED.version(), rounds: results }) + "\n");
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + "\n");
  process.exit(1);
});
