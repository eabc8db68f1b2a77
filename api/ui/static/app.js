// app.js — the page at /ui/: asks for the token, asks the server what it is (runner or
// dispatcher: GET /health's `server`), lists flows (and, on a dispatcher, runners and
// runs), and draws one flow's graph with live counters polled once a second
// (GET /flows/{id}/stats on a runner; GET /flows/{id} and /queues on a dispatcher).
// A client of the public API only: what it does, a script can do.

import { api, forgetToken, setToken, takeToken, Unauthorized } from "./api.js";
import { Debugger } from "./debug.js";
import { drawGraph, Live } from "./live.js";
import { closePanel, setupPanel } from "./panel.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;

const state = {
  kind: null, // "runner" | "dispatcher"
  timer: null,
  previous: new Map(), // flow id -> {time, handled} for messages/s in the list
  graph: null, // the open graph: {id, live}
};

function showLogin(message, isError = false) {
  stopPolling();
  for (const id of ["flows", "runners", "runs", "graph"]) $(id).hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-message").textContent =
    message ?? "This page needs the server's token (the file 'token' in its state dir).";
  $("login-message").classList.toggle("error", isError);
  $("token").value = "";
  $("token").focus();
}

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
  state.graph?.live.stop();
  state.graph?.debug?.stop();
  state.graph = null;
  closePanel();
}

/** Run `fn`; a 401 sends the user back to the token form with the server's message. */
async function guarded(fn) {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof Unauthorized) {
      forgetToken();
      showLogin(`The token was refused: ${error.message}. Enter the right one.`, true);
      return undefined;
    }
    throw error;
  }
}

async function start() {
  const health = await guarded(() => api("GET", "/health"));
  if (health === undefined) return;
  state.kind = health.server ?? ("runners" in health ? "dispatcher" : "runner");
  $("server").textContent = `${state.kind} ${health.version}`;
  $("server").dataset.kind = state.kind;
  document.body.dataset.server = state.kind;
  setupPanel(state.kind);
  $("login").hidden = true;
  $("logout").hidden = false;
  showLists();
}

