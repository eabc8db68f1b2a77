"""The flow model: plain attrs classes, no I/O and no serialization logic.

A flow is a versioned document (``"fifoflow": 1``) of modules and wires. A module runs in
one runtime; its code is inline (``code``) or in a file next to the flow (``file``); exec
modules name a ``command`` instead. Wires connect ``module.port`` to ``module.port``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

__all__ = ["FORMAT_VERSION", "ID_PATTERN", "Flow", "Module", "Wire"]

FORMAT_VERSION = 1
ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_WIRE = re.compile(r"\s*([^.\s]+)\.([^\s]+)\s*->\s*([^.\s]+)\.([^\s]+)\s*\Z")
DEFAULT_TIMEOUT = 30.0


@attrs.frozen
class Wire:
    src: str
    src_port: str
    dst: str
    dst_port: str

    @classmethod
    def parse(cls, text: str) -> Wire:
        """``"a.out -> b.in"``; raises ValueError with the expected form."""
        match = _WIRE.match(text)
        if match is None:
            raise ValueError(f"not a wire: {text!r} (expected 'module.port -> module.port')")
        return cls(*match.groups())

    def __str__(self) -> str:
        return f"{self.src}.{self.src_port} -> {self.dst}.{self.dst_port}"


@attrs.frozen
class Module:
    id: str
    runtime: str
    code: str | None = None
    file: str | None = None
    command: tuple[str, ...] | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    inputs: tuple[str, ...] = ("in",)
    outputs: tuple[str, ...] = ("out",)
    timeout: float = DEFAULT_TIMEOUT
    #: resolved code text (inline code, or the file's content when loaded)
    source: str | None = attrs.field(default=None, eq=False)
    #: a path for tracebacks: the module file, or "<flow>/<module>" for inline code
    filename: str = attrs.field(default="", eq=False)
    #: working directory of exec modules (the flow file's folder)
    cwd: Path | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Flow:
    id: str
    modules: tuple[Module, ...]
    wires: tuple[Wire, ...] = ()
    description: str | None = None
    fifoflow: int = FORMAT_VERSION
    base_dir: Path | None = attrs.field(default=None, eq=False)

    def module(self, module_id: str) -> Module:
        for module in self.modules:
            if module.id == module_id:
                return module
        raise KeyError(module_id)

    def qualified(self, module_id: str) -> str:
        """The flowModuleId: ``"<flow id>/<module id>"``."""
        return f"{self.id}/{module_id}"

    def entry_ports(self) -> list[tuple[str, str]]:
        """Input ports that no wire feeds, in document order."""
        fed = {(w.dst, w.dst_port) for w in self.wires}
        return [(m.id, p) for m in self.modules for p in m.inputs if (m.id, p) not in fed]

    def exit_ports(self) -> list[tuple[str, str]]:
        """Output ports that feed no wire, in document order."""
        used = {(w.src, w.src_port) for w in self.wires}
        return [(m.id, p) for m in self.modules for p in m.outputs if (m.id, p) not in used]
