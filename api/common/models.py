"""Models both APIs answer with, and the flow document as the APIs take it.

The flow document's schema is generated from the class the converter structures it into
(:class:`fifoflow.flows.codec.FlowDocument`); :func:`flow_schemas` only adds what depends
on the server (the runtimes it knows) or on the door (the API takes standalone documents:
code inline, no ``file``; the path may give the id).
"""

from __future__ import annotations

from typing import Annotated, Any

import attrs
import msgspec

from fifoflow.flows.limits import MAX_ID, MAX_MODULE_FILES, MiB
from fifoflow.flows.model import ID_PATTERN

from .schema import not_null

__all__ = [
    "Accepted",
    "LogEntry",
    "ModuleError",
    "ModuleState",
    "Placement",
    "Removed",
    "RemovedBreakpoint",
    "flow_schemas",
]

IDENT = "^" + ID_PATTERN.pattern.removesuffix(r"\Z") + "$"
#: the schema of a flow, module or port id
ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": IDENT, "maxLength": MAX_ID}


@attrs.frozen
class ModuleError:
    """An error a module raised, with the input that caused it."""

    time: float
    module: str
    runtime: str
    error: dict[str, Any]
    port: str | None = None
    msg: Any = None


@attrs.frozen
class LogEntry:
    time: float
    runtime: str
    level: str
    stream: str
    text: str
    module: str | None = None


@attrs.frozen
class Removed:
    removed: str


@attrs.frozen
class RemovedBreakpoint:
    removed: bool


@attrs.frozen
class Accepted:
    accepted: int


@attrs.frozen
class ModuleState:
    state: Any


@attrs.frozen
class Placement:
    """What a dispatcher needs of the runner that holds the module."""

    labels: Annotated[
        dict[str, str],
        msgspec.Meta(description="labels the runner must report (fifoflow runner serve --label)"),
    ] = attrs.field(factory=dict)
    cpus: Annotated[float, msgspec.Meta(ge=0, description="CPUs reserved")] = 0
    memory: Annotated[
        int | str,
        msgspec.Meta(description='memory reserved: bytes, or "512MiB", "2GiB", "500MB"'),
    ] = 0


_DESCRIBE = {
    "code": "the module's source (python, node)",
    "command": "exec modules: the argv of the program",
    "files": (
        "exec modules: files the command needs, relative name -> UTF-8 text (plain relative "
        "paths, no '..'); the runner writes them into the module's private working directory, "
        f"the command's cwd; at most {MAX_MODULE_FILES // MiB} MiB in all (MAX_MODULE_FILES). "
        "fifoflow flow add fills it from the files in the flow's folder the command names"
    ),
    "requirements": "pip requirement specifiers (python modules)",
    "packages": "npm package specifiers (node modules)",
}


def flow_schemas(components: dict[str, Any], runtimes: list[str]) -> None:
    """Adjust the generated FlowDocument/ModuleDocument schemas for an API that runs
    ``runtimes`` (see the module docstring)."""
    module = components["ModuleDocument"]
    props = module["properties"]
    props.pop("file", None)
    props["id"] = dict(ID_SCHEMA)
    for ports in ("inputs", "outputs"):
        props[ports] = {**not_null(props[ports]), "items": dict(ID_SCHEMA)}
    props["runtime"] = {"type": "string", "enum": runtimes}
    props["timeout"] = {"type": "number", "exclusiveMinimum": 0}
    props["placement"] = {"$ref": "#/components/schemas/Placement"}
    for name, text in _DESCRIBE.items():
        props[name] = {**not_null(props[name]), "description": text}
    flow = components["FlowDocument"]
    flow["description"] = (
        "A flow document (see flows/examples); module code inline. "
        "The id may be left out where the path gives it."
    )
    flow["required"] = [r for r in flow["required"] if r != "id"]
    fprops = flow["properties"]
    fprops["fifoflow"] = {"type": "integer", "const": 1}
    fprops["id"] = dict(ID_SCHEMA)
    fprops["wires"] = {"type": "array", "items": {"type": "string", "examples": ["a.out -> b.in"]}}
    for name in ("description", "requirements", "packages", "exits"):
        fprops[name] = not_null(fprops[name])
    fprops["exits"]["description"] = (
        "Output ports ('module.port') whose messages also leave the flow although "
        "wires leave them too. A port no wire leaves is an exit without being listed."
    )
    _, placement = msgspec.json.schema_components([Placement])
    components["Placement"] = {
        k: v for k, v in placement["Placement"].items() if k not in ("title", "default")
    }
    for prop in components["Placement"]["properties"].values():
        prop.pop("default", None)
