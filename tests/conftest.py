"""Suite-wide guards: no test may leave a process, a FIFO directory or a temp dir behind."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent


def child_pids(pid: int | None = None) -> set[int]:
    """Live (non-zombie) descendants of ``pid`` (default: this process), read from /proc."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z":
            continue
        parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def fifoflow_dirs() -> set[str]:
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in tmp.glob("fifoflow-*")}


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    dirs_before = fifoflow_dirs()
    yield
    # A module-scoped server (a live_* fixture) outlives single tests; its own teardown
    # checks that it ends.
    if not any(name.startswith("live_") for name in request.fixturenames):
        leftover = child_pids()
        assert not leftover, f"test left processes running: {sorted(leftover)}"
    new_dirs = fifoflow_dirs() - dirs_before
    assert not new_dirs, f"test left FIFO directories behind: {sorted(new_dirs)}"
    orphans = orphan_hosts(str(request.config._tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
    assert not orphans, f"test left runtime hosts whose runner is gone: {orphans}"


def orphan_hosts(base: str, grace: float = 5.0) -> list[str]:
    """Runtime hosts of this test run (their FIFOs under ``base``) re-parented to init: a
    runner of a test was killed. They end by themselves within about a second
    (PROTOCOL.md 1.6); those still alive after ``grace`` seconds are listed."""
    found = []
    for proc in psutil.process_iter(["ppid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["ppid"] == 1 and any(base in part for part in cmdline):
            found.append(proc)
    _, alive = psutil.wait_procs(found, timeout=grace) if found else ([], [])
    listed = [" ".join(p.info["cmdline"])[:200] for p in alive]
    for proc in alive:
        proc.kill()
    return listed


# ---------------------------------------------------------------- local packages


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-python wheel of a module ``name`` whose VERSION is ``version``."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: fifoflow-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def make_npm_package(folder: Path, name: str, version: str) -> Path:
    tgz = folder / f"{name}-{version}.tgz"
    package = {"name": name, "version": version, "main": "index.js"}
    with tarfile.open(tgz, "w:gz") as tf:
        for path, text in (
            ("package/package.json", json.dumps(package)),
            ("package/index.js", f"exports.VERSION = {version!r};\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return tgz


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local package index: pip and npm install from it, without the network."""
    index = tmp_path / "index"
    index.mkdir()
    for version in ("1.0", "2.0"):
        make_wheel(index, "fflib", version)
        make_npm_package(index, "fflib-node", f"{version}.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("npm_config_offline", "true")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    return index