function showLists() {
  stopPolling();
  $("graph").hidden = true;
  $("flows").hidden = false;
  $("runs").hidden = false;
  $("runners").hidden = state.kind !== "dispatcher";
  const tick = async () => {
    try {
      await guarded(refreshLists);
    } catch (error) {
      say(String(error.message ?? error));
    }
    if (!$("flows").hidden) state.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function button(td, label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = label;
  b.addEventListener("click", async (event) => {
    event.stopPropagation();
    try {
      await guarded(action);
      say("", "ok");
    } catch (error) {
      say(String(error.message ?? error));
    }
  });
  td.append(b);
}

async function refreshLists() {
  const flows = await api("GET", "/flows");
  const body = $("flow-table").tBodies[0];
  body.replaceChildren();
  const now = performance.now() / 1000;
  for (const flow of flows) {
    const row = body.insertRow();
    row.className = "clickable";
    row.dataset.flow = flow.id;
    row.addEventListener("click", () => openGraph(flow.id));
    cell(row, flow.id);
    cell(row, flow.status, `status-${flow.status}`);
    if (state.kind === "runner") {
      const handled = Object.values(flow.runtimes ?? {}).reduce((n, rt) => n + (rt.delivered ?? 0), 0);
      const before = state.previous.get(flow.id);
      state.previous.set(flow.id, { time: now, handled });
      const rate = before && now > before.time ? (handled - before.handled) / (now - before.time) : null;
      cell(row, String(flow.revision));
      cell(row, Object.keys(flow.runtimes ?? {}).join(", "));
      cell(row, rate === null ? "…" : rate.toFixed(1), "rate");
      cell(row, String(flow.errors));
    } else {
      cell(row, flow.updated ? new Date(flow.updated * 1000).toLocaleTimeString() : "");
      cell(row, [...new Set(Object.values(flow.placement ?? {}))].join(", "));
      cell(row, "", "rate");
      cell(row, flow.reason ?? "");
    }
    const actions = cell(row, "");
    button(actions, "start", () => api("POST", `/flows/${encodeURIComponent(flow.id)}/start`));
    button(actions, "stop", () => api("POST", `/flows/${encodeURIComponent(flow.id)}/stop`));
    button(actions, "remove", async () => {
      if (confirm(`Remove flow ${flow.id} (and its state)?`)) await api("DELETE", `/flows/${encodeURIComponent(flow.id)}`);
    });
  }
  if (state.kind === "dispatcher") await refreshRunners(flows);
  await refreshRuns();
}

async function refreshRunners(flows) {
  const runners = await api("GET", "/runners");
  const holds = new Map();
  for (const flow of flows) {
    for (const [module, runner] of Object.entries(flow.placement ?? {})) {
      if (!holds.has(runner)) holds.set(runner, new Map());
      const parts = holds.get(runner);
      parts.set(flow.id, [...(parts.get(flow.id) ?? []), module]);
    }
  }
  const body = $("runner-table").tBodies[0];
  body.replaceChildren();
  for (const runner of runners) {
    const row = body.insertRow();
    row.dataset.runner = runner.id;
    const hw = runner.hardware ?? {};
    const cap = hw.capacity ?? {};
    cell(row, `${runner.name} (${runner.id})`);
    cell(row, runner.status, `status-${runner.status}`);
    cell(row, runner.lastSeen ? `${Math.max(0, Date.now() / 1000 - runner.lastSeen).toFixed(1)} s ago` : "never");
    cell(row, `${cap.cpus ?? hw.cpus ?? "?"} cpus, ${cap.memory ? (cap.memory / 2 ** 30).toFixed(1) : hw.memoryGiB ?? "?"} GiB`);
    cell(row, Object.entries(hw.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(" "));
    cell(row, [...(holds.get(runner.id) ?? new Map())].map(([f, ms]) => `${f}: ${ms.join(", ")}`).join("; "));
  }
}

async function refreshRuns() {
  let runs;
  try {
    runs = await api("GET", "/runs?limit=50");
  } catch (error) {
    if (error.status === 409) {
      // a runner linked to a dispatcher: its runs are there
      $("runs").hidden = true;
      return;
    }
    throw error;
  }
  const list = Array.isArray(runs) ? runs : (runs?.runs ?? []);
  const body = $("run-table").tBodies[0];
  body.replaceChildren();
  for (const run of list) {
    const row = body.insertRow();
    row.className = "clickable";
    row.dataset.run = run.id;
    // the book's view (runner/runs/book.py): startedAt/endedAt, seconds since the epoch
    const started = run.startedAt;
    const ended = run.endedAt ?? Date.now() / 1000;
    cell(row, run.id);
    cell(row, run.flow);
    cell(row, run.state);
    cell(row, String(run.attempt ?? ""));
    cell(row, started ? `${(ended - started).toFixed(1)} s` : "");
    row.addEventListener("click", async () => {
      const view = await guarded(() => api("GET", `/runs/${encodeURIComponent(run.id)}`));
      if (!view) return;
      $("run-events").dataset.run = run.id;
      $("run-events").textContent = (view.events ?? []).map(eventLine).join("\n");
    });
  }
}

/** One line of a run's events: time, state, attempt, worker, reason. */
function eventLine(e) {
  const time = e.time ? new Date(e.time * 1000).toLocaleTimeString() : "";
  return [time, e.state, `attempt ${e.attempt}`, e.worker ?? "", e.reason ?? ""].filter(Boolean).join("  ");
}

/** The flows list's message: "ok" (what was done) or "error" (the server's refusal). */
function say(text, kind = "error") {
  $("flows-message").textContent = text;
  $("flows-message").dataset.kind = kind;
}

async function openGraph(flowId) {
  stopPolling();
  for (const id of ["flows", "runners", "runs"]) $(id).hidden = true;
  $("graph").hidden = false;
  $("graph-title").textContent = flowId;
  const detail = await guarded(() => api("GET", `/flows/${encodeURIComponent(flowId)}`));
  if (!detail) return;
  const view = $("graph-view");
  await drawGraph(view, detail.flow);
  const live = new Live(view, flowId, state.kind, guarded);
  const debug = new Debugger(view, flowId, state.kind, guarded);
  state.graph = { id: flowId, live, debug };
  live.start(POLL_MS);
  debug.start(POLL_MS);
}

async function addFlowFile(file) {
  const text = await file.text();
  let flow;
  try {
    flow = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file.name} is not JSON: ${error.message}`);
  }
  const id = flow.id ?? file.name.replace(/\.json$/, "");
  await api("PUT", `/flows/${encodeURIComponent(id)}`, { ...flow, id });
  return id;
}

function wire() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    start().catch((error) => showLogin(String(error.message ?? error), true));
  });
  $("logout").addEventListener("click", () => {
    forgetToken();
    showLogin();
  });
  $("graph-close").addEventListener("click", showLists);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    for (const file of event.dataTransfer.files) {
      try {
        const id = await guarded(() => addFlowFile(file));
        if (id) say(`added ${id}`, "ok");
      } catch (error) {
        const message = String(error.message ?? error);
        say(message.startsWith(file.name) ? message : `${file.name}: ${message}`);
      }
    }
  });
}

wire();
if (takeToken()) start().catch((error) => showLogin(String(error.message ?? error), true));
else showLogin();
