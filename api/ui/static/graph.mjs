// graph.mjs — draw a fifoflow flow: flow document -> ELK graph -> laid out -> SVG string.
//
// One ES module with no DOM dependency: the page (/ui/) imports it in the browser and
// `fifoflow graph` runs it in node (api/ui/graph_cli.mjs), so both draw the same picture.
// ELK (elkjs, vendored at vendor/elk/elk.bundled.js) is passed in, never imported here:
// the page loads it with a <script> tag (window.ELK), node with require().
//
//   toElk(flow)                    -> ELK graph (plain object; nothing laid out yet)
//   await layout(flow, elk)        -> the same graph with x/y on nodes, ports and edges
//   toSvg(flow, laidOut, options)  -> "<svg ...>...</svg>"
//   await render(flow, elk, opts)  -> toSvg(flow, await layout(flow, elk), opts)
//   PALETTE, runtimeColours(rt), wireId(wire), parseWire(text), normalizeFlow(flow)
//
// A flow is a flow document (flows/codec.py): {id, modules: [{id, runtime, inputs?,
// outputs?}], wires: ["a.out -> b.in", ...]}; inputs/outputs default to ["in"]/["out"]
// as in the document format. Other fields are ignored.
//
// The SVG's hooks for live overlays (the page selects them; CSS can restyle classes):
//   <svg class="ff-graph" data-flow="ID">
//   <g class="ff-module ff-runtime-RT" data-module="ID" data-runtime="RT">  (a module box;
//       its <rect class="ff-box">, <text class="ff-id">, <text class="ff-runtime">, and an
//       empty <text class="ff-badge"> at its top right for error/paused badges)
//   <g class="ff-port ff-in"  data-input="MODULE.PORT">   (an input port; an empty
//       <text class="ff-queue"> beside it for the queue depth)
//   <g class="ff-port ff-out" data-output="MODULE.PORT">  (an output port)
//   <g class="ff-wire" data-wire="a.out->b.in" data-from="a.out" data-to="b.in">
//       (<path class="ff-edge"> and an empty <text class="ff-rate"> at the middle of its
//       longest segment for messages/s)
// Coordinates are in the ELK layout's units (px at zoom 1); the svg's viewBox covers all.

/** Colours per runtime: box fill, stroke (also the runtime label's colour) and text. */
export const PALETTE = Object.freeze({
  python: Object.freeze({ fill: "#e3edf9", stroke: "#3572a5", text: "#14324f" }),
  node: Object.freeze({ fill: "#e6f4e4", stroke: "#3e8e41", text: "#1d421e" }),
  exec: Object.freeze({ fill: "#f1ece4", stroke: "#8a6d3b", text: "#3e301a" }),
  browser: Object.freeze({ fill: "#fbeadf", stroke: "#d0641f", text: "#5a2a0c" }),
  other: Object.freeze({ fill: "#eeeeee", stroke: "#6b6b6b", text: "#222222" }),
});

/** The palette entry of a runtime (`other` for any runtime not in PALETTE). */
export function runtimeColours(runtime) {
  return PALETTE[runtimeClass(runtime)];
}

// Geometry, in px. Text is monospace so its width is known without a DOM.
export const METRICS = Object.freeze({
  font: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace",
  idSize: 13, // module id
  smallSize: 11, // runtime and port names
  charWidth: 0.6, // of the font size (monospace)
  padX: 12,
  headerHeight: 38, // id + runtime lines
  portSpacing: 20,
  portSize: 8,
  portGap: 16, // between the longest input and output names
  minWidth: 90,
});

const WIRE = /^\s*([^.\s]+)\.(\S+)\s*->\s*([^.\s]+)\.(\S+)\s*$/;

/** "a.out -> b.in" -> {src, srcPort, dst, dstPort}; throws on anything else. */
export function parseWire(text) {
  const m = WIRE.exec(text);
  if (m === null) throw new Error(`not a wire: ${JSON.stringify(text)} (expected 'module.port -> module.port')`);
  return { src: m[1], srcPort: m[2], dst: m[3], dstPort: m[4] };
}

/** The stable id of a wire, as in data-wire: "a.out->b.in". */
export function wireId(wire) {
  const w = typeof wire === "string" ? parseWire(wire) : wire;
  return `${w.src}.${w.srcPort}->${w.dst}.${w.dstPort}`;
}

/** The fields drawn, with the document's defaults filled in. */
export function normalizeFlow(flow) {
  const modules = (flow.modules ?? []).map((m) => ({
    id: String(m.id),
    runtime: String(m.runtime ?? "?"),
    inputs: (m.inputs ?? ["in"]).map(String),
    outputs: (m.outputs ?? ["out"]).map(String),
  }));
  const wires = (flow.wires ?? []).map((w) => (typeof w === "string" ? parseWire(w) : w));
  return { id: String(flow.id ?? "flow"), modules, wires };
}

const textWidth = (text, size) => text.length * size * METRICS.charWidth;

