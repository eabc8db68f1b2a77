"""FBP graphs and their flow documents: the graph protocol's edits, without sockets.

An IDE edits a graph with ``graph:*`` commands; :meth:`Graphs.handle` applies one to the
graph state and returns the messages that tell every client what changed (the command
itself, echoed with only the fields the protocol defines, and what followed from it:
``removenode`` first removes the node's edges, IIPs and exported ports, each announced).
:meth:`Graph.flow_document` turns a graph into the fifoflow flow document the runner
runs:

- a node becomes a module whose code, runtime and ports come from its component
  (``flows/library.py``); the module id is the node id when that is a valid module id,
  else a cleaned-up form of it (noflo-ui names nodes ``core/Repeat_x7k2``), unique in the
  flow; the flow id follows the graph id the same way;
- an edge becomes a wire; IIPs (``addinitial``) are not part of the flow: the network
  sends them when it starts (``session.py``);
- exported ports, groups and metadata are the IDE's: they stay in the graph state (and
  in ``component:getsource`` of the graph), not in the flow.

Error handling: a bad command raises :class:`GraphError` with the protocol's message
(``No graph specified``, ``Requested graph not found``, ...); the graph is unchanged.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from fifoflow.flows.model import FORMAT_VERSION, ID_PATTERN

if TYPE_CHECKING:
    from fifoflow.flows.library import Component

__all__ = ["Graph", "GraphError", "Graphs", "dump_graph", "load_graph", "node_port", "safe_id"]

Message = tuple[str, dict[str, Any]]
_GRAPH_PROPERTIES = ("name", "library", "main", "icon", "description")


class GraphError(Exception):
    """A graph command that cannot be applied; ``str()`` is the protocol's message."""


def safe_id(text: str, taken: set[str]) -> str:
    """``text`` as a flow or module id (letters, digits, '_', '-'), not in ``taken``."""
    base = text if ID_PATTERN.match(text) else re.sub(r"[^A-Za-z0-9_-]", "_", text)
    if not base or not ID_PATTERN.match(base):
        base = "n_" + base
    base = base[:100]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def node_port(value: Any, what: str) -> dict[str, Any]:
    """A ``{node, port[, index]}`` reference, checked."""
    if not isinstance(value, dict) or not isinstance(value.get("node"), str):
        raise GraphError(f"{what}: expected {{node, port}}")
    if not isinstance(value.get("port"), str):
        raise GraphError(f"{what}: expected {{node, port}}")
    ref = {"node": value["node"], "port": value["port"]}
    if isinstance(value.get("index"), (str, int)) and not isinstance(value.get("index"), bool):
        ref["index"] = value["index"]
    return ref


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["node"] == b["node"] and a["port"] == b["port"] and a.get("index") == b.get("index")


def _metadata(payload: dict[str, Any]) -> dict[str, Any]:
    value = payload.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GraphError("metadata must be an object")
    return dict(value)


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The protocol's metadata merge: keys set, ``null`` removes."""
    merged = dict(old)
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise GraphError(f"missing or empty {key!r}")
    return value


