"""The runner's control link to a dispatcher (the runner's side of its lifecycle).

1. Registration, once: a one-time token from the operator is traded for a runner id and a
   secret, kept in ``<state dir>/dispatcher.json`` (mode 0600) with the dispatcher's URL.
   A refused token is fatal (:class:`LinkRefused`): ``fifoflow runner serve`` exits 2.
2. Every (re)connection: ``hello`` with the id and secret (a refusal is fatal too), the
   hardware report — all of it the first time, then only what changed since the copy
   cached in ``<state dir>/hardware.json`` — and ``ready``.
3. Heartbeats every interval the dispatcher asks for. A dropped link is reopened with
   exponential backoff and jitter (0.2 s doubling up to 10 s, and up to a third of the
   TTL the dispatcher last gave in ``hello``: a dispatcher that restarts gives each
   runner one TTL to come back before it is lost, so a runner tries at least twice in
   it), then step 2 again.
4. Calls from the dispatcher, over the same link (``runner/rpc.py``): ``deploy`` (a
   flow document, optional module states and queued messages, start), ``release``
   (stop gracefully, hand over state and queued messages, forget), ``start``, ``stop``,
   ``remove``, ``break``, ``unbreak``, ``pause``, ``continue``, ``step``, ``debug``,
   ``queues``, ``logs``, ``inject``, ``state``, ``describe``, ``flowStats`` (the
   counters of ``FlowRun.stats``, for the dispatcher's live graph); and the runner sends ``snapshot`` notifications
   of each checkpointed flow's module states, so that a flow placed again elsewhere
   resumes from them.
5. :meth:`DispatcherLink.sign_off` on shutdown.
6. Runs (``runner/runs/RUNS.md``): the dispatcher offers attempts (``offerRun``: the
   runner's :class:`~.runs.executor.RunExecutor` accepts, or refuses with
   ``run_refused`` and the reason) and cancels them (``cancelRun``); the executor
   reports through :class:`LinkReporter` (``runProgress``, ``runResult``). After every
   ``ready`` the runner says what it holds (``runsHeld``), stops the attempts the answer
   lists, and re-sends the results it kept. While the link is down the executor takes
   no new runs (``reachable`` is False): a runner that cannot report its working status
   does not start runs. SIGTERM: :meth:`DispatcherLink.give_back` returns the attempts
   the grace period did not see finish (``runGiveBack``).

TLS: an ``https://`` dispatcher is reached over ``wss://`` and verified with the system's
CAs, a CA file (``ca``), or a pinned certificate fingerprint (``fingerprint``), see
:mod:`.tls`. A dispatcher that fails that check is never retried: :class:`LinkRefused`
says why, before any token or secret was sent.

Admission: the runner offers a capacity (CPUs and memory; the machine's unless
``--cpus``/``--memory`` say less) in its hardware report, and ``deploy`` refuses a part
(:class:`Refused`, code ``refused``) that needs a runtime it does not have, more CPUs or
memory than its flows leave of that capacity (modules reserve what their
``placement.cpus``/``placement.memory`` say), or more memory than the machine has free
right now, saying which limit and by how much.

Resource handling: the WebSocket and its tasks live inside :meth:`DispatcherLink.run`.
"""

from __future__ import annotations

import platform
import random
import shutil
import socket
import urllib.parse
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import psutil
import trio
import trio_websocket

from ..flows import parse_flow
from ..flows.resources import format_size
from .errors import RunnerError, first
from .events import EventKind
from .peers import Batch, PeerLinks, PeerServer, Route
from .rpc import LinkClosed, RemoteError, RpcPeer
from .runs.errors import RunRefused
from .runs.model import RunOffer, RunProgress, RunResult
from .store import atomic_write
from .tls import client_context, untrusted

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator
    from pathlib import Path

    from .service import Runner

__all__ = ["DispatcherLink", "LinkRefused", "LinkReporter", "Refused", "collect_hardware"]

#: longest a run report (progress, result, give back) waits for the dispatcher's answer
REPORT_SECONDS = 10.0

#: the longest wait between two tries to reopen the control link
RECONNECT_MAX = 10.0
#: the shortest such cap, however short the dispatcher's TTL
RECONNECT_MIN = 0.2


