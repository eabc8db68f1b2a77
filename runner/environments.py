"""Environments: one per distinct set of requirements of a runtime, built once, shared.

A module's requirements (``flows/requirements.py``) name an environment
``<runtime>-<hash of the normalized set>`` (``Module.environment``). This manager keeps
them under one folder (``<state dir>/envs``, or ``~/.cache/fifoflow/envs`` without a
state dir)::

    envs/<id>/env.json     {"id", "runtime", "requirements", "extra", "built", "last_used"}
    envs/<id>/build.log    the installer's output (kept)
    envs/<id>/venv/        python: a virtualenv without pip (pip runs from outside)
    envs/<id>/node/        node: a package folder whose node_modules the host resolves from

A python environment's host runs with the environment's interpreter, so it sees the
environment's packages and nothing of the runner's; a node environment's host runs in
the package folder with ``NODE_PATH`` on its ``node_modules``. The hosts need nothing
from an environment (the python host uses ``orjson`` only if it is there and works), so
users may pin any version of anything.

Building publishes ``environment`` events (phase ``resolving``, ``downloading``,
``installing``, ``done`` or ``failed``) through the callback it is given. pip and npm
take their usual settings from the environment (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``,
``PIP_NO_INDEX``, ``npm_config_*``), which is how the tests install offline.

An environment id becomes a folder name, so every id that comes in is checked first
(:func:`check_env_id`): ``<runtime>-<16 hex digits>`` and nothing else (no ``/``, no
``..``, not empty, bounded); anything else names no environment (:class:`NotFound`,
field ``environmentId``), and nothing on disk is touched.

Error handling: a failed build raises :class:`EnvironmentBuildError` naming the package
the installer complained about and the installer's own words; the half-built folder is
removed. Resource handling: each build is one subprocess, awaited and reaped; builds of
the same environment are serialized (one lock per id).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import orjson
import trio

from .errors import NotFound, RunnerError
from .store import atomic_write

__all__ = [
    "ENV_ID_PATTERN",
    "Environment",
    "EnvironmentBuildError",
    "EnvironmentManager",
    "check_env_id",
]

#: what an environment id looks like (``Module.environment``): the runtime's id, then
#: 16 hex digits of the requirement set's hash; one plain folder name, never a path
ENV_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f]{16}\Z")

Progress = Callable[[dict[str, Any]], None]

_PIP_PHASES = (
    (re.compile(r"^(Collecting|Looking in|Processing)\b"), "resolving"),
    (re.compile(r"^\s*Downloading\b"), "downloading"),
    (re.compile(r"^Installing collected packages\b"), "installing"),
)
_PIP_PACKAGE = re.compile(
    r"(?:No matching distribution found for|satisfies the requirement|Cannot install)\s+(\S+)"
)
_NPM_PACKAGE = re.compile(
    r"(?:No matching version found for|404 Not Found - GET \S+/)\s*(\S+?)(?:\s|$|\.$)"
)


def check_env_id(env_id: str) -> str:
    """``env_id`` if it is an environment id; :class:`NotFound` naming ``environmentId``
    if it could not be one (it would be joined to the environments' folder)."""
    if not isinstance(env_id, str) or not ENV_ID_PATTERN.match(env_id):
        shown = repr(env_id[:80]) + ("..." if len(env_id) > 80 else "")
        exc = NotFound(
            f"no environment {shown}: an environment id is <runtime>-<16 hex digits>,"
            " as listEnvironments gives it"
        )
        exc.field = "environmentId"
        raise exc
    return env_id


class EnvironmentBuildError(RunnerError):
    code = "environment_failed"
    field = "requirements"


@attrs.define
class Environment:
    id: str
    runtime: str
    requirements: tuple[str, ...]
    root: Path
    extra: list[str] = attrs.field(factory=list)
    built: float = 0.0
    last_used: float = 0.0

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def node_dir(self) -> Path:
        return self.root / "node"

    def host_options(self) -> dict[str, Any]:
        """How to start this environment's runtime host: ``python`` (interpreter),
        ``env`` (variables) and ``cwd``."""
        if self.runtime == "python":
            return {"python": str(self.python), "env": {}, "cwd": None}
        modules = self.node_dir / "node_modules"
        return {"python": None, "env": {"NODE_PATH": str(modules)}, "cwd": str(self.node_dir)}

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "runtime": self.runtime,
            "requirements": list(self.requirements),
            "extra": list(self.extra),
            "built": self.built,
            "lastUsed": self.last_used,
            "packages": self.installed(),
        }

    def installed(self) -> list[str]:
        """``name==version`` of what is installed (python: dist-info; node: package.json)."""
        found: list[str] = []
        if self.runtime == "python":
            for info in sorted((self.root / "venv").glob("lib/python*/site-packages/*.dist-info")):
                name, _, version = info.name.removesuffix(".dist-info").partition("-")
                found.append(f"{name}=={version}")
        else:
            for pkg in sorted((self.node_dir / "node_modules").glob("*/package.json")):
                try:
                    data = orjson.loads(pkg.read_bytes())
                    found.append(f"{data.get('name')}@{data.get('version')}")
                except (OSError, orjson.JSONDecodeError):
                    continue
        return found

    def save(self) -> None:
        data = {
            "id": self.id,
            "runtime": self.runtime,
            "requirements": list(self.requirements),
            "extra": self.extra,
            "built": self.built,
            "last_used": self.last_used,
        }
        atomic_write(self.root / "env.json", orjson.dumps(data, option=orjson.OPT_INDENT_2))


