"""The FBP network protocol over a runner or a dispatcher: what each command does, and
what clients hear.

:class:`FbpRuntime` is one runtime in the protocol's sense, over one backend
(``backends.py``: a :class:`~fifoflow.runner.Runner`, or the flows a dispatcher
deploys; "the runner" below is either); every connected client (an IDE, fbp-test, fbp-spec) is
a :class:`Client` of it. No HTTP here: the WebSocket server (``server.py``) hands each
connection's text frames to :meth:`FbpRuntime.connection`.

- ``runtime``: ``getruntime`` answers the capabilities this runtime implements (see
  :data:`CAPABILITIES`); other runtime commands are refused (no exported-port packets).
- ``graph``: ``graph.py`` edits a copy of the graph; the flow document it maps to is
  applied with the runner's ``apply_flow`` (a hot swap when the network runs); only when
  the runner took it is the edit kept and announced to every client. A refused edit is a
  ``graph:error`` and changes nothing.
- ``network``: ``start`` applies the graph, watches its wires (``Runner.watch_flow``),
  starts the flow and sends the IIPs (each announced as ``network:data``); messages on
  wires, module logs and module errors become ``network:data``, ``network:output`` and
  ``network:error``. ``running`` in a status means messages are in flight; ``getstatus``
  waits up to :data:`SETTLE` seconds for a busy network to go quiet before it answers.
- ``component``: the components are ``flows/library.py``'s; ``source`` keeps an IDE's
  code (python, node or exec) and hot-swaps the graphs that use it.

The secret (the runner's token unless another is configured) is checked on every
message, read from the message or, as older clients send it, from its payload; it is
never sent back.

Resource handling: :meth:`FbpRuntime.run` owns the task that turns runner events into
network messages; each :meth:`FbpRuntime.connection` owns its writer task.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import trio

from fifoflow.flows import FlowError, parse_flow
from fifoflow.flows.library import Component, ComponentError, check_name
from fifoflow.runner import FlowStatus, Runner, RunnerError
from fifoflow.runner.store import atomic_write

from .backends import FbpBackend, RunnerBackend
from .graph import COMMANDS as GRAPH_COMMANDS
from .graph import Graph, GraphError, Graphs, dump_graph, load_graph

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from fifoflow.flows.library import ComponentLibrary

__all__ = ["CAPABILITIES", "PROTOCOL_VERSION", "Client", "FbpRuntime"]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "0.7"
CAPABILITIES = (
    "protocol:graph",
    "protocol:network",
    "network:status",
    "network:data",
    "network:control",
    "protocol:component",
    "component:getsource",
    "component:setsource",
)
NETWORK_COMMANDS = frozenset({"start", "stop", "getstatus", "debug", "edges"})
#: seconds ``getstatus`` waits for a busy network to go quiet
SETTLE = 0.2
#: messages waiting for one slow client before it misses events
CLIENT_BUFFER = 10_000
DEFAULT_LIBRARY = "project"
#: how long a closing connection may take to give its networks the fast wiring back
UNWATCH_SECONDS = 10.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Client:
    """One connection's outgoing messages, bounded (:data:`CLIENT_BUFFER`): a client that
    does not read loses what does not fit, and is told how many once it reads again (a
    ``network:error``). A runner never waits for an IDE."""

    def __init__(self) -> None:
        #: it sent a message with the right secret (it may see the networks' data)
        self.authorized = False
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](CLIENT_BUFFER)
        self.missed = 0

    def push(self, message: dict[str, Any]) -> None:
        try:
            self.send_channel.send_nowait(orjson.dumps(message))
        except trio.WouldBlock:
            self.missed += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


class FbpRuntime:
    def __init__(
        self,
        backend: Runner | FbpBackend,
        secret: str,
        library: ComponentLibrary,
        *,
        label: str = "fifoflow runner",
        graph_dir: Path | None = None,
    ) -> None:
        #: the flows the graphs run as (``backends.py``): a runner's, or a dispatcher's
        self.backend: FbpBackend = (
            RunnerBackend(backend) if isinstance(backend, Runner) else backend
        )
        #: the runner, when the graphs run on one
        self.runner = backend if isinstance(backend, Runner) else None
        #: where graphs are kept (one JSON file per graph; None: in memory only)
        self.graph_dir = graph_dir
        self.secret = secret
        self.library = library
        self.label = label
        self.id = str(uuid.uuid4())
        self.graphs = Graphs()
        self.clients: set[Client] = set()
        self._lock = trio.Lock()
        self._applied: dict[str, dict[str, Any]] = {}
        self._started: dict[str, float] = {}
        #: graph id -> edges selected for data (None: all)
        self._edges: dict[str, set[tuple[str, str, str, str]] | None] = {}
        self._debug: dict[str, bool] = {}
        self._watch_changed = trio.Event()

    # ------------------------------------------------------------------ keeping graphs

    def restore(self) -> list[str]:
        """Read the graphs kept in ``graph_dir``; what could not be read (skipped)."""
        problems: list[str] = []
        if self.graph_dir is None or not self.graph_dir.is_dir():
            return problems
        for path in sorted(self.graph_dir.glob("*.json")):
            try:
                graph = load_graph(path.read_bytes())
            except (OSError, GraphError) as exc:
                problems.append(f"FBP graph {path}: {exc}")
                continue
            self.graphs.commit(graph)
        return problems

    def _keep(self, graph: Graph) -> None:
        if self.graph_dir is None:
            return
        try:
            self.graph_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.graph_dir / f"{graph.flow_id}.json", dump_graph(graph))
        except OSError as exc:
            # the flow is applied (and kept by the runner); only the IDE's parts are not
            log.warning("fbp: cannot keep graph %r in %s: %s", graph.id, self.graph_dir, exc)

    # ------------------------------------------------------------------ plumbing

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Turn the runner's events into network messages until cancelled."""
        sub = self.backend.subscribe(CLIENT_BUFFER)
        try:
            task_status.started()
            async for event in sub:
                try:
                    self._event(event)
                except Exception:  # one odd event must not end the stream
                    log.exception("fbp: cannot relay runner event %r", event.get("kind"))
        finally:
            sub.close()

    async def connection(
        self, receive: Callable[[], Awaitable[str | bytes]], send: Callable[[str], Awaitable[None]]
    ) -> None:
        """Serve one client until its connection ends."""
        client = Client()
        self.clients.add(client)

        async def writer() -> None:
            async for data in client.receive_channel:
                await send(data.decode())
                if client.missed:
                    missed, client.missed = client.missed, 0
                    notice = f"{missed} messages to this client were dropped (it read too slowly)"
                    message = {
                        "protocol": "network",
                        "command": "error",
                        "payload": {"message": notice},
                    }
                    await send(orjson.dumps(message).decode())

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                try:
                    while True:
                        await self.handle(client, await receive())
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self.clients.discard(client)
            client.send_channel.close()
            if client.authorized and not any(c.authorized for c in self.clients):
                # nobody sees network:data now: the networks get the fast wiring back
                deadline = trio.current_time() + UNWATCH_SECONDS
                with trio.CancelScope(deadline=deadline, shield=True):
                    await self._sync_watching()

    async def _sync_watching(self) -> None:
        """Watch the networks started here while an authorized client is connected (their
        wires then pass through the runner, for ``network:data``), and only then."""
        for graph_id in list(self._started):
            graph = self.graphs.graphs.get(graph_id)
            if graph is None:
                continue
            # asked per flow: a client may come or go meanwhile
            watched = any(c.authorized for c in self.clients)
            try:
                await self.backend.watch(graph.flow_id, watched)
            except RunnerError as exc:  # gone or busy: watched again at its next start
                log.warning("fbp: cannot %swatch %r: %s", "" if watched else "un", graph_id, exc)
        self._watch_changed.set()
        self._watch_changed = trio.Event()

    def watch_changed(self) -> trio.Event:
        """Set once the networks were next watched or unwatched (clients came or went)."""
        return self._watch_changed

    def _send(
        self,
        client: Client,
        protocol: str,
        command: str,
        payload: Any,
        response_to: str | None = None,
    ) -> None:
        message: dict[str, Any] = {"protocol": protocol, "command": command, "payload": payload}
        if response_to is not None:
            message["responseTo"] = response_to
        client.push(message)

    def _broadcast(self, protocol: str, command: str, payload: dict[str, Any]) -> None:
        for client in list(self.clients):
            self._send(client, protocol, command, dict(payload))

    # ------------------------------------------------------------------ dispatch

    async def handle(self, client: Client, text: str | bytes) -> None:
        """One message from ``client``: answered, never raised (bad input included)."""
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self._send(client, "runtime", "error", {"message": f"not a JSON message: {exc}"})
            return
        if not isinstance(message, dict):
            self._send(client, "runtime", "error", {"message": "a message is a JSON object"})
            return
        protocol, command = message.get("protocol"), message.get("command")
        payload = message.get("payload")
        request = message.get("requestId") if isinstance(message.get("requestId"), str) else None
        if not isinstance(protocol, str) or not isinstance(command, str):
            self._send(
                client, "runtime", "error", {"message": "a message needs protocol and command"}
            )
            return
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            self._send(client, protocol, "error", {"message": "payload must be an object"}, request)
            return
        secret = message.get("secret", payload.get("secret"))
        payload = {k: v for k, v in payload.items() if k != "secret"}
        authorized = isinstance(secret, str) and hmac.compare_digest(
            secret.encode(), self.secret.encode()
        )
        if protocol == "runtime" and command == "getruntime":
            self._send(client, "runtime", "runtime", self._runtime(authorized), request)
            return
        if not authorized:
            self._send(
                client,
                protocol,
                "error",
                {"message": "access denied: wrong or missing secret"},
                request,
            )
            return
        if not client.authorized:
            client.authorized = True
            if sum(c.authorized for c in self.clients) == 1:  # the first IDE to watch
                await self._sync_watching()
        try:
            if protocol == "graph" and command in GRAPH_COMMANDS:
                await self._graph(client, command, payload, request)
            elif protocol == "network" and command in NETWORK_COMMANDS:
                await self._network(client, command, payload, request)
            elif protocol == "component" and command in ("list", "getsource", "source"):
                await self._component(client, command, payload, request)
            else:
                raise GraphError(f"{protocol}:{command} is not supported by this runtime")
        except (GraphError, ComponentError) as exc:
            self._send(client, protocol, "error", {"message": str(exc)}, request)
        except RunnerError as exc:
            self._send(client, protocol, "error", {"message": str(exc)}, request)
        except OSError as exc:
            self._send(client, protocol, "error", {"message": f"cannot do that: {exc}"}, request)
        except Exception as exc:  # a bug must not end the connection; it is logged
            log.exception("fbp: %s:%s failed", protocol, command)
            message = f"internal error in {protocol}:{command}: {exc!r}"
            self._send(client, protocol, "error", {"message": message}, request)

    def _runtime(self, authorized: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "type": "fifoflow",
            "version": PROTOCOL_VERSION,
            "capabilities": list(CAPABILITIES) if authorized else [],
            "allCapabilities": list(CAPABILITIES),
        }
        if authorized and self.graphs.main is not None:  # nothing of the flows without it
            payload["graph"] = self.graphs.main
        return payload

    # ------------------------------------------------------------------ graph

    def _lookup(self, name: str) -> Component:
        return self.library.get(name)

    async def _apply(self, graph: Graph, states: dict[str, Any] | None = None) -> None:
        """Run ``graph``'s flow document on the runner (GraphError if it is refused);
        ``states`` seeds modules it adds (a renamed node keeps its module's state)."""
        available = self.library.by_name()
        try:
            components = {n.component: available[n.component] for n in graph.nodes.values()}
        except KeyError as exc:
            raise GraphError(f"Component {exc.args[0]} not available") from None
        doc = graph.flow_document(components)
        if self._applied.get(graph.id) == doc and graph.flow_id in self._flow_ids():
            return
        try:
            flow = parse_flow(doc, base_dir=None, runtimes=self.backend.runtimes)
        except FlowError as exc:
            raise GraphError(str(exc)) from None
        try:
            await self.backend.apply_flow(flow, doc, states or None)
        except RunnerError as exc:
            raise GraphError(f"the runtime refused the graph: {exc}") from None
        self._applied[graph.id] = doc

    async def _renamed_state(
        self, command: str, payload: dict[str, Any], graph: Graph
    ) -> dict[str, Any] | None:
        """A renamed node's module state, for the module of its new name."""
        if command != "renamenode":
            return None
        old = self.graphs.graphs[graph.id].nodes[payload["from"]].module
        new = graph.nodes[payload["to"]].module
        if old == new:
            return None
        try:
            state = await self.backend.module_state(graph.flow_id, old)
        except RunnerError:
            return None  # not applied yet, or no state to keep
        return {new: state} if state is not None else None

    def _flow_ids(self) -> set[str]:
        return self.backend.flow_ids()

    async def _graph(
        self, client: Client, command: str, payload: dict[str, Any], request: str | None
    ) -> None:
        async with self._lock:
            graph, messages = self.graphs.edited(command, payload, self._lookup)
            if command == "clear" and graph.id not in self.graphs.graphs:
                if graph.flow_id in self._flow_ids():
                    raise GraphError(
                        f"the runner has a flow {graph.flow_id!r} that is not an FBP graph:"
                        " use another graph id, or remove that flow first"
                    )
            if command == "clear" and graph.flow_id in self._flow_ids():
                running = await self.backend.started(graph.flow_id)
                began = self._started.pop(graph.id, None)  # stopped here, not by its event
                await self.backend.remove_flow(graph.flow_id)
                self._applied.pop(graph.id, None)
                if running:
                    self._stopped(graph.id, began)
            await self._apply(graph, await self._renamed_state(command, payload, graph))
            self.graphs.commit(graph)
            self._keep(graph)
        for cmd, body in messages:
            for other in list(self.clients):
                self._send(other, "graph", cmd, dict(body), request if other is client else None)

    # ------------------------------------------------------------------ network

    async def _network(
        self, client: Client, command: str, payload: dict[str, Any], request: str | None
    ) -> None:
        graph = self.graphs.get(payload.get("graph"))
        if command == "start":
            async with self._lock:
                await self._apply(graph)
                already = await self.backend.started(graph.flow_id)
                await self.backend.watch(graph.flow_id, True)
                await self.backend.start_flow(graph.flow_id)
            self._started.setdefault(graph.id, time.time())
            self._broadcast(
                "network",
                "started",
                {"graph": graph.id, "time": _now(), "started": True, "running": True},
            )
            if not already:  # IIPs go once per start of the network
                await self._send_initials(graph)
        elif command == "stop":
            began = self._started.pop(graph.id, None)  # stopped here, not by its event
            if graph.flow_id in self._flow_ids():
                await self.backend.stop_flow(graph.flow_id)
            self._stopped(graph.id, began)
        elif command == "getstatus":
            started = await self.backend.started(graph.flow_id)
            running = started and await self.backend.busy(graph.flow_id, SETTLE)
            status = {"graph": graph.id, "running": running, "started": started}
            if self._debug.get(graph.id):
                status["debug"] = True
            self._send(client, "network", "status", status, request)
        elif command == "debug":
            enable = payload.get("enable")
            if not isinstance(enable, bool):
                raise GraphError("debug needs enable (true or false)")
            self._debug[graph.id] = enable
            self._send(client, "network", "debug", {"enable": enable, "graph": graph.id}, request)
        elif command == "edges":
            self._edges[graph.id] = self._selected_edges(graph, payload.get("edges"))
            echo = {"graph": graph.id, "edges": payload.get("edges")}
            self._send(client, "network", "edges", echo, request)

    async def _send_initials(self, graph: Graph) -> None:
        for iip in graph.initials:
            node = graph.nodes[iip.tgt["node"]]
            self._broadcast(
                "network",
                "data",
                {
                    "id": f"DATA -> {iip.tgt['port'].upper()} {node.id}()",
                    "graph": graph.id,
                    "tgt": dict(iip.tgt),
                    "data": iip.data,
                },
            )
            await self.backend.inject(graph.flow_id, node.module, iip.tgt["port"], [iip.data])

    def _selected_edges(self, graph: Graph, edges: Any) -> set[tuple[str, str, str, str]]:
        if not isinstance(edges, list):
            raise GraphError("edges needs edges (a list of {src, tgt})")
        selected = set()
        for edge in edges:
            if not isinstance(edge, dict):
                raise GraphError("each edge is {src: {node, port}, tgt: {node, port}}")
            src, tgt = edge.get("src") or {}, edge.get("tgt") or {}
            selected.add((src.get("node"), src.get("port"), tgt.get("node"), tgt.get("port")))
        return selected

    def _stopped(self, graph_id: str, began: float | None) -> None:
        payload: dict[str, Any] = {
            "graph": graph_id,
            "time": _now(),
            "running": False,
            "started": False,
        }
        if began is not None:
            payload["uptime"] = round(time.time() - began, 3)
        self._broadcast("network", "stopped", payload)

    def _graph_of_flow(self, flow_id: Any) -> Graph | None:
        for graph in self.graphs.graphs.values():
            if graph.flow_id == flow_id:
                return graph
        return None

    def _event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "missed":
            self._broadcast(
                "network",
                "error",
                {"message": f"{event['count']} network events were dropped (too many at once)"},
            )
            return
        graph = self._graph_of_flow(event.get("flow"))
        if graph is None:
            return
        if kind == "wire":
            src, tgt = graph.node_of_module(event["module"]), graph.node_of_module(event["dst"])
            selected = self._edges.get(graph.id)
            key = (src, event["port"], tgt, event["dstPort"])
            if selected is not None and key not in selected:
                return
            edge_id = f"{src}() {event['port'].upper()} -> {event['dstPort'].upper()} {tgt}()"
            for msg in event["msgs"]:
                self._broadcast(
                    "network",
                    "data",
                    {
                        "id": edge_id,
                        "graph": graph.id,
                        "src": {"node": src, "port": event["port"]},
                        "tgt": {"node": tgt, "port": event["dstPort"]},
                        "data": msg,
                    },
                )
        elif kind == "log":
            text = str(event.get("text", ""))
            module = event.get("module")
            if module and text:
                self._broadcast("network", "output", {"message": text, "type": "message"})
        elif kind == "error":
            node = graph.node_of_module(str(event.get("module")))
            error = event.get("error") or {}
            message = f"{node}: {error.get('type', 'Error')}: {error.get('message', '')}"
            payload = {"message": message, "graph": graph.id}
            if error.get("traceback"):
                payload["stack"] = str(error["traceback"])
            self._broadcast("network", "error", payload)
            if self._debug.get(graph.id):
                self._broadcast(
                    "network", "processerror", {"id": node, "error": message, "graph": graph.id}
                )
        elif kind == "flow" and graph.id in self._started:
            if event.get("status") in (FlowStatus.STOPPED, FlowStatus.FAILED):
                if event.get("error"):
                    self._broadcast(
                        "network", "error", {"message": str(event["error"]), "graph": graph.id}
                    )
                self._stopped(graph.id, self._started.pop(graph.id, None))

    # ------------------------------------------------------------------ component

    async def _component(
        self, client: Client, command: str, payload: dict[str, Any], request: str | None
    ) -> None:
        if command == "list":
            components = self.library.components()
            for component in components:
                self._send(client, "component", "component", _describe(component), request)
            self._send(client, "component", "componentsready", len(components), request)
        elif command == "getsource":
            name = payload.get("name")
            if not isinstance(name, str):
                raise ComponentError("getsource needs name")
            graph = self.graphs.graphs.get(name)
            if graph is not None:
                code = orjson.dumps(graph.noflo_json(), option=orjson.OPT_INDENT_2).decode()
                source = {"name": name, "language": "json", "code": code}
                self._send(client, "component", "source", source, request)
                return
            try:
                component = self.library.get(name)
            except KeyError:
                raise ComponentError(f"Component {name} not found") from None
            source = {
                "name": component.short_name,
                "library": component.library,
                "language": component.language,
                "code": component.code,
            }
            self._send(client, "component", "source", source, request)
        else:
            await self._set_source(client, payload, request)

    async def _set_source(
        self, client: Client, payload: dict[str, Any], request: str | None
    ) -> None:
        name, language, code = payload.get("name"), payload.get("language"), payload.get("code")
        if not isinstance(name, str) or not isinstance(language, str) or not isinstance(code, str):
            raise ComponentError("source needs name, language and code (strings)")
        library = payload.get("library")
        if "/" not in name:
            name = f"{library if isinstance(library, str) and library else DEFAULT_LIBRARY}/{name}"
        check_name(name)
        component = Component.from_code(name, language.lower(), code)
        async with self._lock:
            # put back on failure: the IDE's earlier version, or none (the shipped one)
            previous = self.library.get(name) if name in self.library.user_names() else None
            self.library.save(component)
            try:
                for graph in self.graphs.graphs.values():
                    if any(n.component == name for n in graph.nodes.values()):
                        await self._apply(graph)
            except GraphError:
                if previous is not None:
                    self.library.save(previous)
                else:
                    self.library.remove(name)
                raise
        self._broadcast("component", "component", _describe(component))


def _describe(component: Component) -> dict[str, Any]:
    def ports(names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{"id": p, "type": "all", "required": False, "addressable": False} for p in names]

    return {
        "name": component.name,
        "description": component.description,
        "subgraph": False,
        "inPorts": ports(component.inputs),
        "outPorts": ports(component.outputs),
    }
