"""Runtime discovery: every ``*/manifest.json`` under a runtimes directory is a runtime.

``listRuntimes`` is data, not code: adding a language means adding a folder with a
manifest and a host program that speaks ``PROTOCOL.md``.

A manifest names how to start its host. ``command`` is an argv list in which
``{python}`` (the interpreter running fifoflow), ``{node}`` (``$FIFOFLOW_NODE`` or
``node`` on ``PATH``) and ``{dir}`` (the manifest's folder) are replaced.

Error handling: a manifest that cannot be read or lacks a field raises
:class:`ManifestError` naming the file and the field.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import attrs
import orjson

__all__ = ["BUILTIN_DIR", "ManifestError", "RuntimeManifest", "discover"]

BUILTIN_DIR = Path(__file__).resolve().parent
PROTOCOL_VERSION = 1
#: what a runtime id looks like: it becomes part of folder names (environments)
RUNTIME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class ManifestError(Exception):
    """A runtime manifest is unreadable or incomplete."""


@attrs.frozen
class RuntimeManifest:
    id: str
    name: str
    version: str
    protocol: int
    command: tuple[str, ...]
    directory: Path
    source_suffixes: tuple[str, ...] = ()
    #: no command: its hosts attach themselves over a socket (the browser client runner)
    attach: bool = False
    #: a compiled runtime: its host binary is built from the modules' sources before
    #: start (``"go"``: ``runtimes/gobuild.py``); the command's ``{binary}`` is that binary
    build: str | None = None
    #: tools the runtime needs (name -> what provides it); missing: not offered
    requires: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_file(cls, path: Path) -> RuntimeManifest:
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read runtime manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: a runtime manifest must be a JSON object")
        attach = data.get("attach") is True
        for field, kind in (
            ("id", str),
            ("name", str),
            ("version", str),
            ("protocol", int),
            *(() if attach else (("command", list),)),
        ):
            if not isinstance(data.get(field), kind):
                raise ManifestError(f"{path}: field {field!r} must be a {kind.__name__}")
        if not RUNTIME_ID.match(data["id"]):
            # it names folders (an environment is <runtime>-<hash>) and host keys
            raise ManifestError(
                f"{path}: field 'id' must be 1 to 64 letters, digits, '_', '-' or '.',"
                f" starting with a letter or digit (got {data['id'][:80]!r})"
            )
        if data["protocol"] != PROTOCOL_VERSION:
            raise ManifestError(
                f"{path}: protocol {data['protocol']} is not supported (this runner speaks {PROTOCOL_VERSION})"
            )
        return cls(
            id=data["id"],
            name=data["name"],
            version=data["version"],
            protocol=data["protocol"],
            command=tuple(str(part) for part in data.get("command") or ()),
            directory=path.parent,
            source_suffixes=tuple(data.get("source_suffixes", ())),
            attach=attach,
            build=data.get("build") if isinstance(data.get("build"), str) else None,
            requires=tuple(
                sorted((str(k), str(v)) for k, v in (data.get("requires") or {}).items())
            ),
        )

    def missing(self) -> list[str]:
        """What of ``requires`` this machine lacks (one phrase each; empty: available)."""
        out = []
        for tool, what in self.requires:
            if tool == "go":
                from .gobuild import find_go

                found = find_go()
            else:
                found = shutil.which(tool)
            if not found:
                out.append(f"{tool} not found: needs {what}")
        return out

    def argv(self, binary: str | None = None) -> list[str]:
        """The start command with placeholders filled in (without the two FIFO paths);
        ``binary``: the built host of a compiled runtime."""
        node = os.environ.get("FIFOFLOW_NODE") or shutil.which("node") or "node"
        values = {"python": sys.executable, "node": node, "dir": str(self.directory)}
        values["binary"] = binary or "{binary}"
        return [part.format(**values) for part in self.command]

    def describe(self) -> dict[str, str]:
        """The listRuntimes entry."""
        return {"id": self.id, "name": self.name, "version": self.version}


def discover(
    *extra_dirs: Path, attached: bool = False, unavailable: dict[str, list[str]] | None = None
) -> dict[str, RuntimeManifest]:
    """Find runtimes: the built-in ones, then each folder of ``extra_dirs`` and of
    ``$FIFOFLOW_RUNTIMES_PATH`` (``:``-separated). A later manifest with the same id wins.
    Runtimes whose hosts attach themselves (``"attach": true``, the browser) only with
    ``attached``: a runner process cannot start them. A runtime whose required tools are
    missing (``requires``) is left out; ``unavailable`` (if given) gets id -> what is
    missing."""
    dirs = [BUILTIN_DIR, *extra_dirs]
    env = os.environ.get("FIFOFLOW_RUNTIMES_PATH", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    found: dict[str, RuntimeManifest] = {}
    for base in dirs:
        for path in sorted(base.glob("*/manifest.json")):
            manifest = RuntimeManifest.from_file(path)
            if manifest.attach and not attached:
                continue
            missing = manifest.missing()
            if missing:
                found.pop(manifest.id, None)
                if unavailable is not None:
                    unavailable[manifest.id] = missing
                continue
            found[manifest.id] = manifest
    return found
