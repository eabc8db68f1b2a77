// panel.js — the module panel: click a module on the graph and a panel opens beside it
// with the module's state (JSON, polled once a second), its recent errors (traceback and
// the input that raised), the flow's log lines for it, its config and its code in a
// CodeMirror 6 editor (vendor/codemirror/codemirror.mjs, bundled once by
// api/ui/vendor.py). Apply is a hot swap through the existing update route: it reads the
// flow's document (GET /flows/{id}), changes that module's code and config, and sends it
// back (PUT /flows/{id}?revision=N); the swap report the server answers is shown, and a
// refused swap (422 naming the module: a syntax error...) shows the error while the old
// code keeps running (the server promises it: "the running version is unchanged").
//
// Selecting a module is an event others can listen to (the debugger does):
//   document.addEventListener("ff-module", (e) => e.detail /* {flow, module} */)
// A click is a pointerdown and pointerup on the same module without a drag (the graph pans
// on drag and captures the pointer, so a plain "click" would land on the <svg>).
//
// On a dispatcher the same routes are forwarded to the runner holding the module (state,
// logs, PUT); it has no errors list, so none is shown there.

import { api } from "./api.js";

const POLL_MS = 1000;
const LOG_LINES = 200;
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

let codemirror = null; // the bundle, loaded on first open
const loadEditor = async () => (codemirror ??= await import("./vendor/codemirror/codemirror.mjs"));

/** Turn clicks on `[data-module]` inside `view` (a container kept across redraws) into
 * `ff-module` events carrying the flow (the svg's data-flow) and the module's id. */
export function watchModuleClicks(view) {
  let down = null;
  view.addEventListener(
    "pointerdown",
    (event) => {
      const g = event.target.closest?.("[data-module]");
      down = g ? { module: g.dataset.module, x: event.clientX, y: event.clientY } : null;
    },
    true,
  );
  view.addEventListener(
    "pointerup",
    (event) => {
      const was = down;
      down = null;
      if (!was || Math.hypot(event.clientX - was.x, event.clientY - was.y) > 4) return;
      const flow = view.querySelector("svg[data-flow]")?.dataset.flow;
      if (flow === undefined) return;
      for (const g of view.querySelectorAll("[data-module].selected")) g.classList.remove("selected");
      view.querySelector(`[data-module="${CSS.escape(was.module)}"]`)?.classList.add("selected");
      document.dispatchEvent(new CustomEvent("ff-module", { detail: { flow, module: was.module } }));
    },
    true,
  );
}

const LANGUAGES = { python: "python", node: "javascript", browser: "javascript" };

/** The open panel: one module of one flow. */
class Panel {
  constructor(flow, module) {
    this.flow = flow;
    this.module = module;
    this.timer = null;
    this.closed = false;
    this.code = null; // EditorView of the code (null: the module has no code, e.g. exec)
    this.config = null; // EditorView of the config JSON
    this.ticks = 0;
  }

  get path() {
    return `/flows/${enc(this.flow)}/modules/${enc(this.module)}`;
  }

  async open(kind) {
    const root = $("panel");
    root.hidden = false;
    root.dataset.flow = this.flow;
    root.dataset.module = this.module;
    root.dataset.result = "";
    $("panel-title").textContent = this.module;
    $("panel-message").textContent = "";
    $("panel-report").textContent = "";
    for (const id of ["panel-state", "panel-logs"]) $(id).textContent = "…";
    $("panel-errors").replaceChildren();
    const [cm, detail] = await Promise.all([loadEditor(), api("GET", `/flows/${enc(this.flow)}`)]);
    if (this.closed) return;
    const spec = (detail.flow?.modules ?? []).find((m) => m.id === this.module);
    if (!spec) throw new Error(`flow ${this.flow} has no module ${this.module}`);
    $("panel-runtime").textContent = spec.runtime;
    root.dataset.runtime = spec.runtime;
    this.kind = kind;
    this.mountEditors(cm, spec);
    this.poll();
  }

  mountEditors(cm, spec) {
    const lang = LANGUAGES[spec.runtime];
    const codeHost = $("panel-code");
    codeHost.replaceChildren();
    this.code?.destroy();
    this.code = null;
    if (lang && (spec.code !== undefined || spec.file !== undefined)) {
      const note = spec.code === undefined ? `(the code is in ${spec.file}: not in the document, Apply sends it inline)` : "";
      $("panel-code-note").textContent = note;
      this.code = new cm.EditorView({
        parent: codeHost,
        state: cm.EditorState.create({
          doc: spec.code ?? "",
          extensions: [cm.basicSetup, cm.keymap.of([cm.indentWithTab]), lang === "python" ? cm.python() : cm.javascript()],
        }),
      });
      codeHost.cmView = this.code; // for scripts and tests: the live EditorView
    } else {
      $("panel-code-note").textContent = spec.runtime === "exec" ? `exec: ${JSON.stringify(spec.command ?? "")}` : "(no code)";
    }
    const configHost = $("panel-config");
    configHost.replaceChildren();
    this.config?.destroy();
    this.config = new cm.EditorView({
      parent: configHost,
      state: cm.EditorState.create({
        doc: JSON.stringify(spec.config ?? {}, null, 2),
        extensions: [cm.basicSetup, cm.json()],
      }),
    });
    configHost.cmView = this.config;
  }