function moduleSize(m) {
  const M = METRICS;
  const widest = (names) => Math.max(0, ...names.map((n) => textWidth(n, M.smallSize)));
  const ports = widest(m.inputs) + widest(m.outputs) + M.portGap + 2 * M.portSize;
  const width = Math.max(M.minWidth, textWidth(m.id, M.idSize), textWidth(m.runtime, M.smallSize), ports) + 2 * M.padX;
  const rows = Math.max(1, m.inputs.length, m.outputs.length);
  const height = M.headerHeight + rows * M.portSpacing;
  return { width: Math.ceil(width), height: Math.ceil(height) };
}

const portY = (index) => METRICS.headerHeight + index * METRICS.portSpacing + METRICS.portSpacing / 2;

/** The flow as an ELK graph: a node per module (fixed port positions: inputs WEST, outputs
 * EAST, in document order), an edge per wire, layered left to right, orthogonal edges. */
export function toElk(flow) {
  const f = normalizeFlow(flow);
  const P = METRICS.portSize;
  const portIds = new Map(); // "in:a.x" / "out:a.y" -> ELK port id
  const children = f.modules.map((m) => {
    const { width, height } = moduleSize(m);
    const port = (dir, name, index) => {
      const id = `${m.id}:${dir}:${index}`;
      portIds.set(`${dir}:${m.id}.${name}`, id);
      const west = dir === "in";
      return {
        id,
        width: P,
        height: P,
        x: west ? -P / 2 : width - P / 2,
        y: portY(index) - P / 2,
        layoutOptions: { "elk.port.side": west ? "WEST" : "EAST", "elk.port.index": String(index) },
      };
    };
    return {
      id: m.id,
      width,
      height,
      layoutOptions: { "elk.portConstraints": "FIXED_POS" },
      ports: [...m.inputs.map((n, i) => port("in", n, i)), ...m.outputs.map((n, i) => port("out", n, i))],
    };
  });
  const edges = [];
  for (const w of f.wires) {
    const source = portIds.get(`out:${w.src}.${w.srcPort}`);
    const target = portIds.get(`in:${w.dst}.${w.dstPort}`);
    if (source === undefined || target === undefined) {
      throw new Error(`wire ${wireId(w)}: no such ${source === undefined ? "output" : "input"} port`);
    }
    edges.push({ id: wireId(w), sources: [source], targets: [target] });
  }
  return {
    id: "root",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "RIGHT",
      "elk.edgeRouting": "ORTHOGONAL",
      "elk.spacing.nodeNode": "28",
      "elk.layered.spacing.nodeNodeBetweenLayers": "56",
      "elk.spacing.edgeNode": "14",
      "elk.spacing.edgeEdge": "8",
      "elk.layered.spacing.edgeNodeBetweenLayers": "18",
      "elk.spacing.componentComponent": "36",
      "elk.padding": "[top=16,left=16,bottom=16,right=16]",
      "elk.layered.nodePlacement.strategy": "NETWORK_SIMPLEX",
    },
    children,
    edges,
  };
}

/** Lay the flow out with an ELK instance (`new ELK()` from vendor/elk/elk.bundled.js). */
export async function layout(flow, elk) {
  return elk.layout(toElk(flow));
}

const esc = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const n = (x) => {
  const r = Math.round(x * 10) / 10;
  return Object.is(r, -0) ? "0" : String(r);
};

function edgePoints(edge) {
  const points = [];
  for (const s of edge.sections ?? []) {
    points.push(s.startPoint, ...(s.bendPoints ?? []), s.endPoint);
  }
  return points;
}

function midOfLongest(points) {
  let best = null;
  let bestLength = -1;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1];
    const b = points[i];
    const length = Math.abs(b.x - a.x) + Math.abs(b.y - a.y);
    if (length > bestLength) {
      bestLength = length;
      best = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, horizontal: Math.abs(b.y - a.y) < 0.5 };
    }
  }
  return best ?? { x: 0, y: 0, horizontal: true };
}

function style(fontFamily) {
  const rules = [
    `.ff-graph{font-family:${fontFamily}}`,
    `.ff-id{font-size:${METRICS.idSize}px;font-weight:600}`,
    `.ff-runtime,.ff-port text,.ff-rate,.ff-queue,.ff-badge{font-size:${METRICS.smallSize}px}`,
    ".ff-edge{fill:none;stroke:#555;stroke-width:1.4}",
    ".ff-rate{fill:#333}",
    ".ff-queue{fill:#333}",
    ".ff-badge{fill:#b00020;font-weight:700}",
    ".ff-port rect{fill:#fff;stroke-width:1.2}",
  ];
  for (const [rt, c] of Object.entries(PALETTE)) {
    const sel = `.ff-runtime-${rt}`;
    rules.push(`${sel} .ff-box{fill:${c.fill};stroke:${c.stroke};stroke-width:1.5}`);
    rules.push(`${sel} .ff-id,${sel} .ff-port text{fill:${c.text}}`);
    rules.push(`${sel} .ff-runtime{fill:${c.stroke}}`);
    rules.push(`${sel} .ff-port rect{stroke:${c.stroke}}`);
  }
  return rules.join("\n");
}