class EnvironmentManager:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, trio.Lock] = {}
        #: how many environments were built by this manager (a cached one is not)
        self.builds = 0

    def _lock(self, env_id: str) -> trio.Lock:
        return self._locks.setdefault(check_env_id(env_id), trio.Lock())

    def load(self, env_id: str) -> Environment | None:
        folder = self.root / check_env_id(env_id)
        try:
            data = orjson.loads((folder / "env.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return Environment(
            id=data["id"],
            runtime=data["runtime"],
            requirements=tuple(data["requirements"]),
            root=folder,
            extra=list(data.get("extra") or ()),
            built=float(data.get("built") or 0),
            last_used=float(data.get("last_used") or 0),
        )

    def list(self) -> list[Environment]:
        if not self.root.exists():
            return []
        return [
            env
            for p in sorted(self.root.iterdir())
            if ENV_ID_PATTERN.match(p.name) and (env := self.load(p.name)) is not None
        ]

    def get(self, env_id: str) -> Environment:
        env = self.load(env_id)
        if env is None:
            known = ", ".join(e.id for e in self.list()) or "none"
            exc = NotFound(f"no environment {env_id!r} (environments: {known})")
            exc.field = "environmentId"
            raise exc
        return env

    async def ensure(
        self, runtime: str, env_id: str, requirements: tuple[str, ...], progress: Progress
    ) -> Environment:
        """The environment, built first if it does not exist yet."""
        async with self._lock(env_id):
            env = self.load(env_id)
            if env is None:
                env = Environment(env_id, runtime, requirements, self.root / env_id)
                await self._build(env, list(requirements), progress, fresh=True)
            env.last_used = time.time()
            env.save()
            return env

    async def change(
        self, env_id: str, install: list[str], remove: list[str], progress: Progress
    ) -> Environment:
        """Install or remove packages in an existing environment (kept in ``extra``)."""
        async with self._lock(env_id):
            env = self.get(env_id)
            if install:
                await self._build(env, install, progress, fresh=False)
                env.extra = sorted(set(env.extra) | set(install))
            if remove:
                await self._run(env, self._uninstall_cmd(env, remove), progress)
                env.extra = [e for e in env.extra if e not in remove]
            env.save()
            return env

    async def rebuild(self, env_id: str, progress: Progress) -> Environment:
        async with self._lock(env_id):
            env = self.get(env_id)
            extra = list(env.extra)
            shutil.rmtree(env.root, ignore_errors=True)
            fresh = Environment(env.id, env.runtime, env.requirements, env.root, extra=extra)
            await self._build(fresh, [*env.requirements, *extra], progress, fresh=True)
            fresh.save()
            return fresh

    def touch(self, env_ids: Iterable[str]) -> None:
        """Record that these environments are in use now."""
        for env_id in env_ids:
            env = self.load(env_id)
            if env is not None:
                env.last_used = time.time()
                env.save()

    def gc(self, in_use: set[str], max_idle: float) -> list[str]:
        """Remove environments no flow uses that were last used over ``max_idle`` s ago."""
        removed = []
        now = time.time()
        for env in self.list():
            if env.id not in in_use and now - env.last_used >= max_idle:
                shutil.rmtree(env.root, ignore_errors=True)
                removed.append(env.id)
        return removed

    # ------------------------------------------------------------------ building

    async def _build(
        self, env: Environment, specs: list[str], progress: Progress, *, fresh: bool
    ) -> None:
        started = time.time()
        if fresh:
            env.root.mkdir(parents=True, exist_ok=True)
            if env.runtime == "python":
                await self._run(
                    env,
                    [sys.executable, "-m", "venv", "--without-pip", str(env.root / "venv")],
                    progress,
                )
            else:
                env.node_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(env.node_dir / "package.json", b'{"private": true}\n', mode=0o644)
        try:
            await self._run(env, self._install_cmd(env, specs), progress)
        except EnvironmentBuildError:
            if fresh:
                shutil.rmtree(env.root, ignore_errors=True)
            raise
        if fresh:
            env.built = time.time()
            self.builds += 1
        progress({"phase": "done", "env": env.id, "seconds": round(time.time() - started, 3)})

    def _install_cmd(self, env: Environment, specs: list[str]) -> list[str]:
        if env.runtime == "python":
            return [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(env.python),
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                *specs,
            ]
        npm = shutil.which("npm") or "npm"
        return [npm, "install", "--no-audit", "--no-fund", "--prefix", str(env.node_dir), *specs]

    def _uninstall_cmd(self, env: Environment, specs: list[str]) -> list[str]:
        if env.runtime == "python":
            names = [re.split(r"[<>=!~;\[ @]", s, maxsplit=1)[0] for s in specs]
            return [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(env.python),
                "uninstall",
                "-y",
                *names,
            ]
        npm = shutil.which("npm") or "npm"
        return [npm, "uninstall", "--no-audit", "--no-fund", "--prefix", str(env.node_dir), *specs]

    async def _run(self, env: Environment, argv: list[str], progress: Progress) -> None:
        log_path = env.root / "build.log"
        phase = None
        lines: list[str] = []
        with _open_log(log_path) as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PIP_REQUIRE_VIRTUALENV": "0"},
            )
            assert proc.stdout is not None
            buffer = b""
            try:
                async with proc.stdout:
                    while data := await proc.stdout.receive_some(65536):
                        log.write(data)
                        buffer += data
                        *chunk, buffer = buffer.split(b"\n")
                        for raw in chunk:
                            line = raw.decode(errors="replace").rstrip()
                            lines.append(line)
                            for pattern, name in _PIP_PHASES:
                                if pattern.search(line) and name != phase:
                                    phase = name
                                    progress({"phase": name, "env": env.id})
                            if env.runtime == "node" and phase is None:
                                phase = "installing"
                                progress({"phase": phase, "env": env.id})
                            progress({"phase": phase or "resolving", "env": env.id, "line": line})
                code = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with trio.CancelScope(shield=True):
                        await proc.wait()
        if code != 0:
            message = _installer_error(env.runtime, lines)
            progress({"phase": "failed", "env": env.id, "error": message})
            raise EnvironmentBuildError(
                f"environment {env.id} could not be built: {message} (installer log: {log_path})"
            )


def _open_log(path: Path) -> BinaryIO:
    # Appends of installer output to a local file: small writes, fine on the event loop.
    return open(path, "ab")


def _installer_error(runtime: str, lines: list[str]) -> str:
    text = "\n".join(lines)
    pattern = _PIP_PACKAGE if runtime == "python" else _NPM_PACKAGE
    found = pattern.search(text)
    errors = [ln.strip() for ln in lines if re.match(r"\s*(ERROR|npm (ERR!|error))", ln)]
    words = "; ".join(errors[-3:]) or (lines[-1].strip() if lines else "the installer failed")
    if found:
        return f"package {found.group(1).rstrip('.')!r}: {words}"
    return words