  poll() {
    const tick = async () => {
      try {
        await this.refresh();
        $("panel").dataset.error = "";
      } catch (error) {
        $("panel").dataset.error = String(error.message ?? error);
      }
      if (!this.closed) this.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  async refresh() {
    const [state, errors, logs] = await Promise.all([
      api("GET", `${this.path}/state`),
      // a dispatcher forwards state and logs, not the errors list: none shown there
      this.kind === "dispatcher" ? Promise.resolve([]) : api("GET", `${this.path}/errors`),
      api("GET", `/flows/${enc(this.flow)}/logs?limit=${LOG_LINES}`),
    ]);
    if (this.closed) return;
    const stateText = JSON.stringify(state?.state ?? null, null, 2);
    if ($("panel-state").textContent !== stateText) $("panel-state").textContent = stateText;
    $("panel-state").dataset.refreshed = String(++this.ticks);
    this.showErrors(errors ?? []);
    this.showLogs(logs ?? []);
  }

  showErrors(errors) {
    const list = $("panel-errors");
    if (list.dataset.count === String(errors.length) && list.dataset.last === String(errors.at(-1)?.time)) return;
    list.dataset.count = String(errors.length);
    list.dataset.last = String(errors.at(-1)?.time);
    list.replaceChildren();
    for (const e of [...errors].reverse()) {
      const item = document.createElement("li");
      item.className = "ff-error";
      const head = document.createElement("div");
      head.className = "ff-error-head";
      head.textContent = `${new Date(e.time * 1000).toLocaleTimeString()} ${e.error?.type ?? "Error"}: ${e.error?.message ?? ""}`;
      const input = document.createElement("pre");
      input.className = "ff-error-input";
      input.textContent = `input${e.port ? ` (${e.port})` : ""}: ${JSON.stringify(e.msg)}`;
      const trace = document.createElement("pre");
      trace.className = "ff-traceback";
      trace.textContent = e.error?.traceback || "(no traceback)";
      item.append(head, input, trace);
      list.append(item);
    }
    $("panel-errors-count").textContent = errors.length ? `(${errors.length})` : "";
  }

  showLogs(lines) {
    // the module's own lines, and its runtime's lines no module is named on (print output)
    const runtime = $("panel").dataset.runtime;
    const mine = lines.filter((l) => l.module === this.module || (l.module == null && l.runtime === runtime));
    const text = mine
      .map((l) => `${new Date(l.time * 1000).toLocaleTimeString()} ${l.level} ${l.module ? "" : "[runtime] "}${l.text}`)
      .join("\n");
    const pre = $("panel-logs");
    if (pre.textContent !== text) {
      pre.textContent = text || "(no lines)";
      pre.scrollTop = pre.scrollHeight;
    }
  }

  /** The hot swap: this module's code and config put into the flow's current document. */
  async apply() {
    const root = $("panel");
    const message = $("panel-message");
    const report = $("panel-report");
    message.textContent = "";
    report.textContent = "applying…";
    root.dataset.result = "applying";
    let config;
    try {
      config = JSON.parse(this.config.state.doc.toString());
    } catch (error) {
      throw Object.assign(new Error(`config: not JSON: ${error.message}`), { refused: true });
    }
    const detail = await api("GET", `/flows/${enc(this.flow)}`);
    const document_ = structuredClone(detail.flow);
    const spec = document_.modules.find((m) => m.id === this.module);
    if (!spec) throw new Error(`flow ${this.flow} has no module ${this.module} any more`);
    if (this.code) {
      spec.code = this.code.state.doc.toString();
      delete spec.file;
    }
    if (spec.config !== undefined || JSON.stringify(config) !== "{}") spec.config = config;
    const query = detail.revision !== undefined ? `?revision=${detail.revision}` : "";
    const answer = await api("PUT", `/flows/${enc(this.flow)}${query}`, document_);
    const swap = answer?.swap;
    root.dataset.result = "applied";
    root.dataset.revision = String(answer?.flow?.revision ?? "");
    report.textContent = swap
      ? `hot-swapped, revision ${answer.flow.revision}: ${swap.summary || "no change"} ` +
        `(paused ${swap.pausedMs} ms, took ${swap.durationMs} ms)\n${JSON.stringify(swap.changes, null, 2)}`
      : `replaced (the flow is not running), revision ${answer?.flow?.revision}`;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.code?.destroy();
    this.config?.destroy();
    this.code = this.config = null;
  }
}

let current = null;
let serverKind = "runner";

/** Open the panel of `module` in `flow` (closing any other). */
export async function openPanel(flow, module) {
  current?.close();
  current = new Panel(flow, module);
  const panel = current;
  try {
    await panel.open(serverKind);
  } catch (error) {
    if (panel === current) $("panel-message").textContent = String(error.message ?? error);
  }
}

export function closePanel() {
  current?.close();
  current = null;
  const root = $("panel");
  if (root) root.hidden = true;
  for (const g of document.querySelectorAll("[data-module].selected")) g.classList.remove("selected");
}

function showRefusal(error) {
  const root = $("panel");
  root.dataset.result = "refused";
  $("panel-report").textContent = "";
  const problems = (error.body?.error?.problems ?? []).map((p) => `${p.path}: ${p.message}`);
  const lines = [`Refused: ${error.message}`];
  for (const p of problems) if (!error.message.includes(p.split(": ").slice(1).join(": "))) lines.push(p);
  lines.push("The module's previous code keeps running.");
  $("panel-message").textContent = lines.join("\n");
}

/** Wire the panel: module clicks in #graph-view open it; its buttons. */
export function setupPanel(kind) {
  serverKind = kind ?? serverKind;
  if (setupPanel.done) return;
  setupPanel.done = true;
  watchModuleClicks($("graph-view"));
  document.addEventListener("ff-module", (event) => openPanel(event.detail.flow, event.detail.module));
  $("panel-close").addEventListener("click", closePanel);
  $("panel-apply").addEventListener("click", async () => {
    const panel = current;
    if (!panel) return;
    $("panel-apply").disabled = true;
    try {
      await panel.apply();
    } catch (error) {
      if (panel === current) showRefusal(error);
    } finally {
      $("panel-apply").disabled = false;
    }
  });
}