def reconnect_cap(ttl: Any) -> float:
    """The longest wait between two tries to reopen a link to a dispatcher whose TTL
    is ``ttl`` (seconds; None or nonsense: not known): a third of it, so that even with
    +50% jitter a runner tries twice within the one TTL a restarted dispatcher gives
    it before it is lost."""
    try:
        ttl = float(ttl)
    except (TypeError, ValueError):
        return RECONNECT_MAX
    if not ttl > 0:
        return RECONNECT_MAX
    return max(RECONNECT_MIN, min(RECONNECT_MAX, ttl / 3))


#: what a report call may meet when the link is down or drops meanwhile
_DOWN = (
    LinkClosed,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio_websocket.ConnectionClosed,
    trio.TooSlowError,
)

GiB = 1024**3


class LinkRefused(RunnerError):
    """The dispatcher refused this runner (bad token, unknown identity)."""

    code = "link_refused"


class Refused(RunnerError):
    """This runner will not hold a flow (part): the message says which limit."""

    code = "refused"


def collect_hardware(state_dir: Path, runtimes: list[str]) -> dict[str, Any]:
    """What placement needs to know; stable values only (totals, not current use)."""
    disk = shutil.disk_usage(state_dir)
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpus": psutil.cpu_count() or 1,
        "memoryGiB": round(psutil.virtual_memory().total / GiB, 1),
        "diskGiB": round(disk.total / GiB, 1),
        "runtimes": sorted(runtimes),
    }


class LinkReporter:
    """The executor's :class:`~.runs.executor.RunReporter` over the control link.

    ``progress``: True unless the dispatcher answers that the attempt no longer counts
    (``lease_lost``, ``not_your_part``: the executor stops it). A progress that cannot
    be sent (link down) is not fatal: the attempt goes on; the dispatcher decides when
    the runner links again (``runsHeld``).
    ``result``: True once the dispatcher has it (recorded now, or already, or it no
    longer counts: nothing to keep); False when the link is down (the executor keeps it
    and it is re-sent after the next ``ready``)."""

    def __init__(self, link: DispatcherLink) -> None:
        self.link = link
        #: (runId, attempt) of the results delivered (for :meth:`wait_delivered`)
        self.delivered: set[tuple[str, int]] = set()
        self._delivery = trio.Event()

    async def wait_delivered(self, keys: set[tuple[str, int]]) -> None:
        """Until the results of these attempts were delivered (the caller bounds it)."""
        while not keys <= self.delivered:
            await self._delivery.wait()

    def _delivered(self, r: RunResult) -> bool:
        self.delivered.add((r.runId, r.attempt))
        self._delivery.set()
        self._delivery = trio.Event()
        return True

    async def progress(self, p: RunProgress) -> bool:
        try:
            await self.link.report("runProgress", _unstructure(p))
        except RemoteError as exc:
            if exc.remote_code in ("lease_lost", "not_your_part", "run_not_found"):
                return False
            raise
        except _DOWN:
            return True
        return True

    async def result(self, r: RunResult) -> bool:
        try:
            await self.link.report("runResult", _unstructure(r))
        except RemoteError as exc:
            if exc.remote_code in ("lease_lost", "not_your_part", "run_not_found"):
                return self._delivered(r)  # it does not count: nothing to keep
            return False
        except _DOWN:
            return False
        return self._delivered(r)

    async def relay(
        self, run_id: str, attempt: int, side: str, module: str, port: str, msgs: list[Any]
    ) -> None:
        """Messages of a run's side for its other side (``runRelay``), awaited until the
        dispatcher delivered them (no deadline on a call: the data path waits for a slow
        side). While the link is down it is tried again for up to ``REPORT_SECONDS``;
        then (or when the dispatcher refuses) it raises."""
        params = {
            "runId": run_id,
            "attempt": attempt,
            "side": side,
            "module": module,
            "port": port,
            "msgs": msgs,
        }
        delay = 0.05
        down_since: float | None = None
        while True:
            peer = self.link._peer
            if peer is not None and self.link.connected.is_set():
                try:
                    await peer.call("runRelay", **params)
                    return
                except LinkClosed:
                    pass
            now = trio.current_time()
            down_since = now if down_since is None else down_since
            if now - down_since > REPORT_SECONDS:
                raise LinkClosed(f"not linked to the dispatcher for {REPORT_SECONDS:g} s")
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _unstructure(value: Any) -> dict[str, Any]:
    from ..flows.converter import make_converter

    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = make_converter()
    return _CONVERTER.unstructure(value)  # type: ignore[no-any-return]


