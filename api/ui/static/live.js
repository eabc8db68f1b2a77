// live.js — one flow's graph on the page: drawn by graph.mjs (ELK layout, SVG with
// data-module / data-wire / data-input hooks), panned and zoomed on its viewBox, and kept
// live by polling aggregated counters once a second (never one event per message):
//   runner:      GET /flows/{id}/stats -> messages/s per wire the runner routes ("in host"
//                for same-runtime wires, which never leave their host), queue/capacity per
//                module input, full queues, errors, paused and breakpointed modules;
//   dispatcher:  GET /flows/{id}/stats as well, merged over the runners holding parts of
//                the flow (wires between runners: via "relay", counted by the dispatcher),
//                each module naming the runner or page that holds it (data-holder).

import { api } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";

/** The SVG of `flow` in `view`: graph.mjs with ELK when they load, else a plain grid
 * with the same hooks (so the live overlay works either way). */
export async function drawGraph(view, flow) {
  let svg = null;
  try {
    const graph = await import("./graph.mjs");
    if (globalThis.ELK === undefined) throw new Error("no ELK");
    svg = await graph.render(flow, new globalThis.ELK(), { style: true });
  } catch (error) {
    console.warn("graph.mjs unavailable, drawing a plain grid:", error);
    svg = fallbackSvg(flow);
  }
  view.innerHTML = svg;
  panZoom(view.querySelector("svg"));
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const parseWire = (w) => {
  const [from, to] = w.split("->").map((s) => s.trim());
  return { from, to, id: `${from}->${to}` };
};

function fallbackSvg(flow) {
  const modules = flow.modules ?? [];
  const pos = new Map();
  modules.forEach((m, i) => pos.set(m.id, { x: 20 + (i % 5) * 220, y: 20 + Math.floor(i / 5) * 140 }));
  const parts = [];
  for (const w of (flow.wires ?? []).map(parseWire)) {
    const a = pos.get(w.from.split(".")[0]);
    const b = pos.get(w.to.split(".")[0]);
    if (!a || !b) continue;
    parts.push(
      `<g class="ff-wire" data-wire="${esc(w.id)}" data-from="${esc(w.from)}" data-to="${esc(w.to)}">` +
        `<path class="ff-edge" d="M${a.x + 150},${a.y + 30} L${b.x},${b.y + 30}" stroke="#555" fill="none"/>` +
        `<text class="ff-rate" x="${(a.x + 150 + b.x) / 2}" y="${(a.y + b.y) / 2 + 26}"></text></g>`,
    );
  }
  for (const m of modules) {
    const { x, y } = pos.get(m.id);
    const inputs = m.inputs ?? ["in"];
    parts.push(
      `<g class="ff-module" data-module="${esc(m.id)}" data-runtime="${esc(m.runtime)}" transform="translate(${x},${y})">` +
        `<rect class="ff-box" width="150" height="70" rx="6" fill="#eef" stroke="#557"/>` +
        `<text class="ff-id" x="8" y="18">${esc(m.id)}</text><text class="ff-runtime" x="8" y="34">${esc(m.runtime)}</text>` +
        `<text class="ff-badge" x="144" y="14" text-anchor="end"></text>` +
        inputs.map((p, i) => `<g class="ff-port ff-in" data-input="${esc(`${m.id}.${p}`)}"><text x="4" y="${50 + i * 12}">${esc(p)}</text><text class="ff-queue" x="-4" y="${50 + i * 12}" text-anchor="end"></text></g>`).join("") +
        `</g>`,
    );
  }
  const w = 40 + Math.min(5, modules.length) * 220;
  const h = 40 + Math.ceil(modules.length / 5) * 140;
  return `<svg xmlns="${SVG}" class="ff-graph" data-flow="${esc(flow.id)}" viewBox="0 0 ${w} ${h}">${parts.join("")}</svg>`;
}

/** Wheel zooms around the pointer, drag pans: both change the viewBox only. */
export function panZoom(svg) {
  if (!svg) return;
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  const box = () => svg.viewBox.baseVal;
  const toSvg = (event) => {
    const r = svg.getBoundingClientRect();
    const b = box();
    const scale = Math.max(b.width / r.width, b.height / r.height);
    return { scale, x: b.x + (event.clientX - r.left) * scale, y: b.y + (event.clientY - r.top) * scale };
  };
  svg.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const b = box();
      const p = toSvg(event);
      const k = Math.exp(event.deltaY * 0.0015);
      b.x = p.x - (p.x - b.x) * k;
      b.y = p.y - (p.y - b.y) * k;
      b.width *= k;
      b.height *= k;
    },
    { passive: false },
  );
  let drag = null;
  svg.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, scale: toSvg(event).scale };
    svg.setPointerCapture(event.pointerId);
    svg.classList.add("dragging");
  });
  svg.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const b = box();
    b.x -= (event.clientX - drag.x) * drag.scale;
    b.y -= (event.clientY - drag.y) * drag.scale;
    drag.x = event.clientX;
    drag.y = event.clientY;
  });
  const end = () => {
    drag = null;
    svg.classList.remove("dragging");
  };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
}

