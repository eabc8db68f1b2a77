"""graph.py: FBP graph edits -> flow documents, without sockets or a runner."""

from __future__ import annotations

from typing import Any

import pytest

from fifoflow.api.fbp.graph import GraphError, Graphs, dump_graph, load_graph, safe_id
from fifoflow.flows import dump_flow, parse_flow
from fifoflow.flows.library import ComponentLibrary

LIBRARY = ComponentLibrary()


def edit(graphs: Graphs, command: str, **payload: Any) -> list[tuple[str, dict[str, Any]]]:
    graph, messages = graphs.edited(command, payload, LIBRARY.get)
    graphs.commit(graph)
    return messages


def document(graphs: Graphs, graph_id: str) -> dict[str, Any]:
    graph = graphs.graphs[graph_id]
    return graph.flow_document(
        {n.component: LIBRARY.get(n.component) for n in graph.nodes.values()}
    )


def build() -> Graphs:
    graphs = Graphs()
    edit(graphs, "clear", id="g", name="Greeting", main=True, baseDir="/x")
    edit(graphs, "addnode", graph="g", id="core/Repeat_x7k2", component="core/Repeat")
    edit(graphs, "addnode", graph="g", id="Drop", component="core/Drop", metadata={"x": 1})
    edit(
        graphs,
        "addedge",
        graph="g",
        src={"node": "core/Repeat_x7k2", "port": "out"},
        tgt={"node": "Drop", "port": "in"},
    )
    edit(
        graphs,
        "addinitial",
        graph="g",
        src={"data": "hi"},
        tgt={"node": "core/Repeat_x7k2", "port": "in"},
    )
    return graphs


def test_a_graph_maps_to_a_valid_flow_document() -> None:
    doc = document(build(), "g")
    flow = parse_flow(doc, base_dir=None, runtimes=["python", "node", "exec"])
    repeat = LIBRARY.get("core/Repeat")
    assert flow.id == "g"
    assert flow.description == "Greeting"
    assert [m.id for m in flow.modules] == ["core_Repeat_x7k2", "Drop"]
    assert flow.modules[0].code == repeat.code
    assert flow.modules[1].outputs == ()
    assert [str(w) for w in flow.wires] == ["core_Repeat_x7k2.out -> Drop.in"]
    # IIPs are sent at start; they are not part of the flow
    assert b"hi" not in dump_flow(flow)


def test_clear_echoes_only_protocol_fields() -> None:
    graphs = Graphs()
    assert edit(graphs, "clear", id="g", name="N", baseDir="/x", secret="s") == [
        ("clear", {"id": "g", "name": "N"})
    ]


def test_removenode_removes_its_edges_iips_and_exported_ports_first() -> None:
    graphs = build()
    edit(graphs, "addoutport", graph="g", public="out", node="core/Repeat_x7k2", port="out")
    messages = edit(graphs, "removenode", graph="g", id="core/Repeat_x7k2")
    assert [m[0] for m in messages] == [
        "removeedge",
        "removeinitial",
        "removeoutport",
        "removenode",
    ]
    assert messages[1][1]["src"] == {"data": "hi"}
    graph = graphs.graphs["g"]
    assert graph.edges == []
    assert graph.initials == []
    assert graph.outports == {}
    assert document(graphs, "g")["wires"] == []


def test_renamenode_follows_edges_and_iips() -> None:
    graphs = build()
    edit(graphs, "renamenode", graph="g", **{"from": "Drop", "to": "Sink 1"})
    doc = document(graphs, "g")
    assert [m["id"] for m in doc["modules"]] == ["core_Repeat_x7k2", "Sink_1"]
    assert doc["wires"] == ["core_Repeat_x7k2.out -> Sink_1.in"]
    assert graphs.graphs["g"].node_of_module("Sink_1") == "Sink 1"


def test_changenode_merges_metadata_and_null_removes() -> None:
    graphs = build()
    edit(graphs, "changenode", graph="g", id="Drop", metadata={"y": 2})
    messages = edit(graphs, "changenode", graph="g", id="Drop", metadata={"x": None})
    assert messages == [("changenode", {"id": "Drop", "metadata": {"y": 2}, "graph": "g"})]