@attrs.define
class Node:
    id: str
    component: str
    module: str
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Edge:
    src: dict[str, Any]
    tgt: dict[str, Any]
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Initial:
    data: Any
    tgt: dict[str, Any]
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Graph:
    id: str
    flow_id: str
    properties: dict[str, Any] = attrs.field(factory=dict)
    nodes: dict[str, Node] = attrs.field(factory=dict)
    edges: list[Edge] = attrs.field(factory=list)
    initials: list[Initial] = attrs.field(factory=list)
    inports: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    outports: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    groups: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"Requested node {node_id!r} not found") from None

    def node_of_module(self, module_id: str) -> str:
        for node in self.nodes.values():
            if node.module == module_id:
                return node.id
        return module_id

    def flow_document(self, components: dict[str, Component]) -> dict[str, Any]:
        """The flow this graph runs as (``components``: the nodes' components by name)."""
        modules = []
        for node in self.nodes.values():
            module = {"id": node.module, **components[node.component].module_fields()}
            placement = node.metadata.get("placement")
            if placement is not None:
                # where a dispatcher may place it (labels, cpus, memory): checked with the
                # flow, so a bad one is a graph:error
                module["placement"] = placement
            modules.append(module)
        wires = []
        seen: set[str] = set()
        for edge in self.edges:
            src, tgt = self.nodes[edge.src["node"]], self.nodes[edge.tgt["node"]]
            wire = f"{src.module}.{edge.src['port']} -> {tgt.module}.{edge.tgt['port']}"
            if wire not in seen:  # array ports' indexes are one wire here
                seen.add(wire)
                wires.append(wire)
        doc: dict[str, Any] = {"fifoflow": FORMAT_VERSION, "id": self.flow_id}
        if isinstance(self.properties.get("name"), str):
            doc["description"] = self.properties["name"]
        doc["modules"] = modules
        doc["wires"] = wires
        return doc

    def noflo_json(self) -> dict[str, Any]:
        """The graph in the JSON graph format IDEs read (``component:getsource``)."""

        def end(ref: dict[str, Any]) -> dict[str, Any]:
            out = {"process": ref["node"], "port": ref["port"]}
            if "index" in ref:
                out["index"] = ref["index"]
            return out

        connections: list[dict[str, Any]] = [
            {"src": end(e.src), "tgt": end(e.tgt), "metadata": e.metadata} for e in self.edges
        ]
        connections += [
            {"data": i.data, "tgt": end(i.tgt), "metadata": i.metadata} for i in self.initials
        ]
        return {
            "properties": dict(self.properties),
            "processes": {
                n.id: {"component": n.component, "metadata": n.metadata}
                for n in self.nodes.values()
            },
            "connections": connections,
            "inports": {
                k: {"process": v["node"], "port": v["port"], "metadata": v.get("metadata", {})}
                for k, v in self.inports.items()
            },
            "outports": {
                k: {"process": v["node"], "port": v["port"], "metadata": v.get("metadata", {})}
                for k, v in self.outports.items()
            },
            "groups": [{"name": k, **v} for k, v in self.groups.items()],
        }


def dump_graph(graph: Graph) -> bytes:
    """The whole graph state as JSON (what ``load_graph`` reads back)."""
    return orjson.dumps(attrs.asdict(graph), option=orjson.OPT_INDENT_2)


