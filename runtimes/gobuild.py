"""Building Go runtime hosts: the user's Go modules and fifoflow's Go host, one binary.

A go module is a Go file of any package that defines
``func Handle(msg any, ctx *fifoflow.Ctx) (any, error)`` (optional ``Init``, ``Migrate``;
``runtimes/go/README.md``). A host holds a *set* of modules, so the runner builds one
binary per set: a generated Go module ``fifoflow`` whose root package is the host
(``runtimes/go/fifoflow/*.go``), one package per distinct source under
``mods/m<hash>/`` (the user's file with its ``package`` clause rewritten on the same
line, so line numbers hold, plus a generated ``zz_register.go`` that registers its
functions under the sha256 of the source text), and ``cmd/host/main.go`` importing them
all. A ``load`` names its code; the host finds the compiled unit by the code's hash, so
code the binary was not built with fails to load with a clear error (``NotBuilt``).

Cache: ``<cache>/bin/<key>/host`` where ``key`` hashes (the sources' hashes, the host's
Go files, the Go version). A set that was built before starts with no build; the
:data:`KEEP_BINARIES` most recently used binaries are kept. Go's own
build cache (``GOCACHE``) and ``GOPATH`` live under ``<cache>`` too: nothing is written
to ``$HOME``. Builds run offline: standard library only, ``GOPROXY=off``, no cgo.

Error handling: a source that does not compile raises :class:`GoBuildError` naming the
file and line in the user's terms (the generated paths are mapped back); with
``allow_broken`` (the conformance kit) such sources are left out and registered as
broken instead, so their ``load`` answers the compiler's message. Resource handling: a
build works in a private temp folder, removed afterwards; the binary is moved into the
cache by a rename, so concurrent builds of one set are harmless.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "BuildResult",
    "GoBuildError",
    "GoSource",
    "cache_dir",
    "default_cache",
    "ensure_binary",
    "find_go",
    "go_version",
    "host_version",
    "vet",
]

HOST_DIR = Path(__file__).resolve().parent / "go" / "fifoflow"
HANDLE_SIGNATURE = "func Handle(msg any, ctx *fifoflow.Ctx) (any, error)"

_PACKAGE = re.compile(r"^package[ \t]+[A-Za-z_]\w*", re.MULTILINE)
_FUNC = {
    name: re.compile(rf"^func[ \t]+{name}[ \t]*\(", re.MULTILINE)
    for name in ("Handle", "Init", "Migrate")
}
_POSITION = re.compile(
    r"(?:\./)?mods/(m[0-9a-f]{16})/(module|zz_register)\.go:(\d+)(?::(\d+))?:\s*(.*)"
)
_GENERATED = re.compile(
    r"(?:\./)?(?:cmd/host/main|mods/m[0-9a-f]{16}/zz_register)\.go:\d+(?::\d+)?:\s*(.*)"
)

Progress = Callable[[dict[str, Any]], None]
#: host binaries kept in the cache (the most recently used ones)
KEEP_BINARIES = 64


class GoBuildError(Exception):
    """A Go module did not compile (or the toolchain is missing). ``hash`` is the sha256
    of the failing source (None: not one module's fault), ``filename``/``line`` where."""

    def __init__(
        self,
        message: str,
        *,
        hash: str | None = None,
        filename: str | None = None,
        line: int | None = None,
        output: str = "",
        kind: str = "CompileError",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hash = hash
        self.filename = filename
        self.line = line
        self.output = output
        self.kind = kind

    def error(self) -> dict[str, Any]:
        """The ``error`` object of a failed load."""
        return {"type": self.kind, "message": self.message, "traceback": self.output}


@attrs.frozen
class GoSource:
    code: str
    filename: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.code.encode()).hexdigest()


@attrs.frozen
class BuildResult:
    path: Path
    key: str
    cached: bool
    seconds: float
    #: hash -> the compiler's message, for sources left out (allow_broken only)
    broken: dict[str, str] = attrs.field(factory=dict)


def find_go() -> str | None:
    """The go command: ``$FIFOFLOW_GO``, or ``go`` on PATH (None: no toolchain)."""
    given = os.environ.get("FIFOFLOW_GO")
    if given:
        return given if Path(given).exists() else shutil.which(given)
    return shutil.which("go")


@functools.cache
def go_version(go: str) -> str:
    out = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, env=_go_env(None)
    )
    return out.stdout.strip() or "unknown"