@pytest.mark.parametrize(
    ("command", "payload", "message"),
    [
        ("addnode", {"id": "a", "component": "core/Repeat"}, "No graph specified"),
        (
            "addnode",
            {"graph": "nope", "id": "a", "component": "core/Repeat"},
            "Requested graph not found",
        ),
        (
            "addnode",
            {"graph": "g", "id": "a", "component": "core/Nope"},
            "Component core/Nope not available",
        ),
        ("addnode", {"graph": "g", "id": "Drop", "component": "core/Repeat"}, "already exists"),
        (
            "addedge",
            {
                "graph": "g",
                "src": {"node": "Drop", "port": "out"},
                "tgt": {"node": "Drop", "port": "in"},
            },
            "Requested port not found",
        ),
        (
            "addedge",
            {
                "graph": "g",
                "src": {"node": "ghost", "port": "out"},
                "tgt": {"node": "Drop", "port": "in"},
            },
            "Requested node 'ghost' not found",
        ),
        ("addedge", {"graph": "g", "src": "x", "tgt": {}}, "src: expected {node, port}"),
        (
            "removeedge",
            {
                "graph": "g",
                "src": {"node": "Drop", "port": "out"},
                "tgt": {"node": "Drop", "port": "in"},
            },
            "Requested edge not found",
        ),
        (
            "removeinitial",
            {"graph": "g", "tgt": {"node": "Drop", "port": "in"}},
            "Requested IIP not found",
        ),
        (
            "addinport",
            {"graph": "g", "public": "in", "node": "Drop", "port": "nope"},
            "Requested port not found",
        ),
        ("removeoutport", {"graph": "g", "public": "nope"}, "not found"),
        ("changenode", {"graph": "g", "id": "Drop", "metadata": 3}, "metadata"),
        ("renamegroup", {"graph": "g", "from": "a", "to": "b"}, "group 'a' not found"),
        ("clear", {"id": "g", "main": "yes"}, "main must be true or false"),
        ("clear", {"id": "g", "name": 3}, "name must be a string"),
        ("clear", {}, "missing or empty 'id'"),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(
    command: str, payload: dict[str, Any], message: str
) -> None:
    graphs = build()
    before = document(graphs, "g")
    with pytest.raises(GraphError, match=message.replace("{", r"\{").replace("(", r"\(")):
        graphs.edited(command, payload, LIBRARY.get)
    assert document(graphs, "g") == before


def test_groups_and_noflo_json() -> None:
    graphs = build()
    edit(graphs, "addgroup", graph="g", name="G", nodes=["Drop"], metadata={"c": 1})
    edit(graphs, "renamegroup", graph="g", **{"from": "G", "to": "H"})
    data = graphs.graphs["g"].noflo_json()
    assert data["groups"] == [{"name": "H", "nodes": ["Drop"], "metadata": {"c": 1}}]
    assert data["processes"]["Drop"] == {"component": "core/Drop", "metadata": {"x": 1}}
    assert {
        "data": "hi",
        "tgt": {"process": "core/Repeat_x7k2", "port": "in"},
        "metadata": {},
    } in data["connections"]


def test_safe_id_is_valid_and_unique() -> None:
    assert safe_id("ok-id", set()) == "ok-id"
    assert safe_id("1 bad/id", set()) == "n_1_bad_id"
    assert safe_id("a.b", {"a_b"}) == "a_b_2"


def test_a_graph_is_kept_and_read_back_whole() -> None:
    graphs = build()
    edit(graphs, "addinport", graph="g", public="start", node="Drop", port="in", metadata={"a": 1})
    edit(graphs, "addgroup", graph="g", name="G", nodes=["Drop"])
    graph = graphs.graphs["g"]
    assert load_graph(dump_graph(graph)) == graph


@pytest.mark.parametrize(
    "data",
    [
        b"{nope",
        b"[]",
        b'{"id": "g"}',
        b'{"id": "g", "flow_id": "g", "properties": {}, "nodes": {}, "edges": [{"src": {"node": "A", "port": "out"}, "tgt": {"node": "B", "port": "in"}, "metadata": {}}], "initials": [], "inports": {}, "outports": {}, "groups": {}}',
    ],
)
def test_a_damaged_kept_graph_is_refused(data: bytes) -> None:
    with pytest.raises(GraphError, match="not a saved graph"):
        load_graph(data)