/**
 * The laid-out flow as an SVG document (a string). Options:
 *   idPrefix   prefix of the ids inside the SVG (the arrowhead marker), default "ff-";
 *              set it when several graphs share one HTML page
 *   fontFamily CSS font family, default METRICS.font (monospace: sizes assume it)
 *   style      false to leave out the embedded <style> (the page brings its own CSS)
 *   title      the <title> text, default "flow ID"
 */
export function toSvg(flow, laidOut, options = {}) {
  const f = normalizeFlow(flow);
  const prefix = options.idPrefix ?? "ff-";
  const fontFamily = options.fontFamily ?? METRICS.font;
  const P = METRICS.portSize;
  const byId = new Map(laidOut.children.map((c) => [c.id, c]));
  const width = Math.ceil(laidOut.width ?? 0);
  const height = Math.ceil(laidOut.height ?? 0);
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="ff-graph" data-flow="${esc(f.id)}" ` +
      `width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
  );
  out.push(`<title>${esc(options.title ?? `flow ${f.id}`)}</title>`);
  if (options.style !== false) out.push(`<style>\n${style(fontFamily)}\n</style>`);
  const marker = `${prefix}arrow`;
  out.push(
    `<defs><marker id="${esc(marker)}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" ` +
      `orient="auto-start-reverse" markerUnits="userSpaceOnUse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>`,
  );

  const wires = new Map(f.wires.map((w) => [wireId(w), w]));
  out.push(`<g class="ff-wires">`);
  for (const edge of laidOut.edges ?? []) {
    const w = wires.get(edge.id);
    if (w === undefined) continue;
    const points = edgePoints(edge);
    const d = points.map((p, i) => `${i ? "L" : "M"}${n(p.x)},${n(p.y)}`).join(" ");
    const mid = midOfLongest(points);
    const lx = mid.x;
    const ly = mid.horizontal ? mid.y - 4 : mid.y;
    const anchor = mid.horizontal ? "middle" : "start";
    out.push(
      `<g class="ff-wire" data-wire="${esc(edge.id)}" data-from="${esc(`${w.src}.${w.srcPort}`)}" data-to="${esc(`${w.dst}.${w.dstPort}`)}">` +
        `<path class="ff-edge" d="${d}" marker-end="url(#${esc(marker)})"/>` +
        `<text class="ff-rate" x="${n(mid.horizontal ? lx : lx + 4)}" y="${n(ly)}" text-anchor="${anchor}"></text></g>`,
    );
  }
  out.push(`</g>`);

  out.push(`<g class="ff-modules">`);
  for (const m of f.modules) {
    const node = byId.get(m.id);
    if (node === undefined) continue;
    const rt = esc(m.runtime);
    const w = node.width;
    const h = node.height;
    out.push(
      `<g class="ff-module ff-runtime-${esc(runtimeClass(m.runtime))}" data-module="${esc(m.id)}" data-runtime="${rt}" transform="translate(${n(node.x)},${n(node.y)})">`,
    );
    out.push(`<rect class="ff-box" width="${n(w)}" height="${n(h)}" rx="6" ry="6"/>`);
    out.push(`<text class="ff-id" x="${METRICS.padX}" y="17">${esc(m.id)}</text>`);
    out.push(`<text class="ff-runtime" x="${METRICS.padX}" y="31">${rt}</text>`);
    out.push(`<text class="ff-badge" x="${n(w - 6)}" y="14" text-anchor="end"></text>`);
    const ports = new Map((node.ports ?? []).map((p) => [p.id, p]));
    m.inputs.forEach((name, i) => {
      const p = ports.get(`${m.id}:in:${i}`);
      const y = p ? p.y + P / 2 : portY(i);
      out.push(
        `<g class="ff-port ff-in" data-input="${esc(`${m.id}.${name}`)}">` +
          `<rect x="${n(-P / 2)}" y="${n(y - P / 2)}" width="${P}" height="${P}"/>` +
          `<text x="${n(P / 2 + 4)}" y="${n(y + 4)}">${esc(name)}</text>` +
          `<text class="ff-queue" x="${n(-P / 2 - 3)}" y="${n(y - P / 2 - 2)}" text-anchor="end"></text></g>`,
      );
    });
    m.outputs.forEach((name, i) => {
      const p = ports.get(`${m.id}:out:${i}`);
      const y = p ? p.y + P / 2 : portY(i);
      out.push(
        `<g class="ff-port ff-out" data-output="${esc(`${m.id}.${name}`)}">` +
          `<rect x="${n(w - P / 2)}" y="${n(y - P / 2)}" width="${P}" height="${P}"/>` +
          `<text x="${n(w - P / 2 - 4)}" y="${n(y + 4)}" text-anchor="end">${esc(name)}</text></g>`,
      );
    });
    out.push(`</g>`);
  }
  out.push(`</g>`);
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}

/** The CSS class suffix of a runtime: its name when in PALETTE, else "other". */
export function runtimeClass(runtime) {
  return Object.hasOwn(PALETTE, runtime) ? runtime : "other";
}

/** Lay out and draw in one call. */
export async function render(flow, elk, options = {}) {
  return toSvg(flow, await layout(flow, elk), options);
}