@functools.cache
def host_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(HOST_DIR.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir(env_dir: Path) -> Path:
    """Where Go builds are cached, beside the environments' folder."""
    return env_dir.parent / "go-builds"


def default_cache() -> Path:
    """The machine's build cache: ``$FIFOFLOW_GO_CACHE``, or
    ``$XDG_CACHE_HOME/fifoflow/go-builds`` (``~/.cache/fifoflow/go-builds``)."""
    given = os.environ.get("FIFOFLOW_GO_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fifoflow" / "go-builds"


def _go_env(cache: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0", GO111MODULE="on", GOWORK="off")
    if cache is not None:
        env.update(GOCACHE=str(cache / "gocache"), GOPATH=str(cache / "gopath"))
    else:
        env.setdefault("GOCACHE", str(Path(tempfile.gettempdir()) / "fifoflow-gocache"))
    return env


def _key(hashes: Iterable[str], go: str, allow_broken: bool) -> str:
    data = json.dumps([sorted(set(hashes)), host_version(), go_version(go), allow_broken])
    return hashlib.sha256(data.encode()).hexdigest()[:24]


def _funcs(code: str) -> set[str]:
    return {name for name, pattern in _FUNC.items() if pattern.search(code)}


def _line_of(code: str, pattern: re.Pattern[str]) -> int:
    match = pattern.search(code)
    return code.count("\n", 0, match.start()) + 1 if match else 1


def _write_tree(root: Path, sources: dict[str, GoSource], broken: dict[str, str]) -> None:
    (root / "go.mod").write_text("module fifoflow\n\ngo 1.18\n")
    for path in HOST_DIR.glob("*.go"):
        shutil.copyfile(path, root / path.name)
    imports = []
    for h, src in sources.items():
        pkg = root / "mods" / f"m{h[:16]}"
        pkg.mkdir(parents=True)
        code, count = _PACKAGE.subn("package module", src.code, count=1)
        if not count:
            raise GoBuildError(
                f"{src.filename}:1: a go module starts with a package clause (package anything)",
                hash=h,
                filename=src.filename,
                line=1,
            )
        (pkg / "module.go").write_text(code)
        funcs = _funcs(src.code)
        fields = ", ".join(
            f"{name}: {name}" for name in ("Handle", "Init", "Migrate") if name in funcs
        )
        (pkg / "zz_register.go").write_text(
            'package module\n\nimport "fifoflow"\n\n'
            f'func init() {{ fifoflow.Register("{h}", fifoflow.Unit{{{fields}}}) }}\n'
        )
        imports.append(f'\t_ "fifoflow/mods/m{h[:16]}"\n')
    main = root / "cmd" / "host"
    main.mkdir(parents=True)
    registrations = "".join(
        f"\tfifoflow.Register({json.dumps(h)}, fifoflow.Unit{{Broken: {json.dumps(msg)}}})\n"
        for h, msg in broken.items()
    )
    (main / "main.go").write_text(
        'package main\n\nimport (\n\t"fifoflow"\n' + "".join(imports) + ")\n\n"
        "func main() {\n" + registrations + "\tfifoflow.Main()\n}\n"
    )


def _map_errors(output: str, sources: dict[str, GoSource]) -> tuple[list[GoBuildError], str]:
    """The compiler's complaints in the user's terms: one error per failing source (the
    first line that names it) and the whole output with generated paths mapped back."""
    by_dir = {f"m{h[:16]}": h for h in sources}
    errors: dict[str, GoBuildError] = {}
    mapped_lines = []
    for raw in output.splitlines():
        if raw.startswith("# "):
            continue
        match = _POSITION.search(raw)
        if match and match.group(1) in by_dir:
            h = by_dir[match.group(1)]
            src = sources[h]
            text = match.group(5)
            if match.group(2) == "module":
                line = int(match.group(3))
                col = f":{match.group(4)}" if match.group(4) else ""
                shown = f"{src.filename}:{line}{col}: {text}"
            else:
                line = _line_of(src.code, _FUNC["Handle"])
                if "Init" in text:
                    line = _line_of(src.code, _FUNC["Init"])
                elif "Migrate" in text:
                    line = _line_of(src.code, _FUNC["Migrate"])
                shown = (
                    f"{src.filename}:{line}: a module function has the wrong signature ({text});"
                    f" expected {HANDLE_SIGNATURE}, func Init(ctx *fifoflow.Ctx),"
                    " func Migrate(old map[string]any, ctx *fifoflow.Ctx) map[string]any"
                )
            mapped_lines.append(shown)
            if h not in errors:
                errors[h] = GoBuildError(shown, hash=h, filename=src.filename, line=line)
        else:
            mapped_lines.append(raw)
    mapped = "\n".join(mapped_lines)
    for err in errors.values():
        err.output = mapped
    return list(errors.values()), mapped


def _check_sources(sources: dict[str, GoSource]) -> list[GoBuildError]:
    problems = []
    for h, src in sources.items():
        if "Handle" not in _funcs(src.code):
            problems.append(
                GoBuildError(
                    f"{src.filename}:1: the module defines no {HANDLE_SIGNATURE}",
                    hash=h,
                    filename=src.filename,
                    line=1,
                    kind="NoHandle",
                )
            )
        elif not _PACKAGE.search(src.code):
            problems.append(
                GoBuildError(
                    f"{src.filename}:1: a go module starts with a package clause (package anything)",
                    hash=h,
                    filename=src.filename,
                    line=1,
                )
            )
    return problems


def ensure_binary(
    sources: Iterable[GoSource],
    cache: Path,
    *,
    allow_broken: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """The host binary for ``sources``, built now unless the cache has it."""
    go = find_go()
    if go is None:
        raise GoBuildError(
            "no Go toolchain: install Debian's golang-go (or set FIFOFLOW_GO)", kind="NoToolchain"
        )
    if not any(HOST_DIR.glob("*.go")):
        raise GoBuildError(
            f"fifoflow's Go host files are missing from this installation ({HOST_DIR})"
        )
    unique = {s.hash: s for s in sources}
    key = _key(unique, go, allow_broken)
    target = cache / "bin" / key / "host"
    if target.exists():
        try:
            os.utime(target.parent)  # recently used: kept by _prune
        except OSError:
            pass
        if progress:
            progress(
                {
                    "event": "cached",
                    "key": key,
                    "cached": True,
                    "seconds": 0.0,
                    "modules": len(unique),
                }
            )
        return BuildResult(target, key, True, 0.0, _read_broken(target))
    started = time.perf_counter()
    if progress:
        progress({"event": "started", "key": key, "modules": len(unique), "go": go_version(go)})
    broken: dict[str, str] = {}
    building = dict(unique)
    for problem in _check_sources(building):
        if not allow_broken:
            _report_failure(progress, problem, started)
            raise problem
        broken[problem.hash or ""] = problem.message
        building.pop(problem.hash or "")
    cache.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as tmp:
            root = Path(tmp)
            _write_tree(root, building, broken)
            out = root / "host"
            proc = subprocess.run(
                [go, "build", "-trimpath", "-o", str(out), "./cmd/host"],
                cwd=root,
                env=_go_env(cache),
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode == 0:
                partial = target.with_name(f"host.{os.getpid()}.tmp")
                shutil.move(str(out), partial)
                if broken:
                    (target.parent / "broken.json").write_text(json.dumps(broken))
                os.replace(partial, target)
                break
        errors, mapped = _map_errors(proc.stderr + proc.stdout, building)
        if not errors:
            failure = GoBuildError(f"go build failed: {mapped.strip()[-2000:]}", output=mapped)
            _report_failure(progress, failure, started)
            raise failure
        if not allow_broken:
            _report_failure(progress, errors[0], started)
            raise errors[0]
        for err in errors:
            broken[err.hash or ""] = err.message
            building.pop(err.hash or "")
    seconds = time.perf_counter() - started
    if progress:
        progress(
            {
                "event": "finished",
                "key": key,
                "cached": False,
                "seconds": round(seconds, 3),
                "modules": len(unique),
            }
        )
    return BuildResult(target, key, False, seconds, broken)


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used binaries (a hot swap leaves one per
    version). A running host whose binary goes keeps running; a restart builds again
    (from Go's cache: a link)."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _report_failure(progress: Progress | None, error: GoBuildError, started: float) -> None:
    if progress:
        progress(
            {
                "event": "failed",
                "seconds": round(time.perf_counter() - started, 3),
                "error": error.message,
                "file": error.filename,
                "line": error.line,
            }
        )


def _read_broken(target: Path) -> dict[str, str]:
    path = target.parent / "broken.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def vet(sources: Iterable[GoSource], cache: Path) -> list[str]:
    """``go vet`` on the modules (compile errors included), mapped to the user's files;
    empty when all is well."""
    go = find_go()
    if go is None:
        return []
    unique = {s.hash: s for s in sources}
    problems = [p.message for p in _check_sources(unique)]
    if problems:
        return problems
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vet-", dir=cache) as tmp:
        root = Path(tmp)
        try:
            _write_tree(root, unique, {})
        except GoBuildError as exc:
            return [exc.message]
        proc = subprocess.run(
            [go, "vet", "./mods/..."],
            cwd=root,
            env=_go_env(cache),
            capture_output=True,
            text=True,
            timeout=600,
        )
    if proc.returncode == 0:
        return []
    _, mapped = _map_errors(proc.stderr + proc.stdout, unique)
    return [line for line in mapped.splitlines() if line.strip()]