const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r.toFixed(1));

/** Polls a flow's counters and writes them on its graph. */
export class Live {
  constructor(view, flowId, kind, guarded) {
    this.view = view;
    this.flowId = flowId;
    this.kind = kind;
    this.guarded = guarded;
    this.previous = null;
    this.timer = null;
    this.stopped = false;
  }

  start(ms) {
    const tick = async () => {
      try {
        await this.guarded(() => (this.kind === "dispatcher" ? this.dispatcherTick() : this.runnerTick()));
      } catch (error) {
        this.view.dataset.error = String(error.message ?? error);
      }
      if (!this.stopped) this.timer = setTimeout(tick, ms);
    };
    tick();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  text(selector, value) {
    const node = this.view.querySelector(selector);
    if (node) node.textContent = value;
    return node;
  }

  async runnerTick() {
    const stats = await api("GET", `/flows/${encodeURIComponent(this.flowId)}/stats`);
    if (!this.stopped) this.paint(stats);
  }

  /** Rates on wires (from two polls), queues, errors, breakpoints and pause on the graph. */
  paint(stats) {
    const before = this.previous;
    this.previous = stats;
    const dt = before ? stats.time - before.time : 0;
    const old = new Map((before?.wires ?? []).map((w) => [w.wire, w.messages]));
    for (const w of stats.wires) {
      const g = this.view.querySelector(`[data-wire="${CSS.escape(w.wire)}"]`);
      if (!g) continue;
      const label = g.querySelector(".ff-rate");
      g.dataset.via = w.via;
      g.dataset.messages = w.messages ?? "";
      // a wire inside one host: counted by hosts that report it, else just "in host"
      const inHost = w.via === "host";
      label.classList.toggle("in-host", inHost);
      if (w.messages === null || w.messages === undefined) {
        label.textContent = inHost ? "in host" : "…";
        g.dataset.rate = "";
        continue;
      }
      const prev = old.get(w.wire);
      if (dt > 0 && prev !== undefined && prev !== null) {
        const rate = Math.max(0, (w.messages - prev) / dt);
        g.dataset.rate = rate.toFixed(3);
        label.textContent = `${fmtRate(rate)}/s${inHost ? " in host" : ""}`;
      } else {
        label.textContent = inHost ? "in host" : "…";
      }
    }
    for (const [id, m] of Object.entries(stats.modules)) {
      const g = this.view.querySelector(`[data-module="${CSS.escape(id)}"]`);
      if (!g) continue;
      g.classList.toggle("full", m.full);
      g.classList.toggle("breakpoint", m.breakpoint != null);
      g.classList.toggle("paused", stats.paused);
      g.dataset.queued = m.queued;
      g.dataset.errors = m.errors;
      const badge = [m.errors ? `${m.errors} err` : "", m.breakpoint ? "●" : "", stats.paused ? "paused" : ""].filter(Boolean).join(" ");
      this.text(`[data-module="${CSS.escape(id)}"] .ff-badge`, badge);
      for (const port of g.querySelectorAll("[data-input] .ff-queue")) {
        port.textContent = m.queued ? `${m.queued}/${m.capacity}` : "";
      }
    }
  }

  /** The dispatcher's stats are the runner's, merged over the parts (wires between
   * runners: via "relay"), each module naming the runner or page that holds it. */
  async dispatcherTick() {
    const stats = await api("GET", `/flows/${encodeURIComponent(this.flowId)}/stats`);
    if (this.stopped) return;
    this.paint(stats);
    for (const [module, m] of Object.entries(stats.modules)) {
      const g = this.view.querySelector(`[data-module="${CSS.escape(module)}"]`);
      if (!g || !m.runner) continue;
      g.dataset.holder = m.runner;
      g.classList.toggle("unreachable", !m.reachable);
      let holder = g.querySelector(".ff-holder");
      if (!holder) {
        holder = document.createElementNS(SVG, "text");
        holder.setAttribute("class", "ff-holder");
        holder.setAttribute("x", "8");
        holder.setAttribute("y", "-4");
        g.append(holder);
      }
      holder.textContent = `on ${m.runner}`;
    }
  }
}
