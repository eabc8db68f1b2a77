"""The flow model: plain attrs classes, no I/O and no serialization logic.

A flow is a versioned document (``"fifoflow": 1``) of modules and wires. A module runs in
one runtime; its code is inline (``code``) or in a file next to the flow (``file``); exec
modules name a ``command`` instead, and may carry the ``files`` it needs (a flow sent to
a runner has no folder). Wires connect ``module.port`` to ``module.port``.
A python module may list pip ``requirements``, a node module npm ``packages``; the flow
may list both for all its modules. Each distinct set gets its own environment and its own
runtime process (``Module.environment``, ``Module.host``).
"""

from __future__ import annotations

import hashlib
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
    #: exec modules: files that travel with the module (relative name -> UTF-8 text),
    #: written by the runner into the module's private working directory
    files: dict[str, str] = attrs.field(factory=dict)
    #: working directory of exec modules (the flow file's folder; on a runner, the
    #: module's working directory when it carries ``files``)
    cwd: Path | None = attrs.field(default=None, eq=False)
    #: what the module needs: pip specifiers (python) or npm specifiers (node), the
    #: flow's own merged in, normalized and sorted
    requirements: tuple[str, ...] = ()
    #: what the module itself lists (the flow's list is kept on the flow)
    declared: tuple[str, ...] = attrs.field(default=(), eq=False)
    #: placement labels a runner must have to hold this module (a dispatcher's concern)
    labels: dict[str, str] = attrs.field(factory=dict, eq=False)
    #: what a runner must have free to hold this module: CPUs and bytes of memory
    #: (0: nothing reserved; a dispatcher's concern, like labels)
    cpus: float = attrs.field(default=0.0, eq=False)
    memory: int = attrs.field(default=0, eq=False)
    #: compiled runtimes (go): a hash of the sources of every module of the flow in this
    #: runtime. Their host is one binary built for that set, so a changed, added or
    #: removed source gives every such module a new host (a hot swap moves them there)
    build: str | None = attrs.field(default=None, eq=False)

    @property
    def environment(self) -> str | None:
        """The id of the environment the module needs (None: the runtime's bare one):
        ``<runtime>-<hash>``, the same for every module and flow with the same set."""
        if not self.requirements:
            return None
        digest = hashlib.sha256("\n".join([self.runtime, *self.requirements]).encode()).hexdigest()
        return f"{self.runtime}-{digest[:16]}"

    @property
    def host(self) -> str:
        """Which runtime process of its flow the module runs in: the runtime id, or the
        runtime and its environment."""
        if self.build is not None:
            return f"{self.runtime}-{self.build}"
        env = self.environment
        return env if env is not None else self.runtime


@attrs.frozen
class Flow:
    id: str
    modules: tuple[Module, ...]
    wires: tuple[Wire, ...] = ()
    description: str | None = None
    fifoflow: int = FORMAT_VERSION
    base_dir: Path | None = attrs.field(default=None, eq=False)
    #: pip requirements of every python module, npm packages of every node module
    requirements: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    #: output ports (module, port) whose messages also leave the flow although wires
    #: leave them too (a tap; a dispatcher marks the ports of a part whose wires cross to
    #: another runner this way). A port no wire leaves is an exit without being listed.
    exits: tuple[tuple[str, str], ...] = ()
    #: "checkpoint", "journal" or None (the runner's default); runner/JOURNAL.md
    durability: str | None = None

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
        """Output ports whose messages leave the flow, in document order: those that
        feed no wire, and those listed in ``exits``."""
        used = {(w.src, w.src_port) for w in self.wires} - set(self.exits)
        return [(m.id, p) for m in self.modules for p in m.outputs if (m.id, p) not in used]
