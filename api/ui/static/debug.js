// debug.js — the debugger of the open flow's graph (issue 18 item 5), on the routes that
// exist: pause, continue, step, breakpoints (with an optional condition), the queues of a
// paused flow (edit: a JSON textarea; drop) and inject into any input port.
//
// Hooks it owns in the page (index.html #debug): the toolbar (#dbg-pause, #dbg-continue,
// #dbg-step, #dbg-status), the breakpoint form (#dbg-module, #dbg-condition, #dbg-break,
// #dbg-unbreak), the inject form (#dbg-port, #dbg-msg, #dbg-inject), the last step
// (#dbg-steps: one <li data-module> per module) and the queues (#dbg-queues: one
// <li data-module data-index> per waiting message). On the graph: a breakpoint dot
// (<circle class="ff-bp-dot">) on each module box, a click on it (or an alt-click on the
// box) sets or clears the module's breakpoint; classes on g[data-module]: "breakpoint",
// "paused-here" (the module a breakpoint stopped at), "consumed", "emitted", "raised"
// (what the last step did); g[data-output] gets "emitted" too.
// The selected module comes from the panel's "ff-module" event ({flow, module}).
// Polls GET /flows/{id}/debug once a second (and /queues while paused): not per message.
// On a dispatcher /debug is per runner (merged here) and queued messages cannot be
// edited (no such route there): the queues are shown without edit/drop.

import { api } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const short = (v) => {
  const s = JSON.stringify(v);
  return s === undefined ? "undefined" : s.length > 80 ? `${s.slice(0, 77)}…` : s;
};

export class Debugger {
  constructor(view, flowId, kind, guarded) {
    this.view = view;
    this.flowId = flowId;
    this.kind = kind;
    this.guarded = guarded;
    this.base = `/flows/${enc(flowId)}`;
    this.timer = null;
    this.stopped = false;
    this.state = { paused: false, pause: null, breakpoints: [] };
    this.queuesKey = "";
    this.abort = new AbortController();
  }

  start(ms) {
    $("debug").hidden = false;
    $("dbg-steps").replaceChildren();
    $("dbg-queues").replaceChildren();
    $("dbg-message").textContent = "";
    const signal = this.abort.signal;
    const on = (id, fn) => $(id).addEventListener("click", () => this.act(fn), { signal });
    on("dbg-pause", () => this.pause());
    on("dbg-continue", () => this.resume());
    on("dbg-step", () => this.step());
    on("dbg-break", () => this.setBreakpoint($("dbg-module").value, $("dbg-condition").value.trim() || null));
    on("dbg-unbreak", () => this.clearBreakpoint($("dbg-module").value));
    on("dbg-inject", () => this.inject());
    document.addEventListener(
      "ff-module",
      (event) => {
        if (event.detail?.flow === this.flowId) this.select(event.detail.module);
      },
      { signal },
    );
    this.decorate();
    const tick = async () => {
      try {
        await this.guarded(() => this.refresh());
      } catch (error) {
        this.say(error);
      }
      if (!this.stopped) this.timer = setTimeout(tick, ms);
    };
    tick();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    $("debug").hidden = true;
  }

  say(error) {
    $("dbg-message").textContent = error ? String(error.message ?? error) : "";
  }

  /** Run a user action; its error (or the note it returns) is shown, the view refreshed either way. */
  async act(fn) {
    try {
      const note = await this.guarded(fn); // a string: what to tell the user
      this.say(typeof note === "string" ? note : null);
    } catch (error) {
      this.say(error);
    }
    try {
      await this.guarded(() => this.refresh());
    } catch (error) {
      this.say(error);
    }
  }