def _structure(value: Any, cls: type) -> Any:
    import cattrs

    from ..flows.converter import make_converter, problems

    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = make_converter()
    try:
        return _CONVERTER.structure(value, cls)
    except cattrs.BaseValidationError as exc:
        raise ValueError(
            "; ".join(f"{p.path or 'params'}: {p.message}" for p in problems(exc))
        ) from None


_CONVERTER: Any = None


class DispatcherLink:
    def __init__(
        self,
        url: str,
        runner: Runner,
        state_dir: Path,
        *,
        registration_token: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        cpus: float | None = None,
        memory: int | None = None,
        ca: Path | None = None,
        fingerprint: str | None = None,
        peer_host: str | None = None,
        peer_port: int = 0,
        peer_url: str | None = None,
    ) -> None:
        #: runner-to-runner relay (runner/peers.py): the listener others send to, and
        #: the senders to them; None when this runner does not take part (``peer_host``
        #: None): its wires to other runners all go through the dispatcher
        self.peer_server = PeerServer(runner, peer_host, peer_port) if peer_host else None
        self.peers = PeerLinks(self._relay_batch) if peer_host else None
        #: the endpoint said in hello (None: the listener's own address)
        self.peer_url = peer_url
        self.labels = dict(labels or {})
        #: what this runner offers to the flows placed on it
        self.capacity = {
            "cpus": float(cpus if cpus is not None else psutil.cpu_count() or 1),
            "memory": int(memory if memory is not None else psutil.virtual_memory().total),
        }
        self.url = url.rstrip("/")
        #: how the dispatcher is verified (None: plain ws://)
        try:
            self.ssl_context = (
                client_context(ca=ca, fingerprint=fingerprint)
                if self.url.startswith("https:")
                else None
            )
        except ValueError as exc:
            raise LinkRefused(f"the dispatcher's TLS settings: {exc}") from None
        if self.ssl_context is None and (ca is not None or fingerprint is not None):
            raise LinkRefused(
                f"--dispatcher-ca/--dispatcher-fingerprint need an https:// dispatcher, got {self.url}"
            )
        self.runner = runner
        self.state_dir = state_dir
        #: the longest wait between tries to reopen the link (from the dispatcher's TTL)
        self.reconnect_cap = RECONNECT_MAX
        self.registration_token = registration_token
        self.name = name or socket.gethostname()
        self.identity_path = state_dir / "dispatcher.json"
        self.hardware_path = state_dir / "hardware.json"
        self.runner_id: str | None = None
        #: flows the dispatcher watches (``watch``): their events go to it (``flowEvent``)
        self.watched: set[str] = set()
        self.connected = trio.Event()
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._peer: RpcPeer | None = None
        #: the executor's reporter (runs): the results it could not send are re-sent
        #: after every ready
        self.reporter = LinkReporter(self)
        executor = self.executor
        if executor is not None:
            executor.reporter = self.reporter
            executor.reachable = False  # until the first ready

    @property
    def executor(self) -> Any:
        """The runner's run executor (None: this runner takes no runs)."""
        return getattr(self.runner, "executor", None)

    async def report(self, method: str, params: dict[str, Any]) -> Any:
        """A run report to the dispatcher, with a deadline; raises :class:`LinkClosed`
        when the link is down, :class:`RemoteError` when the dispatcher refuses."""
        peer = self._peer
        if peer is None or not self.connected.is_set():
            raise LinkClosed("not linked to the dispatcher")
        with trio.fail_after(REPORT_SECONDS):
            return await peer.call(method, **params)

    async def stop_taking_runs(self) -> None:
        """Tell the dispatcher this runner takes no more runs (SIGTERM): its ``maxRuns``
        is 0 from now on (and in the cached hardware report, so that the next start
        announces its real number again)."""
        try:
            cached = orjson.loads(self.hardware_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            cached = {}
        try:
            await self.report("hardware", {"changes": {"maxRuns": 0}})
        except (RemoteError, *_DOWN):
            return
        cached["maxRuns"] = 0
        atomic_write(self.hardware_path, orjson.dumps(cached), mode=0o600)

    async def give_back(self, attempts: list[tuple[str, int]], reason: str) -> None:
        """Hand attempts this runner will not finish back to the dispatcher (best
        effort: an attempt not given back is given back when its lease expires)."""
        for run_id, attempt in attempts:
            try:
                await self.report(
                    "runGiveBack", {"runId": run_id, "attempt": attempt, "reason": reason}
                )
            except (RemoteError, *_DOWN):
                continue
            if self.executor is not None:
                self.executor.forget(run_id, attempt)

    async def _runs_linked(self, peer: RpcPeer) -> None:
        """After ready: say what this runner holds, stop what no longer counts, re-send
        kept results, then take runs again.

        Attempts found started and not finished after a restart (the executor does not
        run them again) are left out of ``runsHeld``: the book gives them back (the next
        attempt is queued) and they are forgotten here."""
        executor = self.executor
        if executor is None:
            return
        unfinished = {tuple(key) for key in executor.unfinished()}
        held = [h for h in executor.held() if (h["runId"], h["attempt"]) not in unfinished]
        # Reachable before the call: the dispatcher offers runs once it has the answer
        # out, and an offer may overtake it here.
        executor.reachable = True
        answer = await peer.call("runsHeld", runs=held)
        for run_id, attempt in unfinished:
            executor.forget(run_id, attempt)
        for run_id, attempt in (answer or {}).get("stop") or ():
            executor.forget(str(run_id), int(attempt))
        executor.redeliver()

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/link"

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Register if needed, then keep the link up until cancelled. ``task_status`` gets
        the runner id once the first ``ready`` was accepted. The peer listener and senders
        (runner-to-runner relay) live as long as this, across reconnections."""
        if self.peer_server is None or self.peers is None:
            await self._run_link(task_status=task_status)
            return
        async with _unwrapped(), trio.open_nursery() as nursery:
            url = await nursery.start(self.peer_server.run)
            self.peer_url = self.peer_url or url
            await nursery.start(self.peers.run)
            await self._run_link(task_status=task_status)
            nursery.cancel_scope.cancel()

    async def _run_link(
        self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        delay = 0.2
        while True:
            try:
                async with (
                    _unwrapped(),
                    _open_websocket(self.ws_url, self.ssl_context) as ws,
                    trio.open_nursery() as nursery,
                ):
                    self._ws = ws
                    peer = self._peer = RpcPeer(ws.send_message, self._handle, nursery)
                    nursery.start_soon(self._read, ws, peer)
                    identity = await self._identity()
                    answer = await peer.call(
                        "hello",
                        runnerId=identity["runnerId"],
                        secret=identity["secret"],
                        version=self.runner.version,
                        **({"peer": self.peer_url} if self.peer_server is not None else {}),
                    )
                    self.runner_id = identity["runnerId"]
                    self.reconnect_cap = reconnect_cap(answer.get("ttl"))
                    if self.peer_server is not None and self.peers is not None:
                        key = answer.get("peerKey")
                        self.peer_server.key = bytes.fromhex(key) if key else None
                        self.peers.runner_id = self.runner_id
                    await self._report_hardware()
                    await peer.call("ready", flows=self.runner.flows())
                    self.connected.set()
                    delay = 0.2
                    if not started:
                        started = True
                        task_status.started(self.runner_id)
                    # Runs after flows: a runner's flows do not wait for its runs' reconcile.
                    await self._runs_linked(peer)
                    nursery.start_soon(self._forward_snapshots, peer)
                    nursery.start_soon(self._forward_watched, peer)
                    while True:
                        await trio.sleep(float(answer["heartbeat"]))
                        # how many journaled messages this runner holds: what the
                        # dispatcher reports lost if it never comes back (JOURNAL.md)
                        extra = (
                            {"journaled": self.runner.journal_depth()}
                            if self.runner.journaled
                            else {}
                        )
                        await peer.call("heartbeat", **extra)
            except (
                OSError,
                trio_websocket.HandshakeError,
                trio_websocket.ConnectionClosed,
                LinkClosed,
                trio.BrokenResourceError,
            ) as exc:
                self.connected = trio.Event()
                if self.executor is not None:
                    self.executor.reachable = False
                refusal = untrusted(exc)
                if refusal is not None:
                    raise LinkRefused(
                        f"will not link to the dispatcher at {self.url}: its TLS certificate"
                        f" is not trusted: {refusal}"
                    ) from None
                if (
                    not started
                    and self.registration_token is not None
                    and not self.identity_path.exists()
                ):
                    # Never registered: nothing to keep trying with.
                    raise LinkRefused(f"cannot reach the dispatcher at {self.url}: {exc}") from None
                await trio.sleep(min(delay, self.reconnect_cap) * (0.5 + random.random()))
                delay = min(delay * 2, self.reconnect_cap)
            except RemoteError as exc:
                raise LinkRefused(f"the dispatcher refused this runner: {exc}") from None
            finally:
                self._ws = None
                if self._peer is not None:
                    self._peer.close()
                    self._peer = None

    async def _read(self, ws: trio_websocket.WebSocketConnection, peer: RpcPeer) -> None:
        try:
            while True:
                await peer.feed(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            peer.close()
            raise

    async def sign_off(self) -> None:
        """Tell the dispatcher this runner stops (best effort, bounded)."""
        if self._peer is None:
            return
        with trio.move_on_after(2):
            try:
                await self._peer.call("signoff")
            except (trio_websocket.ConnectionClosed, RunnerError, OSError):
                pass

    async def _forward_snapshots(self, peer: RpcPeer) -> None:
        """Send each checkpointed module state to the dispatcher: a flow placed again
        elsewhere starts from it."""
        sub = self.runner.subscribe(kinds=[EventKind.CHECKPOINT, EventKind.PAUSED], capacity=1000)
        try:
            async for event in sub:
                fid = event.get("flow")
                if fid is None:
                    continue
                if event["kind"] == EventKind.PAUSED:
                    # A breakpoint here pauses the parts of the flow on other runners too.
                    info = {k: event.get(k) for k in ("reason", "module", "port", "msg")}
                    await peer.notify("paused", flowId=fid, **info)
                    continue
                try:
                    states = self.runner.flow(fid).snapshot()
                except RunnerError:
                    continue
                await peer.notify("snapshot", flowId=fid, states=states)
        finally:
            sub.close()

    async def _forward_watched(self, peer: RpcPeer) -> None:
        """Send the events of the flows the dispatcher watches (wires, logs, errors,
        status changes) as ``flowEvent`` notifications: what an FBP client of the
        dispatcher sees as ``network:data``, ``output`` and ``error``."""
        kinds = [EventKind.WIRE, EventKind.LOG, EventKind.ERROR, EventKind.FLOW]
        sub = self.runner.subscribe(kinds=kinds, capacity=10_000)
        try:
            async for event in sub:
                fid = event.get("flow")
                if fid not in self.watched:
                    continue
                await peer.notify("flowEvent", flowId=fid, event=event)
        finally:
            sub.close()

    def _relay_sink(self, flow_id: str, ports: set[str]) -> Any:
        """The output sink of a flow part: messages on ports whose wire leads to another
        runner go to the dispatcher (``relay``), one batch at a time and awaited, so the
        order of each wire and its backpressure hold across runners. While the link or
        the far side is down the batch is retried (the host is not acknowledged
        meanwhile: at least once)."""

        async def sink(module: str, port: str, msgs: list[Any]) -> None:
            if f"{module}.{port}" not in ports:
                return
            delay = 0.05
            while True:
                peer = self._peer
                if peer is not None:
                    try:
                        await peer.call(
                            "relay", flowId=flow_id, moduleId=module, port=port, msgs=msgs
                        )
                        return
                    except RemoteError as exc:
                        if exc.remote_code in ("flow_not_found", "not_your_part"):
                            # the flow was removed, or its part runs elsewhere now (this
                            # runner was lost and came back): nobody waits for these here
                            return
                    except LinkClosed:
                        pass
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)

        return sink

    def _peer_sink(self, flow_id: str, table: dict[tuple[str, str], list[Route]]) -> Any:
        """The output sink of a flow part with routes: each batch on a leaving wire goes
        to its target runner's sender (runner/peers.py), which keeps it until that runner
        acknowledged it; waits only while the target has no credit left."""
        peers = self.peers
        assert peers is not None

        async def sink(module: str, port: str, msgs: list[Any]) -> None:
            for route in table.get((module, port), ()):
                if flow_id in self.watched:
                    # a wire to another runner, seen here (the dispatcher does not see
                    # it): the FBP clients of the dispatcher see it as network:data
                    self.runner.events.publish(
                        {
                            "kind": EventKind.WIRE,
                            "flow": flow_id,
                            "module": module,
                            "port": port,
                            "dst": route.dst,
                            "dstPort": route.dst_port,
                            "msgs": msgs,
                        }
                    )
                await peers.send(flow_id, module, port, route, msgs)

        return sink

    async def _relay_batch(self, b: Batch) -> None:
        """One batch through the dispatcher (``relay`` to its one target), retried while
        the link or the target is down: a peer sender's fallback."""
        delay = 0.05
        while True:
            peer = self._peer
            if peer is not None:
                try:
                    await peer.call(
                        "relay",
                        flowId=b.flow,
                        moduleId=b.src,
                        port=b.src_port,
                        msgs=b.msgs,
                        to=[b.route.dst, b.route.dst_port],
                    )
                    return
                except RemoteError as exc:
                    if exc.remote_code in ("flow_not_found", "not_your_part"):
                        return  # removed, or its part runs elsewhere now: nobody waits
                except (LinkClosed, *_DOWN):
                    pass
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _handle(self, method: str, params: dict[str, Any]) -> Any:
        """Calls from the dispatcher: the Runner API for the flows placed here."""
        runner = self.runner
        if method == "deploy":
            self.admit(params["flow"])
            flow = parse_flow(
                params["flow"], base_dir=None, runtimes=runner.runtimes, source_name="flow"
            )
            result = await runner.apply_flow(flow, states=params.get("states") or None)
            relay = {str(p) for p in params.get("relay") or ()}
            routes = params.get("routes")
            if relay and routes is not None and self.peers is not None:
                table = self.peers.set_routes(flow.id, list(routes))
                runner.set_output_sink(flow.id, self._peer_sink(flow.id, table))
            else:
                if self.peers is not None:
                    self.peers.forget(flow.id)
                sink = self._relay_sink(flow.id, relay) if relay else None
                runner.set_output_sink(flow.id, sink)
            if params.get("watch") is True:  # a watched flow's part (Dispatcher.watch_flow)
                await runner.watch_flow(flow.id, True)
                self.watched.add(flow.id)
            if params.get("start", True):
                await runner.start_flow(flow.id)
                # Messages that waited in the runner this flow came from, in order.
                for module_id, entries in (params.get("queued") or {}).items():
                    for port, msgs in _port_runs(entries):
                        await runner.inject(flow.id, module_id, port, msgs)
            return {
                "created": result.created,
                "swap": result.report,
                "flow": runner.describe_flow(flow.id),
            }
        if method == "offerRun":
            executor = self.executor
            if executor is None:
                raise RunRefused("this runner takes no runs")
            await executor.start(_structure(params, RunOffer))
            return None
        if method == "runDeliver":
            # messages from the other side of a run with browser modules
            executor = self.executor
            if executor is None:
                raise RunRefused("this runner takes no runs")
            msgs = params["msgs"]
            if not isinstance(msgs, list):
                raise TypeError("msgs must be an array")
            return await executor.deliver(
                str(params["runId"]),
                int(params["attempt"]),
                str(params["module"]),
                str(params["port"]),
                msgs,
            )
        if method == "runEnd":
            executor = self.executor
            if executor is None:
                return False
            from .runs.model import RunState

            return executor.end_side(
                str(params["runId"]),
                int(params["attempt"]),
                RunState(params["state"]),
                params.get("reason"),
            )
        if method == "cancelRun":
            executor = self.executor
            if executor is not None:
                await executor.cancel(
                    str(params["runId"]),
                    int(params["attempt"]),
                    str(params.get("reason") or "canceled"),
                )
            return True
        if method == "release":
            # Hand the flow over: stop it gracefully, give its state and what still
            # waited in this runner, forget it.
            flow_id = str(params["flowId"])
            run = runner.flow(flow_id)
            # its events stop here: the part goes on elsewhere (a stop seen by the FBP
            # clients would end their network)
            self.watched.discard(flow_id)
            await runner.stop_flow(flow_id)
            states = run.snapshot()
            queued = {
                m: [[q["port"], q["msg"]] for q in entries]
                for m, entries in run.debugger.queues().items()
                if entries
            }
            if run.journal is not None:
                # Everything not handled, what a stop that ran out of time left in the
                # hosts' windows included, in order (runner/JOURNAL.md)
                queued = {
                    run.short(qid): [[port, m] for port, _, msgs in entries for m in msgs]
                    for qid, entries in run.journal.model.pending().items()
                }
            await runner.remove_flow(flow_id)
            if self.peers is not None:
                self.peers.forget(flow_id)
            return {"states": states, "queued": queued}
        if method == "logs" and "flowId" not in params:
            limit = int(params.get("limit") or 1000)
            entries = [
                {**entry, "flow": summary["id"]}
                for summary in runner.flows()
                for entry in runner.flow_logs(summary["id"], limit)
            ]
            return sorted(entries, key=lambda e: e["time"])[-limit:]
        flow_id = str(params["flowId"])
        if method == "logs":
            return runner.flow_logs(flow_id, int(params.get("limit") or 1000))
        if method == "break":
            return await runner.set_breakpoint_at_module(
                f"{flow_id}/{params['moduleId']}", params.get("condition")
            )
        if method == "unbreak":
            return await runner.remove_breakpoint_at_module(f"{flow_id}/{params['moduleId']}")
        if method == "pause":
            return await runner.pause_flow(flow_id)
        if method == "continue":
            return await runner.continue_flow(flow_id)
        if method == "step":
            return await runner.single_step_flow(flow_id)
        if method == "debug":
            return runner.debug_state(flow_id)
        if method == "queues":
            return runner.queues(flow_id)
        if method == "flowStats":
            stats = runner.flow_stats(flow_id)
            if self.peers is not None:
                stats["peerWires"] = dict(self.peers.delivered.get(flow_id, {}))
            return stats
        if method == "start":
            await runner.start_flow(flow_id)
        elif method == "stop":
            await runner.stop_flow(flow_id)
        elif method == "remove":
            self.watched.discard(flow_id)
            await runner.remove_flow(flow_id)
            if self.peers is not None:
                self.peers.forget(flow_id)
            return True
        elif method == "inject":
            msgs = params["msgs"]
            if not isinstance(msgs, list):
                raise TypeError("msgs must be an array")
            await runner.inject(
                flow_id, str(params["moduleId"]), str(params.get("port") or "in"), msgs
            )
            return {"accepted": len(msgs)}
        elif method == "state":
            return {"state": runner.module_state(flow_id, str(params["moduleId"]))}
        elif method == "watch":
            watched = params.get("watched", True)
            if not isinstance(watched, bool):
                raise TypeError("watched must be true or false")
            await runner.watch_flow(flow_id, watched)
            if watched:
                self.watched.add(flow_id)
            else:
                self.watched.discard(flow_id)
            return watched
        elif method != "describe":
            raise RunnerError(f"unknown method {method!r}")
        return runner.describe_flow(flow_id)

    def admit(self, document: dict[str, Any]) -> None:
        """Refuse (:class:`Refused`) a flow part this runner cannot hold, saying why."""
        runner = self.runner
        modules = document.get("modules") or []
        missing = sorted({str(m.get("runtime")) for m in modules} - set(runner.runtimes))
        if missing:
            raise Refused(
                f"this runner has no runtime {', '.join(missing)}"
                f" (it has: {', '.join(sorted(runner.runtimes))})"
            )
        flow = parse_flow(document, base_dir=None, runtimes=runner.runtimes, source_name="flow")
        need_cpus = sum(m.cpus for m in flow.modules)
        need_memory = sum(m.memory for m in flow.modules)
        held_cpus = held_memory = 0.0
        before = 0
        for summary in runner.flows():
            held = runner.flow(summary["id"]).flow.modules
            if summary["id"] == flow.id:
                before = sum(m.memory for m in held)
                continue
            held_cpus += sum(m.cpus for m in held)
            held_memory += sum(m.memory for m in held)
        cpus, memory = self.capacity["cpus"], self.capacity["memory"]
        if need_cpus and held_cpus + need_cpus > cpus + 1e-9:
            raise Refused(
                f"flow {flow.id} needs {need_cpus:g} CPUs; this runner offers {cpus:g}"
                f" and its other flows hold {held_cpus:g}"
            )
        if need_memory and held_memory + need_memory > memory:
            raise Refused(
                f"flow {flow.id} needs {format_size(need_memory)} of memory; this runner"
                f" offers {format_size(memory)} and its other flows hold"
                f" {format_size(int(held_memory))}"
            )
        free = psutil.virtual_memory().available
        if need_memory - before > free:
            raise Refused(
                f"flow {flow.id} needs {format_size(need_memory - before)} more memory;"
                f" this machine has {format_size(free)} free now"
            )

    # ------------------------------------------------------------------ steps

    async def _identity(self) -> dict[str, str]:
        try:
            identity = orjson.loads(self.identity_path.read_bytes())
            if identity.get("url") == self.url:
                return identity
        except (OSError, orjson.JSONDecodeError):
            pass
        if not self.registration_token:
            raise LinkRefused(
                f"this runner is not registered with {self.url}: pass --registration-token "
                "(get one with: fifoflow dispatcher token)"
            )
        assert self._peer is not None
        try:
            answer = await self._peer.call(
                "register", token=self.registration_token, name=self.name
            )
        except RemoteError as exc:
            raise LinkRefused(f"the dispatcher refused register: {exc}") from None
        identity = {"url": self.url, "runnerId": answer["runnerId"], "secret": answer["secret"]}
        atomic_write(self.identity_path, orjson.dumps(identity), mode=0o600)
        return identity

    async def _report_hardware(self) -> None:
        current = {
            **collect_hardware(self.state_dir, list(self.runner.runtimes)),
            "labels": self.labels,
            "capacity": self.capacity,
        }
        if self.executor is not None:
            current["maxRuns"] = int(self.executor.max_runs)
        try:
            cached = orjson.loads(self.hardware_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            cached = None
        assert self._peer is not None
        if cached is None:
            await self._peer.call("hardware", full=current)
        else:
            changes = {k: v for k, v in current.items() if cached.get(k) != v}
            if changes:
                await self._peer.call("hardware", changes=changes)
        atomic_write(self.hardware_path, orjson.dumps(current), mode=0o600)


#: seconds to connect and finish a TLS handshake (trio_websocket's connect timeout)
CONNECT_TIMEOUT = 60.0


@asynccontextmanager
async def _open_websocket(
    url: str, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The link's WebSocket. Over TLS, the handshake is done first, on its own: the
    dispatcher's certificate is checked before a byte of HTTP is sent (a failed check
    raises ``trio.BrokenResourceError`` from the ``ssl.SSLCertVerificationError``), and
    trio_websocket, which waits forever on a TLS handshake that fails, never sees one."""
    if ssl_context is None:
        async with trio_websocket.open_websocket_url(url) as ws:
            yield ws
        return
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.move_on_after(CONNECT_TIMEOUT) as connecting:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl_context, https_compatible=True
        )
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    if connecting.cancelled_caught:
        raise OSError(f"no TLS handshake with {host}:{port} within {CONNECT_TIMEOUT:g} s")
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, f"{host}:{port}", resource
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """Let the exception a nursery wrapped come out as itself (so that the ``except``
    clauses about a dropped link see it)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = first(group, BaseException)
        if leaf is not None:
            raise leaf from None
        raise


def _port_runs(entries: list[Any]) -> list[tuple[str, list[Any]]]:
    """``[[port, msg], ...]`` as consecutive runs of one port, in order (one inject each:
    a journaled flow's inject waits for its group commit)."""
    found: list[tuple[str, list[Any]]] = []
    for port, msg in entries:
        if found and found[-1][0] == port:
            found[-1][1].append(msg)
        else:
            found.append((port, [msg]))
    return found
