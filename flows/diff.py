"""What changed between two versions of a flow: the plan of a hot swap.

:func:`diff_flows` compares modules by id and wires as a set. A module is

- *added* / *removed*: its id is only in the new / old flow;
- *moved*: its runtime or its requirements changed, so it runs in another runtime
  process (``Module.host``: the runtime, or the runtime and its environment; for a
  compiled runtime, go, the set of the flow's go sources: new go code moves every go
  module to a host built with it);
- *code changed*: same runtime, different code (``code``, a file's text, or an exec
  ``command``/``cwd``);
- *config changed*: same runtime and code, different ``config`` or ``timeout``;
- *ports changed*: different ``inputs``/``outputs`` (routing only; the code is kept
  unless it changed too).

The runner (``runner/swap.py``) applies a :class:`FlowDiff`; this module only compares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .model import Wire

if TYPE_CHECKING:
    from .model import Flow, Module

__all__ = ["FlowDiff", "diff_flows"]


@attrs.frozen
class FlowDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    code_changed: tuple[str, ...] = ()
    config_changed: tuple[str, ...] = ()
    #: (module id, old host, new host): a host is a runtime id, or ``<runtime>-<env hash>``
    moved: tuple[tuple[str, str, str], ...] = ()
    ports_changed: tuple[str, ...] = ()
    wires_added: tuple[Wire, ...] = ()
    wires_removed: tuple[Wire, ...] = ()
    #: listed exits ("module.port") added or removed: routing only
    exits_added: tuple[str, ...] = ()
    exits_removed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(attrs.astuple(self, recurse=False))

    def reloaded(self) -> tuple[str, ...]:
        """Modules that get a new ``load`` in their current runtime."""
        return self.code_changed + self.config_changed

    def describe(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "codeChanged": list(self.code_changed),
            "configChanged": list(self.config_changed),
            "moved": [{"module": m, "from": a, "to": b} for m, a, b in self.moved],
            "portsChanged": list(self.ports_changed),
            "wiresAdded": [str(w) for w in self.wires_added],
            "wiresRemoved": [str(w) for w in self.wires_removed],
            "exitsAdded": list(self.exits_added),
            "exitsRemoved": list(self.exits_removed),
        }

    def summary(self) -> str:
        """One line for people: ``code: double; moved: label (python -> node); +1 wire``."""
        parts = []
        for label, names in (
            ("added", self.added),
            ("removed", self.removed),
            ("code", self.code_changed),
            ("config", self.config_changed),
            ("ports", self.ports_changed),
            ("exits added", self.exits_added),
            ("exits removed", self.exits_removed),
        ):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        if self.moved:
            parts.append("moved: " + ", ".join(f"{m} ({a} -> {b})" for m, a, b in self.moved))
        if self.wires_added:
            parts.append(f"+{len(self.wires_added)} wire{'s' if len(self.wires_added) > 1 else ''}")
        if self.wires_removed:
            parts.append(
                f"-{len(self.wires_removed)} wire{'s' if len(self.wires_removed) > 1 else ''}"
            )
        return "; ".join(parts) or "no change"


def _code_key(m: Module) -> tuple[Any, ...]:
    return (m.source, m.command, sorted(m.files.items()), str(m.cwd) if m.cwd else None)


def diff_flows(old: Flow, new: Flow) -> FlowDiff:
    before = {m.id: m for m in old.modules}
    after = {m.id: m for m in new.modules}
    added = tuple(m.id for m in new.modules if m.id not in before)
    removed = tuple(m.id for m in old.modules if m.id not in after)
    code: list[str] = []
    config: list[str] = []
    moved: list[tuple[str, str, str]] = []
    ports: list[str] = []
    for m in new.modules:
        o = before.get(m.id)
        if o is None:
            continue
        if (o.inputs, o.outputs) != (m.inputs, m.outputs):
            ports.append(m.id)
        if o.host != m.host:
            moved.append((m.id, o.host, m.host))
        elif _code_key(o) != _code_key(m):
            code.append(m.id)
        elif (o.config, o.timeout) != (m.config, m.timeout):
            config.append(m.id)
    old_wires, new_wires = set(old.wires), set(new.wires)
    old_exits = [f"{m}.{p}" for m, p in old.exits]
    new_exits = [f"{m}.{p}" for m, p in new.exits]
    return FlowDiff(
        added=added,
        removed=removed,
        code_changed=tuple(code),
        config_changed=tuple(config),
        moved=tuple(moved),
        ports_changed=tuple(ports),
        wires_added=tuple(w for w in new.wires if w not in old_wires),
        wires_removed=tuple(w for w in old.wires if w not in new_wires),
        exits_added=tuple(e for e in new_exits if e not in old_exits),
        exits_removed=tuple(e for e in old_exits if e not in new_exits),
    )