  /** Breakpoint dots on the module boxes, the module and port selects. */
  decorate() {
    const modules = [...this.view.querySelectorAll("g[data-module]")];
    const select = $("dbg-module");
    select.replaceChildren(...modules.map((g) => new Option(g.dataset.module, g.dataset.module)));
    const ports = [...this.view.querySelectorAll("g[data-input]")].map((g) => g.dataset.input);
    $("dbg-port").replaceChildren(...ports.map((p) => new Option(p, p)));
    for (const g of modules) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("class", "ff-bp-dot");
      dot.setAttribute("cx", "-2");
      dot.setAttribute("cy", "-2");
      dot.setAttribute("r", "6");
      const title = document.createElementNS(SVG, "title");
      title.textContent = "breakpoint: click to set or clear";
      dot.append(title);
      g.append(dot);
      // pointerdown would start a pan (pointer capture on the svg) and eat the click
      dot.addEventListener("pointerdown", (event) => event.stopPropagation());
      dot.addEventListener("click", (event) => {
        event.stopPropagation();
        this.act(() => this.toggle(g.dataset.module));
      });
      g.addEventListener("pointerdown", (event) => {
        if (!event.altKey) return;
        event.stopPropagation();
        this.act(() => this.toggle(g.dataset.module));
      });
    }
  }

  select(module) {
    $("dbg-module").value = module;
    const first = this.view.querySelector(`g[data-input^="${CSS.escape(module)}."]`);
    if (first) $("dbg-port").value = first.dataset.input;
    for (const g of this.view.querySelectorAll("g[data-module]")) {
      g.classList.toggle("selected", g.dataset.module === module);
    }
  }

  breakpointAt(module) {
    return this.state.breakpoints.find((b) => b.module === module || b.module?.endsWith(`/${module}`));
  }

  async toggle(module) {
    this.select(module);
    if (this.breakpointAt(module)) return this.clearBreakpoint(module);
    return this.setBreakpoint(module, $("dbg-condition").value.trim() || null);
  }

  async setBreakpoint(module, condition) {
    await api("PUT", `${this.base}/modules/${enc(module)}/breakpoint`, condition ? { condition } : {});
  }

  async clearBreakpoint(module) {
    await api("DELETE", `${this.base}/modules/${enc(module)}/breakpoint`);
  }

  async pause() {
    await api("POST", `${this.base}/pause`);
  }

  async resume() {
    await api("POST", `${this.base}/continue`);
    this.showStep(null);
  }

  async step() {
    this.showStep(await api("POST", `${this.base}/step`));
  }

  async inject() {
    const target = $("dbg-port").value;
    if (!target) throw new Error("no input port to inject into");
    let msg;
    try {
      msg = JSON.parse($("dbg-msg").value);
    } catch (error) {
      throw new Error(`the message is not JSON: ${error.message}`);
    }
    const dot = target.indexOf(".");
    const [module, port] = [target.slice(0, dot), target.slice(dot + 1)];
    const answer = await api("POST", `${this.base}/modules/${enc(module)}/inputs/${enc(port)}`, { msg });
    return `injected into ${target} (${answer?.accepted ?? 1})`;
  }

  /** The debugger's state (merged over a dispatcher's parts) and, while paused, the queues. */
  async refresh() {
    const answer = await api("GET", `${this.base}/debug`);
    if (this.stopped) return;
    const parts = this.kind === "dispatcher" ? Object.values(answer ?? {}) : [answer];
    this.state = {
      paused: parts.some((p) => p?.paused),
      pause: parts.map((p) => p?.pause).find(Boolean) ?? null,
      breakpoints: parts.flatMap((p) => p?.breakpoints ?? []),
    };
    const { paused, pause } = this.state;
    const status = $("dbg-status");
    status.dataset.paused = String(paused);
    if (!paused) status.textContent = "running";
    else if (pause?.reason === "breakpoint") {
      status.textContent = `paused at ${pause.module}${pause.port ? `.${pause.port}` : ""} (breakpoint): ${short(pause.msg)}`;
    } else status.textContent = `paused${pause?.reason ? ` (${pause.reason})` : ""}`;
    $("dbg-continue").disabled = !paused;
    $("dbg-step").disabled = !paused;
    $("dbg-pause").disabled = paused;
    const here = paused && pause?.reason === "breakpoint" ? String(pause.module).split("/").pop() : null;
    for (const g of this.view.querySelectorAll("g[data-module]")) {
      const bp = this.breakpointAt(g.dataset.module);
      g.classList.toggle("breakpoint", Boolean(bp));
      g.classList.toggle("paused-here", g.dataset.module === here);
      g.dataset.breakpoint = bp ? (bp.condition ?? "always") : "";
      g.querySelector(".ff-bp-dot")?.classList.toggle("on", Boolean(bp));
    }
    if (paused) await this.showQueues(await api("GET", `${this.base}/queues`));
    else this.showQueues({});
  }

  /** What the last step did, on the graph and in #dbg-steps; null clears it. */
  showStep(step) {
    for (const el of this.view.querySelectorAll(".consumed, .emitted, .raised")) {
      el.classList.remove("consumed", "emitted", "raised");
    }
    for (const t of this.view.querySelectorAll(".ff-step")) t.remove();
    const list = $("dbg-steps");
    list.replaceChildren();
    if (!step) return;
    for (const [key, s] of Object.entries(step)) {
      const module = key.split("/").pop();
      const consumed = s.inputStates?.consumed ?? null;
      const emitted = Object.entries(s.outputStates ?? {}).filter(([, msgs]) => msgs.length);
      const errors = s.errors ?? [];
      if (!consumed && !emitted.length && !errors.length) continue;
      const g = this.view.querySelector(`g[data-module="${CSS.escape(module)}"]`);
      g?.classList.toggle("consumed", Boolean(consumed));
      g?.classList.toggle("emitted", emitted.length > 0);
      g?.classList.toggle("raised", errors.length > 0);
      for (const [port] of emitted) {
        this.view.querySelector(`g[data-output="${CSS.escape(`${module}.${port}`)}"]`)?.classList.add("emitted");
      }
      if (g) {
        const label = document.createElementNS(SVG, "text");
        label.setAttribute("class", "ff-step");
        label.setAttribute("x", "8");
        label.setAttribute("y", "-6");
        label.textContent = [consumed ? "in 1" : "", emitted.length ? `out ${emitted.reduce((n, [, m]) => n + m.length, 0)}` : "", errors.length ? `err ${errors.length}` : ""]
          .filter(Boolean)
          .join(" · ");
        g.append(label);
      }
      const li = document.createElement("li");
      li.dataset.module = module;
      const lines = [];
      if (consumed) lines.push(`consumed ${consumed.port}: ${JSON.stringify(consumed.msg)}`);
      for (const [port, msgs] of emitted) for (const msg of msgs) lines.push(`emitted ${port}: ${JSON.stringify(msg)}`);
      for (const e of errors) lines.push(`raised: ${e.error ?? e.message ?? JSON.stringify(e)}`);
      const head = document.createElement("b");
      head.textContent = module;
      const pre = document.createElement("pre");
      pre.textContent = lines.join("\n");
      li.append(head, pre);
      list.append(li);
    }
    if (!list.children.length) list.append(Object.assign(document.createElement("li"), { textContent: "nothing waited: the step did nothing" }));
  }

  /** The waiting messages per module and port; editable and droppable on a runner. */
  async showQueues(queues) {
    const key = JSON.stringify(queues);
    const box = $("dbg-queues");
    if (key === this.queuesKey) return;
    if (document.activeElement?.tagName === "TEXTAREA" && box.contains(document.activeElement)) return; // being edited
    this.queuesKey = key;
    box.replaceChildren();
    const editable = this.kind === "runner";
    for (const [module, entries] of Object.entries(queues ?? {})) {
      entries.forEach((entry, position) => {
        const index = entry.index ?? position;
        const li = document.createElement("li");
        li.dataset.module = module;
        li.dataset.index = String(index);
        li.dataset.port = entry.port ?? "";
        const label = document.createElement("span");
        label.textContent = `${module}.${entry.port ?? "?"} #${index}`;
        const text = document.createElement("textarea");
        text.rows = 2;
        text.value = JSON.stringify(entry.msg ?? entry, null, 0);
        text.readOnly = !editable;
        li.append(label, text);
        if (editable) {
          const path = `${this.base}/modules/${enc(module)}/queue/${index}`;
          const save = Object.assign(document.createElement("button"), { type: "button", textContent: "save" });
          save.dataset.action = "save";
          save.addEventListener("click", () =>
            this.act(async () => {
              let msg;
              try {
                msg = JSON.parse(text.value);
              } catch (error) {
                throw new Error(`${module} #${index}: not JSON: ${error.message}`);
              }
              await api("PUT", path, { msg });
              this.queuesKey = "";
            }),
          );
          const drop = Object.assign(document.createElement("button"), { type: "button", textContent: "drop" });
          drop.dataset.action = "drop";
          drop.addEventListener("click", () =>
            this.act(async () => {
              await api("DELETE", path);
              this.queuesKey = "";
            }),
          );
          li.append(save, drop);
        }
        box.append(li);
      });
    }
    if (!box.children.length) box.append(Object.assign(document.createElement("li"), { textContent: "no waiting messages" }));
  }
}
