"""The dispatcher: the runners it knows, their links and liveness, and the one object
the API and the runners' links talk to.

Owns: the SQLite store (opened here, closed when :meth:`Dispatcher.run` ends), the live
control links (runner id -> RPC peer), and the task that watches heartbeats. Flows are
kept by two components it holds, which share the store and the links:
``self.deployments`` (``deploy.py``: records, placement, deploying and moving flows; the
decision itself is ``placement.py``) and ``self.parts`` (``parts.py``: calls that reach
a flow's parts on their runners, relay). The flow methods here hand over to them.

Runners (statuses and their changes: ``status.py``):

- An operator asks for a one-time registration token (``issue_token``); a runner trades
  it for an id and a secret (``register``); the token then never works again, and
  expires after its TTL if unused.
- On each (re)connection the runner proves who it is (``hello``), reports hardware —
  everything the first time, then only what changed (``report_hardware``) — and says
  ``ready``. Heartbeats keep it ``ready``; :meth:`Dispatcher.run` marks a runner ``lost``
  when its last heartbeat is older than ``ttl`` (3 intervals by default), and its flows
  are placed again elsewhere. ``drain`` moves every flow off a runner, and it gets no
  new ones.

Runs (``runs.py``): ``self.run_book`` is the :class:`~fifoflow.runner.runs.book.RunBook`
in the dispatcher's store (the ``runs`` tables of schema version 2), started in the
dispatcher's nursery; its workers are the runners that are ready, linked and not
draining (a :class:`~.runs.RunnerWorker` each, added once it said ``runsHeld`` after
``ready``, removed when the link goes, the runner is lost, signs off or drains). Run
events go to
``self.run_events`` (an :class:`~fifoflow.runner.events.EventHub` the API streams).

Error handling: every refusal is a :class:`DispatcherError` (``errors.py``) whose
message says what to do; nothing a runner sends can stop the service.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..runner.events import EventHub
from ..runner.runs.book import RunBook
from ..runner.runs.errors import LeaseLost, RunNotFound, RunStateError
from ..runner.runs.store import RunStore
from .calls import forward_call
from .deploy import Deployments, flow_summary
from .errors import (
    DispatcherError,
    FlowPending,
    FlowUnknown,
    NotYourPart,
    RegistrationRefused,
    RunnerTimeout,
    RuntimeUnknown,
    UnknownRunner,
)
from .parts import FlowParts, known_flow
from .peers import PeerDirectory
from .runs import Resolver, RunnerWorkers, page_modules
from .sides import Coordinator
from .status import RunnerStatus
from .store import DispatcherStore

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..runner.rpc import RpcPeer

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "Dispatcher",
    "DispatcherConfig",
    # where the API has always imported them from; they live in errors.py and deploy.py
    "DispatcherError",
    "FlowPending",
    "FlowUnknown",
    "RegistrationRefused",
    "RunnerTimeout",
    "RuntimeUnknown",
    "UnknownRunner",
    "flow_summary",
]

SECONDS = 1.0

#: how long a runner has to answer a call of the dispatcher, unless configured
DEFAULT_CALL_TIMEOUT = 10 * SECONDS


@attrs.frozen
class DispatcherConfig:
    state_dir: Path
    #: how often runners send a heartbeat
    heartbeat: float = 5 * SECONDS
    #: a runner silent this long is lost (default: 3 heartbeats)
    ttl: float | None = None
    #: how long an unused registration token stays valid
    token_ttl: float = 3600 * SECONDS
    #: how long a runner has to answer a call (deploy, release, inject, state, ...):
    #: a deploy unanswered by then is a refusal, any other call a RunnerTimeout
    call_timeout: float = DEFAULT_CALL_TIMEOUT

    @property
    def runner_ttl(self) -> float:
        return self.ttl if self.ttl is not None else 3 * self.heartbeat


log = logging.getLogger("fifoflow.dispatcher")


class Dispatcher:
    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.store = DispatcherStore.open(config.state_dir)
        #: runner id -> the RPC peer of its live control link
        self.links: dict[str, RpcPeer] = {}
        #: runner id -> journaled messages not handled yet, as its last heartbeat said
        self.journaled: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        #: why the backend cannot start runners right now (a failed pull, say): added to
        #: the reason of flows that wait for a runner
        self.backend_problem: str | None = None
        self.deployments = Deployments(
            self.store, self.links, lambda: self.backend_problem, config.call_timeout
        )
        self.parts = FlowParts(self.store, self.links, config.call_timeout)
        #: events of watched flows (``watch_flow``): ``wire``, ``log``, ``error``, ``flow``
        #: from their parts' runners, and ``wire`` for what is relayed here
        self.flow_events = EventHub()
        self.parts.events = self.flow_events
        self.deployments.watched = self.parts.watched
        #: runner-to-runner relay: endpoints and credentials (dispatcher/peers.py)
        self.peers = PeerDirectory(config.state_dir)
        self.deployments.peers = self.peers
        #: the container backend, when the dispatcher runs one (for its API)
        self.backend: Any = None
        #: the web pages' client runners (dispatcher/clients.py), when served
        self.clients: Any = None
        self.started_at = time.time()
        #: run events (``{"kind": "run", ...}``, ``{"kind": "run-progress", ...}``)
        self.run_events = EventHub()
        self.run_store = RunStore(self.store.db)
        self.run_book = RunBook(self.run_store, Resolver(self.store), hub=self.run_events)
        #: runners that said ``runsHeld`` on their current link (they take runs)
        self._run_takers: set[str] = set()
        self.run_workers = RunnerWorkers(
            self.store,
            self.links,
            lambda: self.config.call_timeout,
            held=self._runs_on,
        )
        #: runs with browser modules: their sides (``sides.py``)
        self.run_sides = Coordinator(self.run_book, self.links, lambda: self.config.call_timeout)
        self.run_workers.coordinator = self.run_sides
        self.run_workers.pages = self.run_pages
        #: set (and replaced) whenever a runner becomes ready: wait on ``runner_ready_event``
        self._ready_event = trio.Event()
        try:
            self.version = metadata.version("fifoflow")
        except metadata.PackageNotFoundError:
            self.version = "0+unknown"

    async def run(
        self, *, task_status: trio.TaskStatus[Dispatcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch heartbeats and place flows until cancelled."""
        # The dispatcher's own downtime is no sign that a runner died: every runner it
        # knew as live gets a full TTL from now to reconnect before it is lost (else
        # its flows would be placed again from snapshots older than what they ran).
        self.store.refresh_live_runners(time.time())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.run_book.run)
                await nursery.start(self.run_sides.run)
                task_status.started(self)
                while True:
                    await trio.sleep(min(self.config.heartbeat, self.config.runner_ttl) / 2)
                    for runner_id in self.check_liveness():
                        self.displace(runner_id)
        finally:
            self._nursery = None
            self.store.close()

    # ------------------------------------------------------------------ operators

    def issue_token(self, ttl: float | None = None) -> dict[str, Any]:
        token = "ffreg_" + secrets.token_urlsafe(24)
        expires = self.store.add_token(token, ttl if ttl is not None else self.config.token_ttl)
        self.store.add_event(None, "token", {"expires": expires})
        return {"token": token, "expires": expires}

    def runners(self) -> list[dict[str, Any]]:
        return [
            {**runner, "journaled": self.journaled.get(runner["id"], 0)}
            for runner in self.store.runners()
        ]

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.store.events(since)

    def health(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for runner in self.store.runners():
            counts[runner["status"]] = counts.get(runner["status"], 0) + 1
        return {
            "status": "ok",
            "version": self.version,
            "uptime": round(time.time() - self.started_at, 3),
            "runners": counts,
            "heartbeat": self.config.heartbeat,
            "ttl": self.config.runner_ttl,
        }

    # ------------------------------------------------------------------ runners

    def register(self, token: str, name: str) -> dict[str, str]:
        runner_id = "r-" + uuid.uuid4().hex[:12]
        why = self.store.use_token(token, runner_id)
        if why is not None:
            raise RegistrationRefused(
                f"{why}; ask the operator for a new one: fifoflow dispatcher token"
            )
        secret = secrets.token_urlsafe(32)
        self.store.add_runner(runner_id, secret, name)
        self.store.add_event(runner_id, "registered", {"name": name})
        return {"runnerId": runner_id, "secret": secret}

    def hello(self, runner_id: str, secret: str, version: str | None) -> dict[str, Any]:
        if not self.store.check_secret(runner_id, secret):
            raise UnknownRunner(
                f"runner {runner_id!r} is not known here or its secret is wrong; "
                "register it again with a new token (remove its dispatcher.json)"
            )
        previous = self.store.runner(runner_id)
        assert previous is not None
        self.store.update_runner(runner_id, status=RunnerStatus.STARTING, last_seen=time.time())
        self.store.add_event(
            runner_id, "connected", {"version": version, "was": previous["status"]}
        )
        return {"heartbeat": self.config.heartbeat, "ttl": self.config.runner_ttl}

    def report_hardware(
        self, runner_id: str, full: dict[str, Any] | None, changes: dict[str, Any] | None
    ) -> dict[str, Any]:
        runner = self._runner(runner_id)
        hardware = dict(full) if full is not None else {**runner["hardware"], **(changes or {})}
        self.store.update_runner(runner_id, hardware=hardware)
        detail = {"full": full is not None, "changed": sorted((full or changes or {}).keys())}
        if changes:
            detail["changes"] = changes
        self.store.add_event(runner_id, "hardware", detail)
        if "maxRuns" in detail["changed"]:
            self.run_book.kick()
        return hardware

    def ready(self, runner_id: str) -> None:
        self._runner(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.READY, last_seen=time.time())
        self.store.add_event(runner_id, "ready", {})
        self._ready_event.set()
        self._ready_event = trio.Event()

    def runner_ready_event(self) -> trio.Event:
        """An event set the next time a runner says ready."""
        return self._ready_event

    def heartbeat(self, runner_id: str, *, journaled: int = 0) -> None:
        if journaled:
            self.journaled[runner_id] = journaled
        else:
            self.journaled.pop(runner_id, None)
        if self.store.touch_runner(runner_id, time.time()):
            return
        runner = self._runner(runner_id)
        fields: dict[str, Any] = {"last_seen": time.time()}
        back = runner["status"] == RunnerStatus.LOST
        if back:
            fields["status"] = RunnerStatus.READY
            self.store.add_event(runner_id, "back", {})
        self.store.update_runner(runner_id, **fields)
        if back:
            self._runs_worker(runner_id)

    def _journal_loss(self, runner_id: str) -> dict[str, Any]:
        """What a lost runner's journals held at its last heartbeat (runner/JOURNAL.md):
        handled again if it comes back on its state dir, lost if it never does."""
        journaled = self.journaled.get(runner_id, 0)
        if not journaled:
            return {}
        log.warning(
            "runner %s is lost with %d journaled message(s) in its state dir: they are "
            "handled if it comes back on that state dir, lost if it never does",
            runner_id,
            journaled,
        )
        return {"journaled": journaled}

    def forget_runner(self, runner_id: str) -> None:
        """Delete a runner gone for good (a web page's runner, pruned by
        ``clients.py``); it holds no placement any more (it was displaced)."""
        self.store.remove_runner(runner_id)
        self.store.add_event(runner_id, "pruned", {})

    def sign_off(self, runner_id: str) -> None:
        self._runner(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.SIGNED_OFF, last_seen=time.time())
        self.store.add_event(runner_id, "signed-off", {})
        self.run_book.remove_worker(runner_id)

    def check_liveness(self) -> list[str]:
        """Mark runners whose last heartbeat is older than the TTL as lost."""
        now = time.time()
        lost = []
        for runner in self.store.stale_runners(now - self.config.runner_ttl):
            self.store.update_runner(runner["id"], status=RunnerStatus.LOST)
            self.store.add_event(
                runner["id"],
                "lost",
                {
                    "silentFor": round(now - (runner["lastSeen"] or now), 3),
                    **self._journal_loss(runner["id"]),
                },
            )
            lost.append(runner["id"])
            self.run_book.remove_worker(runner["id"])
        return lost

    def runner_gone(self, runner_id: str, why: str) -> None:
        """A backend saw the runner's process or container end: lost now, without
        waiting for its heartbeats to run out; its flows are placed again."""
        runner = self.store.runner(runner_id)
        if runner is None or runner["status"] in (
            RunnerStatus.LOST,
            RunnerStatus.SIGNED_OFF,
            RunnerStatus.DRAINED,
        ):
            return
        self.store.update_runner(runner_id, status=RunnerStatus.LOST)
        self.store.add_event(runner_id, "lost", {"why": why, **self._journal_loss(runner_id)})
        self.run_book.remove_worker(runner_id)
        self.displace(runner_id)

    # ------------------------------------------------------------------ links

    def attach(self, runner_id: str, peer: RpcPeer) -> None:
        self.links[runner_id] = peer

    def detach(self, runner_id: str, peer: RpcPeer) -> None:
        if self.links.get(runner_id) is peer:
            del self.links[runner_id]
            self._run_takers.discard(runner_id)
            self.run_book.remove_worker(runner_id)
            self.page_gone(runner_id)

    # ------------------------------------------------------------------ runs (runs.py)

    def _runs_worker(self, runner_id: str) -> None:
        """The runner is a worker of the run book while it is ready, linked, and has
        said what runs it holds on this link (``runsHeld``: only then does it take
        runs; a runner without an executor never says it)."""
        if runner_id in self._run_takers and self.run_workers.eligible(runner_id):
            self.run_book.add_worker(self.run_workers.worker(runner_id))
            self.run_book.kick()

    def page_ready(self) -> None:
        """A page can take the browser part of runs now (its runner linked, or the page
        came back): runs that waited for a page are offered again at once."""
        self.run_book.reconsider(lambda document: bool(page_modules(document)))

    def run_pages(self) -> list[tuple[str, str]]:
        """The pages that can be offered the browser part of a run now: connected, with
        a ready and linked runner; ``(page id, runner id)``, the least busy first. Each
        page's client runner decides (one that connected with ``runs: false`` refuses)."""
        clients = self.clients
        if clients is None:
            return []
        found = []
        for page, client in sorted(clients.pages.items()):
            rid = client.runner_id
            if client.ended.is_set() or not client.connections:
                continue
            if rid is None or rid not in self.links:
                continue
            record = self.store.runner(rid)
            if record is None or record["status"] != RunnerStatus.READY:
                continue
            found.append((client.running_runs(), page, rid))
        return [(page, rid) for _, page, rid in sorted(found)]

    def page_gone(self, runner_id: str | None) -> None:
        """A page went away (its socket, or its runner's link): the attempts it held a
        side of are given back (queued again, attempt + 1)."""
        if runner_id is None:
            return
        for c in self.run_sides.runner_gone(runner_id):
            try:
                self.run_book.give_back(
                    c.server, c.run_id, c.attempt, f"the page side of attempt {c.attempt} went away"
                )
            except (LeaseLost, RunStateError):
                pass

    def _runs_on(self, runner_id: str) -> int:
        """Attempts the book has running on the runner (its ``free`` is what is left of
        the ``maxRuns`` it announced)."""
        # The book counts its offers not answered yet apart: they are running in the
        # store already, so they are left out here.
        pending = self.run_book.offering(runner_id)
        running = sum(1 for rec in self.run_store.running() if rec.worker == runner_id)
        return max(0, running - pending)

    def _attempt_is(self, runner_id: str, run_id: str, attempt: int) -> str | None:
        """None when the run's ``attempt`` was given to the runner; else the field at
        fault and why (for :meth:`check_attempt`)."""
        try:
            view = self.run_book.get(run_id)
        except RunNotFound:
            return "runId"
        if view.get("attempt") == attempt and view.get("worker") == runner_id:
            return None
        for past in view.get("attempts") or ():
            if past.get("attempt") == attempt and past.get("worker") == runner_id:
                return None
        return "attempt"

    def check_attempt(self, runner_id: str, call: str, run_id: str, attempt: int) -> None:
        """Refuse a runner's call about a run attempt that was never its own (another
        runner's attempt, a run it never held): recorded (``refused-call``), raised as
        :class:`NotYourPart`. An attempt that was its own but no longer counts is the
        book's to answer (``LeaseLost``)."""
        field = self._attempt_is(runner_id, run_id, attempt)
        if field is None:
            return
        why = f"attempt {attempt} of run {run_id!r} was not given to this runner"
        self.store.add_event(
            runner_id, "refused-call", {"call": call, "run": run_id, "field": field, "reason": why}
        )
        raise NotYourPart(f"{call}: {why}", field=field)

    def runs_held(self, runner_id: str, held: list[dict[str, Any]]) -> list[list[Any]]:
        """A runner (re)linked says what it holds: the book reconciles its own attempts;
        the answer lists the attempts it must stop (no longer counting, or never its
        own: those are recorded as ``refused-call`` events)."""
        own, stop = [], []
        for item in held:
            if self.run_sides.is_side(runner_id, item["runId"], item["attempt"]):
                continue  # a page side of a live attempt: the coordination settles it
            if self._attempt_is(runner_id, item["runId"], item["attempt"]) is None:
                own.append(item)
                continue
            self.store.add_event(
                runner_id,
                "refused-call",
                {
                    "call": "runsHeld",
                    "run": item["runId"],
                    "field": "runs",
                    "reason": f"attempt {item['attempt']} was not given to this runner",
                },
            )
            stop.append([item["runId"], item["attempt"]])
        stop += [[run_id, attempt] for run_id, attempt in self.run_book.reconcile(runner_id, own)]
        self._run_takers.add(runner_id)
        self._runs_worker(runner_id)
        return stop

    # ------------------------------------------------------------------ runtimes

    def runtimes(self) -> list[dict[str, Any]]:
        """listRuntimes across runners: each runtime some runner reports, and which
        ready runners have it."""
        found: dict[str, list[str]] = {}
        for r in self.store.runners():
            for runtime in r["hardware"].get("runtimes", ()):
                ids = found.setdefault(runtime, [])
                if r["status"] == RunnerStatus.READY:
                    ids.append(r["id"])
        return [{"id": rt, "runners": ids} for rt, ids in sorted(found.items())]

    def flows_for_runtime(self, runtime_id: str) -> list[str]:
        """listFlowsForRuntime across runners: deployed flows with a module in it."""
        known = {r["id"] for r in self.runtimes()}
        if runtime_id not in known:
            raise RuntimeUnknown(
                f"no runner reports runtime {runtime_id!r} (known: {', '.join(sorted(known)) or 'none'})"
            )
        return [
            f["id"]
            for f in self.store.flows()
            if any(m["runtime"] == runtime_id for m in f["document"]["modules"])
        ]

    # ------------------------------------------------------------------ flows (deploy.py)

    def flows(self) -> list[dict[str, Any]]:
        return self.deployments.summaries()

    def flow(self, flow_id: str) -> dict[str, Any]:
        return known_flow(self.store, flow_id)

    async def deploy(
        self, document: dict[str, Any], states: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.deployments.deploy(document, states)

    async def remove(self, flow_id: str) -> None:
        await self.deployments.remove(flow_id)
        self.parts.watched.discard(flow_id)

    async def runner_ready(self, runner_id: str, flows: list[dict[str, Any]]) -> None:
        """A runner said ready: remove flows it holds that run elsewhere now, then
        place what is pending."""
        await self.deployments.runner_ready(runner_id, flows)

    def snapshot(self, runner_id: str, flow_id: str, states: dict[str, Any]) -> None:
        self.check_part(runner_id, "snapshot", flow_id, modules=states, field="states")
        self.deployments.snapshot(runner_id, flow_id, states)

    def check_part(
        self,
        runner_id: str,
        call: str,
        flow_id: str,
        modules: Iterable[str] = (),
        field: str = "moduleId",
    ) -> None:
        """Refuse a runner's call about a flow part that is not its own: the flow must
        have a part on it (placed there, or being handed over by it in a drain), and
        every module the call speaks for must be in that part. A refusal is recorded
        (``refused-call``) and raised as :class:`NotYourPart`."""
        held = self.deployments.held(runner_id, flow_id)
        if not held:
            why, at = f"no part of flow {flow_id!r} is placed on this runner", "flowId"
        else:
            foreign = sorted(set(modules) - held)
            if not foreign:
                return
            why = (
                f"module(s) {', '.join(map(repr, foreign[:5]))} of flow {flow_id!r} are not"
                f" placed on this runner (its modules: {', '.join(sorted(held))})"
            )
            at = field
        self.store.add_event(
            runner_id, "refused-call", {"call": call, "flow": flow_id, "field": at, "reason": why}
        )
        raise NotYourPart(f"{call}: {why}", field=at)

    def check_page_inject(self, runner_id: str | None, page: str, flow_id: str) -> None:
        """Refuse a page's inject into a flow none of whose modules are placed on the
        page's own runner: a page's client token reaches only the flows it runs. A
        refusal is recorded (``refused-inject``) and raised as :class:`NotYourPart`
        naming the field ``flow`` (an unknown flow gets the same answer: a page learns
        nothing about flows that are not its own)."""
        if runner_id is not None and self.deployments.held(runner_id, flow_id):
            return
        why = (
            f"no flow {flow_id!r} has modules on this page (a page injects only into"
            " flows whose browser modules it runs)"
        )
        self.store.add_event(
            runner_id,
            "refused-inject",
            {"page": page, "flow": flow_id, "field": "flow", "reason": why},
        )
        raise NotYourPart(why, field="flow")

    def displace(self, runner_id: str) -> None:
        """The runner is gone: its modules go back to pending and are placed again."""
        self.deployments.displace(runner_id)
        if self._nursery is not None:
            self._nursery.start_soon(self.deployments.place_pending)

    async def drain(self, runner_id: str) -> list[str]:
        """Move every flow off a runner, with its state and the messages that waited in
        it (nothing lost), and stop placing flows there. Returns the flows moved."""
        self._runner(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.DRAINING)
        self.store.add_event(runner_id, "draining", {})
        self.run_book.remove_worker(runner_id)
        moved = await self.deployments.move_off(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.DRAINED)
        self.store.add_event(runner_id, "drained", {"flows": moved})
        return moved

    # ------------------------------------------------------------------ flow parts (parts.py)

    # The Runner API for deployed flows: each call goes to the runner(s) holding the
    # flow's parts (parts.py says which, and how answers are merged).

    async def start_flow(self, flow_id: str) -> Any:
        return await self.parts.forward(flow_id, "start")

    async def stop_flow(self, flow_id: str) -> Any:
        return await self.parts.forward(flow_id, "stop")

    async def inject(self, flow_id: str, module_id: str, port: str, msgs: list[Any]) -> Any:
        return await self.parts.forward(flow_id, "inject", moduleId=module_id, port=port, msgs=msgs)

    async def module_state(self, flow_id: str, module_id: str) -> Any:
        return await self.parts.forward(flow_id, "state", moduleId=module_id)

    async def set_breakpoint(self, flow_id: str, module_id: str, condition: str | None) -> Any:
        return await self.parts.debug(flow_id, "break", moduleId=module_id, condition=condition)

    async def remove_breakpoint(self, flow_id: str, module_id: str) -> bool:
        return bool(await self.parts.debug(flow_id, "unbreak", moduleId=module_id))

    async def pause_flow(self, flow_id: str) -> Any:
        return await self.parts.debug(flow_id, "pause")

    async def continue_flow(self, flow_id: str) -> Any:
        return await self.parts.debug(flow_id, "continue")

    async def step_flow(self, flow_id: str) -> Any:
        return await self.parts.debug(flow_id, "step")

    async def debug_state(self, flow_id: str) -> Any:
        return await self.parts.debug(flow_id, "debug")

    async def queues(self, flow_id: str) -> Any:
        return await self.parts.debug(flow_id, "queues")

    async def watch_flow(self, flow_id: str, watched: bool = True) -> None:
        """Have every part of the flow send its events (wires, logs, errors, status) to
        ``flow_events`` while ``watched``: each part's runner watches it
        (``Runner.watch_flow``: its wires pass through the runner, as when debugged) and
        forwards them over its link (``flowEvent``); wires relayed here are published
        too. Parts deployed later (an update, a move) are deployed watched."""
        known_flow(self.store, flow_id)
        if watched:
            self.parts.watched.add(flow_id)
        else:
            self.parts.watched.discard(flow_id)
        await self.parts.each_part(flow_id, "watch", watched=watched)

    def flow_event(self, runner_id: str, flow_id: str, event: dict[str, Any]) -> None:
        """An event of a watched flow's part on ``runner_id`` (its link's ``flowEvent``)."""
        module = event.get("module")
        modules = (module,) if isinstance(module, str) else ()
        self.check_part(runner_id, "flowEvent", flow_id, modules=modules, field="module")
        if flow_id in self.parts.watched and isinstance(event.get("kind"), str):
            self.flow_events.publish({**event, "flow": flow_id, "runner": runner_id})

    async def describe_flow(self, flow_id: str) -> dict[str, Any]:
        """The flow's status over its parts: ``running`` when every part runs,
        ``pending`` the messages waiting in all of them; ``parts`` each one's describe."""
        parts = await self.parts.each_part(flow_id, "describe")
        statuses = {p.get("status") for p in parts.values()}
        status = statuses.pop() if len(statuses) == 1 else "mixed"
        return {
            "id": flow_id,
            "status": status,
            "pending": sum(int(p.get("pending") or 0) for p in parts.values()),
            "parts": parts,
        }

    async def flow_stats(self, flow_id: str) -> dict[str, Any]:
        """The flow's live counters merged over its runners (``FlowParts.stats``)."""
        return await self.parts.stats(flow_id)

    async def paused(self, runner_id: str, flow_id: str, info: dict[str, Any]) -> None:
        """A part paused: the others pause too. The caller checks first that the part
        is the runner's (:meth:`check_part`), while the link still waits for it."""
        await self.parts.paused(runner_id, flow_id, info)

    async def relay(
        self,
        runner_id: str,
        flow_id: str,
        module: str,
        port: str,
        msgs: list[Any],
        to: tuple[str, ...] | None = None,
    ) -> None:
        """Messages the runner's part emitted on a wire to another runner (``to``: to
        that target only)."""
        self.check_part(runner_id, "relay", flow_id, modules=(module,))
        await self.parts.relay(flow_id, module, port, msgs, to=to)

    async def logs(
        self, flow_id: str | None = None, runner_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Log lines of a flow (from every runner holding a part), or of a runner."""
        if runner_id is not None:
            self._runner(runner_id)
            peer = self.links.get(runner_id)
            if peer is None:
                raise FlowPending(f"runner {runner_id!r} is not connected")
            return await forward_call(
                peer, runner_id, self.config.call_timeout, "logs", limit=limit
            )
        assert flow_id is not None
        return await self.parts.logs(flow_id, limit)

    def _runner(self, runner_id: str) -> dict[str, Any]:
        runner = self.store.runner(runner_id)
        if runner is None:
            raise UnknownRunner(f"no runner {runner_id!r}")
        return runner
