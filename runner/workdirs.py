"""Private working directories of exec modules that carry ``files``.

A flow that came over the API has no folder; an exec module that needs files (its
script, its data) carries them in ``Module.files`` (``flows/bundle.py``). Before a flow
is installed the runner writes them into a directory of that module and makes it the
module's ``cwd`` (the exec child's working directory):

    <root>/<flow id>/<module id>-<hash of the files>/<name>

The hash makes a new version of the files a new directory: a hot swap loads the new
module in its new directory while the old child still runs in the old one, and the
changed ``cwd`` is what marks the module changed. Files are written 0600, the one the
command runs as its program (``["./step.sh"]``) 0700.

Resource handling: :class:`WorkDirs` owns ``root``: with a state dir it is
``<state_dir>/work`` (cleared and rewritten when the runner restores its flows),
without one a temporary directory made on first use and removed by :meth:`close`.
:meth:`prune` removes a flow's directories its current version does not use,
:meth:`remove` all of a removed flow's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ..flows import Flow, Module

__all__ = ["WorkDirs"]


class WorkDirs:
    def __init__(self, root: Path | None) -> None:
        #: None: a temporary directory, made when first needed
        self._root = root
        self._temporary = root is None

    def _base(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="fifoflow-work-"))
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._root

    def prepare(self, flow: Flow) -> Flow:
        """Write the files of ``flow``'s modules that carry some; ``flow`` with those
        modules' ``cwd`` set to their directory. Unchanged modules keep their directory."""
        if not any(m.files for m in flow.modules):
            return flow
        modules = tuple(
            attrs.evolve(m, cwd=self._write(flow.id, m)) if m.files else m for m in flow.modules
        )
        return attrs.evolve(flow, modules=modules)

    def _write(self, flow_id: str, module: Module) -> Path:
        digest = hashlib.sha256((module.command[0] if module.command else "").encode() + b"\0")
        for name in sorted(module.files):
            digest.update(name.encode() + b"\0" + module.files[name].encode() + b"\0")
        folder = self._base() / flow_id / f"{module.id}-{digest.hexdigest()[:16]}"
        program = os.path.normpath(module.command[0]) if module.command else None
        for name, text in module.files.items():
            path = folder / name
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # a fresh file each time, renamed into place: a child that has the old one
            # open keeps reading the old one
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(text.encode("utf-8", "surrogatepass"))
            tmp.chmod(0o700 if name == program else 0o600)
            tmp.replace(path)
        return folder

    def prune(self, flow: Flow) -> None:
        """Remove the directories of ``flow``'s id that its modules do not use now."""
        if self._root is None:
            return
        in_use = {m.cwd for m in flow.modules if m.files}
        folder = self._root / flow.id
        if folder.is_dir():
            for child in folder.iterdir():
                if child not in in_use:
                    shutil.rmtree(child, ignore_errors=True)

    def remove(self, flow_id: str) -> None:
        """Remove every directory of a flow (it was removed)."""
        if self._root is not None:
            shutil.rmtree(self._root / flow_id, ignore_errors=True)

    def clear(self) -> None:
        """Remove every flow's directories (before a restore writes them again)."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def close(self) -> None:
        """Remove a temporary root (a runner without a state dir keeps nothing)."""
        if self._temporary and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