def load_graph(data: bytes) -> Graph:
    """A graph from :func:`dump_graph`'s JSON; GraphError naming what is wrong."""
    try:
        raw = orjson.loads(data)
        graph = Graph(
            id=_str(raw["id"]),
            flow_id=_str(raw["flow_id"]),
            properties=dict(raw["properties"]),
            nodes={
                _str(k): Node(
                    _str(v["id"]), _str(v["component"]), _str(v["module"]), dict(v["metadata"])
                )
                for k, v in raw["nodes"].items()
            },
            edges=[
                Edge(node_port(e["src"], "src"), node_port(e["tgt"], "tgt"), dict(e["metadata"]))
                for e in raw["edges"]
            ],
            initials=[
                Initial(i["data"], node_port(i["tgt"], "tgt"), dict(i["metadata"]))
                for i in raw["initials"]
            ],
            inports={_str(k): dict(v) for k, v in raw["inports"].items()},
            outports={_str(k): dict(v) for k, v in raw["outports"].items()},
            groups={_str(k): dict(v) for k, v in raw["groups"].items()},
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GraphError(f"not a saved graph: {exc!r}") from None
    known = set(graph.nodes)
    ends = [e.src for e in graph.edges] + [e.tgt for e in graph.edges]
    ends += [i.tgt for i in graph.initials]
    ends += list(graph.inports.values()) + list(graph.outports.values())
    for ref in ends:
        if ref.get("node") not in known:
            raise GraphError(f"not a saved graph: it refers to a node {ref.get('node')!r} it lacks")
    return graph


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


class Graphs:
    """The graphs of one runtime, by graph id.

    ``components`` looks a component up by name (KeyError: unknown) and is asked for the
    ports of a node's component when an edge, IIP or exported port names one."""

    def __init__(self) -> None:
        self.graphs: dict[str, Graph] = {}
        self.main: str | None = None

    def get(self, graph_id: Any) -> Graph:
        if graph_id is None or graph_id == "":
            raise GraphError("No graph specified")
        if not isinstance(graph_id, str) or graph_id not in self.graphs:
            raise GraphError("Requested graph not found")
        return self.graphs[graph_id]

    def edited(
        self, command: str, payload: dict[str, Any], lookup: Any
    ) -> tuple[Graph, list[Message]]:
        """Apply ``command`` to a copy of its graph: (the new graph, the messages to
        send). Nothing changes here until :meth:`commit` (the runner applies first)."""
        if command == "clear":
            graph_id = _text(payload, "id")
            taken = {g.flow_id for gid, g in self.graphs.items() if gid != graph_id}
            old = self.graphs.get(graph_id)
            flow_id = old.flow_id if old is not None else safe_id(graph_id, taken)
            props = {k: payload[k] for k in _GRAPH_PROPERTIES if k in payload}
            for key, value in props.items():
                if not isinstance(value, bool if key == "main" else str):
                    kind = "true or false" if key == "main" else "a string"
                    raise GraphError(f"clear: {key} must be {kind}")
            graph = Graph(graph_id, flow_id, props)
            return graph, [("clear", {"id": graph_id, **props})]
        graph = copy.deepcopy(self.get(payload.get("graph")))
        handler = _HANDLERS.get(command)
        if handler is None:
            raise GraphError(f"unsupported command graph:{command}")
        messages = handler(graph, payload, lookup)
        for _, body in messages:
            body["graph"] = graph.id
        return graph, messages

    def commit(self, graph: Graph) -> None:
        self.graphs[graph.id] = graph
        if graph.properties.get("main") or self.main is None:
            self.main = graph.id


# ---------------------------------------------------------------------- commands
# Each takes (graph copy, payload, component lookup) and returns the messages to send.


def _ports(lookup: Any, node: Node, direction: str) -> tuple[str, ...]:
    component = lookup(node.component)
    return tuple(component.inputs if direction == "in" else component.outputs)


def _check_port(graph: Graph, lookup: Any, ref: dict[str, Any], direction: str) -> None:
    node = graph.node(ref["node"])
    ports = _ports(lookup, node, direction)
    if ref["port"] not in ports:
        kind = "input" if direction == "in" else "output"
        raise GraphError(
            f"Requested port not found: node {node.id!r} ({node.component}) has no {kind} "
            f"port {ref['port']!r} ({kind}s: {', '.join(ports) or 'none'})"
        )


def _addnode(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    node_id, component = _text(p, "id"), _text(p, "component")
    if node_id in graph.nodes:
        raise GraphError(f"node {node_id!r} already exists")
    try:
        lookup(component)
    except KeyError:
        raise GraphError(f"Component {component} not available") from None
    metadata = _metadata(p)
    module = safe_id(node_id, {n.module for n in graph.nodes.values()})
    graph.nodes[node_id] = Node(node_id, component, module, metadata)
    return [("addnode", {"id": node_id, "component": component, "metadata": metadata})]


def _removenode(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    node = graph.node(_text(p, "id"))
    out: list[Message] = []
    for edge in [e for e in graph.edges if node.id in (e.src["node"], e.tgt["node"])]:
        graph.edges.remove(edge)
        out.append(("removeedge", {"src": edge.src, "tgt": edge.tgt}))
    for iip in [i for i in graph.initials if i.tgt["node"] == node.id]:
        graph.initials.remove(iip)
        out.append(("removeinitial", {"src": {"data": iip.data}, "tgt": iip.tgt}))
    for command, ports in (("removeinport", graph.inports), ("removeoutport", graph.outports)):
        for public in [k for k, v in ports.items() if v["node"] == node.id]:
            del ports[public]
            out.append((command, {"public": public}))
    for group in graph.groups.values():
        if node.id in group["nodes"]:
            group["nodes"] = [n for n in group["nodes"] if n != node.id]
    del graph.nodes[node.id]
    out.append(("removenode", {"id": node.id}))
    return out


def _renamenode(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    old, new = _text(p, "from"), _text(p, "to")
    node = graph.node(old)
    if new != old and new in graph.nodes:
        raise GraphError(f"node {new!r} already exists")
    taken = {n.module for n in graph.nodes.values() if n is not node}
    renamed = Node(new, node.component, safe_id(new, taken), node.metadata)
    graph.nodes = {
        (new if k == old else k): (renamed if k == old else v) for k, v in graph.nodes.items()
    }
    refs = [e.src for e in graph.edges] + [e.tgt for e in graph.edges]
    refs += [i.tgt for i in graph.initials]
    refs += list(graph.inports.values()) + list(graph.outports.values())
    for ref in refs:
        if ref["node"] == old:
            ref["node"] = new
    for group in graph.groups.values():
        group["nodes"] = [new if n == old else n for n in group["nodes"]]
    return [("renamenode", {"from": old, "to": new})]


def _changenode(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    node = graph.node(_text(p, "id"))
    if not isinstance(p.get("metadata"), dict):
        raise GraphError("changenode needs metadata (an object)")
    node.metadata = _merge(node.metadata, p["metadata"])
    return [("changenode", {"id": node.id, "metadata": dict(node.metadata)})]


def _edge_index(graph: Graph, src: dict[str, Any], tgt: dict[str, Any]) -> int:
    for index, edge in enumerate(graph.edges):
        if _same(edge.src, src) and _same(edge.tgt, tgt):
            return index
    raise GraphError("Requested edge not found")


def _addedge(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    src, tgt = node_port(p.get("src"), "src"), node_port(p.get("tgt"), "tgt")
    _check_port(graph, lookup, src, "out")
    _check_port(graph, lookup, tgt, "in")
    metadata = _metadata(p)
    try:
        graph.edges[_edge_index(graph, src, tgt)].metadata = metadata
    except GraphError:
        graph.edges.append(Edge(src, tgt, metadata))
    return [("addedge", {"src": src, "tgt": tgt, "metadata": metadata})]


def _removeedge(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    src, tgt = node_port(p.get("src"), "src"), node_port(p.get("tgt"), "tgt")
    del graph.edges[_edge_index(graph, src, tgt)]
    return [("removeedge", {"src": src, "tgt": tgt})]


def _changeedge(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    src, tgt = node_port(p.get("src"), "src"), node_port(p.get("tgt"), "tgt")
    edge = graph.edges[_edge_index(graph, src, tgt)]
    edge.metadata = _merge(edge.metadata, _metadata(p))
    return [("changeedge", {"src": src, "tgt": tgt, "metadata": dict(edge.metadata)})]


def _addinitial(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    src = p.get("src")
    if not isinstance(src, dict) or "data" not in src:
        raise GraphError("addinitial needs src: {data}")
    tgt = node_port(p.get("tgt"), "tgt")
    _check_port(graph, lookup, tgt, "in")
    metadata = _metadata(p)
    graph.initials.append(Initial(src["data"], tgt, metadata))
    return [("addinitial", {"src": {"data": src["data"]}, "tgt": tgt, "metadata": metadata})]


def _removeinitial(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    tgt = node_port(p.get("tgt"), "tgt")
    src = p.get("src")
    for iip in graph.initials:
        if _same(iip.tgt, tgt) and (not isinstance(src, dict) or src.get("data") == iip.data):
            graph.initials.remove(iip)
            return [("removeinitial", {"src": {"data": iip.data}, "tgt": tgt})]
    raise GraphError("Requested IIP not found")


def _exported(direction: str) -> Any:
    def add(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
        public = _text(p, "public")
        ref = node_port({"node": p.get("node"), "port": p.get("port")}, "node/port")
        _check_port(graph, lookup, ref, direction)
        entry = {"node": ref["node"], "port": ref["port"]}
        if "metadata" in p:
            entry["metadata"] = _metadata(p)
        (graph.inports if direction == "in" else graph.outports)[public] = entry
        return [(f"add{direction}port", {"public": public, **entry})]

    def remove(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
        public = _text(p, "public")
        ports = graph.inports if direction == "in" else graph.outports
        if public not in ports:
            raise GraphError(f"Requested {direction}port {public!r} not found")
        del ports[public]
        return [(f"remove{direction}port", {"public": public})]

    def rename(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
        old, new = _text(p, "from"), _text(p, "to")
        ports = graph.inports if direction == "in" else graph.outports
        if old not in ports:
            raise GraphError(f"Requested {direction}port {old!r} not found")
        if new != old and new in ports:
            raise GraphError(f"{direction}port {new!r} already exists")
        items = [((new if k == old else k), v) for k, v in ports.items()]
        ports.clear()
        ports.update(items)
        return [(f"rename{direction}port", {"from": old, "to": new})]

    return add, remove, rename


def _addgroup(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    name = _text(p, "name")
    nodes = p.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise GraphError("addgroup needs nodes (a list of node ids)")
    for node_id in nodes:
        graph.node(node_id)
    if name in graph.groups:
        raise GraphError(f"group {name!r} already exists")
    metadata = _metadata(p)
    graph.groups[name] = {"nodes": list(nodes), "metadata": metadata}
    return [("addgroup", {"name": name, "nodes": list(nodes), "metadata": metadata})]


def _group(graph: Graph, name: str) -> dict[str, Any]:
    try:
        return graph.groups[name]
    except KeyError:
        raise GraphError(f"Requested group {name!r} not found") from None


def _removegroup(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    name = _text(p, "name")
    _group(graph, name)
    del graph.groups[name]
    return [("removegroup", {"name": name})]


def _renamegroup(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    old, new = _text(p, "from"), _text(p, "to")
    group = _group(graph, old)
    if new != old and new in graph.groups:
        raise GraphError(f"group {new!r} already exists")
    graph.groups = {(new if k == old else k): v for k, v in graph.groups.items()}
    del group  # kept under its new name
    return [("renamegroup", {"from": old, "to": new})]


def _changegroup(graph: Graph, p: dict[str, Any], lookup: Any) -> list[Message]:
    name = _text(p, "name")
    group = _group(graph, name)
    group["metadata"] = _merge(group["metadata"], _metadata(p))
    return [("changegroup", {"name": name, "metadata": dict(group["metadata"])})]


_in = _exported("in")
_out = _exported("out")
_HANDLERS = {
    "addnode": _addnode,
    "removenode": _removenode,
    "renamenode": _renamenode,
    "changenode": _changenode,
    "addedge": _addedge,
    "removeedge": _removeedge,
    "changeedge": _changeedge,
    "addinitial": _addinitial,
    "removeinitial": _removeinitial,
    "addinport": _in[0],
    "removeinport": _in[1],
    "renameinport": _in[2],
    "addoutport": _out[0],
    "removeoutport": _out[1],
    "renameoutport": _out[2],
    "addgroup": _addgroup,
    "removegroup": _removegroup,
    "renamegroup": _renamegroup,
    "changegroup": _changegroup,
}
#: every graph command this runtime takes (``clear`` included)
COMMANDS = frozenset({"clear", *_HANDLERS})
