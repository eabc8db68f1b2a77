// graph_cli.mjs — `fifoflow graph`'s drawing step: a flow document on stdin, its SVG on stdout.
//
//   node api/ui/graph_cli.mjs < flow.json > flow.svg
//
// Imports static/graph.mjs (the page's own drawing code, so the picture is the page's) and
// the vendored ELK (static/vendor/elk/elk.bundled.js): no network, no npm install.
// Errors: a message on stderr and exit status 1 (bad JSON, a wire to a missing port).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { render } from "./static/graph.mjs";

const require = createRequire(import.meta.url);
const ELK = require("./static/vendor/elk/elk.bundled.js");

try {
  const flow = JSON.parse(readFileSync(0, "utf8"));
  process.stdout.write(await render(flow, new ELK()));
} catch (error) {
  process.stderr.write(`graph: ${error.message}\n`);
  process.exitCode = 1;
}
