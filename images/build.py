"""Build the runner image, with no image registry needed (``fifoflow images build``).

Three steps, each cached under ``~/.cache/fifoflow/images`` (or ``--cache-dir``):

1. **Base image** (``fifoflow-base:bookworm``), unless it exists or ``--base`` names
   another: a Debian root filesystem made by ``debootstrap --variant=minbase`` from
   Debian's packages (python3, python3-venv, nodejs), trimmed (docs, man pages, apt
   lists), kept as a tarball, and imported with ``docker import``. The Debian mirror
   is the host's own (its apt sources), or ``$FIFOFLOW_DEBIAN_MIRROR``.
2. **Wheelhouse**: ``pip wheel`` of this fifoflow and everything it depends on, on the
   host (containers here cannot verify the registries' certificates).
3. **Runner image** (``fifoflow-runner:<version>``): ``runner.Dockerfile`` on the base,
   installing fifoflow from the wheelhouse with ``--no-index``.

With an online base instead (``--base python:3.11-slim`` plus node, or any image with
python3 >= 3.11, the venv module and node on its PATH), step 1 is skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BASE_PACKAGES",
    "DEFAULT_BASE",
    "OPTIONAL_PACKAGES",
    "BuildError",
    "build_base",
    "build_runner",
    "build_wheelhouse",
    "debian_mirror",
    "default_cache_dir",
    "runner_tag",
]

DEFAULT_BASE = "fifoflow-base:bookworm"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "nodejs")
#: what ``--with NAME`` adds to the base (the go runtime's toolchain: Debian's golang-go)
OPTIONAL_PACKAGES = {"go": ("golang-go",)}
HERE = Path(__file__).resolve().parent
#: trimmed from the root filesystem: nothing a runner reads
TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
)


class BuildError(Exception):
    """A step failed; the message says which and what the tool printed last."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fifoflow" / "images"


def fifoflow_version() -> str:
    try:
        return metadata.version("fifoflow")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def runner_tag(version: str | None = None) -> str:
    return f"fifoflow-runner:{version or fifoflow_version()}"


def debian_mirror(suite: str = SUITE) -> str:
    """The Debian mirror this host's apt uses for ``suite`` (deb822 or one-line
    sources), or ``$FIFOFLOW_DEBIAN_MIRROR``."""
    if env := os.environ.get("FIFOFLOW_DEBIAN_MIRROR"):
        return env
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")):
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (
                    line.partition(":")
                    for line in stanza.splitlines()
                    if ":" in line and not line.lstrip().startswith("#")
                )
            )
            if suite in fields.get("suites", "").split() and "deb" in fields.get("types", ""):
                return fields.get("uris", "").split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                return parts[1]
    raise BuildError(
        f"no Debian mirror for {suite} in this host's apt sources; "
        "set FIFOFLOW_DEBIAN_MIRROR to one"
    )


def _run(cmd: list[str], say: Callable[[str], None], what: str, **kw: Any) -> None:
    """Run a tool, passing its lines to ``say``; on failure, the last lines in the error."""
    say(f"$ {' '.join(cmd)}")
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-19:], line]
            say(f"  {line}")
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _docker() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise BuildError(
            f"no Docker engine answers ({exc}); start dockerd (Debian: apt-get install "
            "docker.io, then dockerd &)"
        ) from None
    return client


def _has_image(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def base_tarball(
    cache_dir: Path, suite: str = SUITE, packages: tuple[str, ...] = BASE_PACKAGES
) -> Path:
    key = hashlib.sha256("\n".join([suite, *packages, *TRIM]).encode()).hexdigest()[:12]
    return cache_dir / f"base-{suite}-{key}.tar"


def with_options(tag: str, options: tuple[str, ...]) -> str:
    """``tag`` of an image variant with optional runtimes (``fifoflow-base:bookworm-go``)."""
    return tag + "".join(f"-{name}" for name in sorted(options))


def packages_for(options: tuple[str, ...]) -> tuple[str, ...]:
    extra = [pkg for name in sorted(options) for pkg in OPTIONAL_PACKAGES[name]]
    return (*BASE_PACKAGES, *extra)


def build_base(
    tag: str = DEFAULT_BASE,
    *,
    cache_dir: Path | None = None,
    suite: str = SUITE,
    rebuild: bool = False,
    packages: tuple[str, ...] = BASE_PACKAGES,
    say: Callable[[str], None] = print,
) -> str:
    """Make the base image offline (debootstrap + docker import); cached twice: the
    image itself, and the root filesystem's tarball (a removed image is imported
    again without debootstrap). ``packages``: the Debian packages it holds."""
    client = _docker()
    if _has_image(client, tag) and not rebuild:
        say(f"base image {tag}: present")
        return tag
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = base_tarball(cache_dir, suite, packages)
    if rebuild or not tarball.exists():
        if shutil.which("debootstrap") is None:
            raise BuildError("debootstrap is not installed (Debian: apt-get install debootstrap)")
        if os.geteuid() != 0:
            raise BuildError("debootstrap needs root: run fifoflow images build as root")
        mirror = debian_mirror(suite)
        with tempfile.TemporaryDirectory(prefix="fifoflow-rootfs-", dir=cache_dir) as tmp:
            rootfs = Path(tmp) / "rootfs"
            say(f"base image {tag}: debootstrap {suite} ({', '.join(packages)})")
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(packages)}",
                    suite,
                    str(rootfs),
                    mirror,
                ],
                say,
                "debootstrap",
            )
            for rel in TRIM:
                target = rootfs / rel
                if target.is_dir():
                    for child in target.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
            partial = tarball.with_suffix(".partial")
            say(f"base image {tag}: packing the root filesystem")
            with tarfile.open(partial, "w") as tar:
                tar.add(rootfs, arcname=".")
            partial.replace(tarball)
    say(f"base image {tag}: docker import {tarball.name}")
    repository, _, version = tag.partition(":")
    client.api.import_image(
        src=str(tarball),
        repository=repository,
        tag=version or "latest",
        changes=[
            "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8",
            'CMD ["/bin/bash"]',
        ],
    )
    return tag


def build_wheelhouse(
    wheel_dir: Path, *, project_dir: Path | None = None, say: Callable[[str], None] = print
) -> Path:
    """Wheels of fifoflow and of everything it needs, for installs with no index."""
    project_dir = project_dir or HERE.parent
    if not (project_dir / "pyproject.toml").exists():
        raise BuildError(f"no fifoflow source tree at {project_dir} (pyproject.toml missing)")
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for old in wheel_dir.glob("fifoflow-*.whl"):
        old.unlink()  # always this tree's fifoflow
    say(f"wheelhouse: {wheel_dir}")
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the tree.
    with tempfile.TemporaryDirectory(prefix="fifoflow-src-") as tmp:
        source = Path(tmp) / "fifoflow"
        shutil.copytree(
            project_dir,
            source,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                ".ruff_cache", "bench-results", "node_modules",
            ),
        )  # fmt: skip
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--disable-pip-version-check",
                "--find-links",
                str(wheel_dir),
                "--wheel-dir",
                str(wheel_dir),
                str(source),
            ],
            say,
            "pip wheel",
        )
    return wheel_dir


def build_runner(
    tag: str | None = None,
    *,
    base: str = DEFAULT_BASE,
    wheel_dir: Path,
    runtimes: str = "python,node,exec",
    say: Callable[[str], None] = print,
) -> str:
    """``runner.Dockerfile`` on ``base`` with the wheelhouse as its only package source;
    ``runtimes`` is the image's ``io.fifoflow.runtimes`` label."""
    client = _docker()
    tag = tag or runner_tag()
    with tempfile.TemporaryDirectory(prefix="fifoflow-image-") as tmp:
        context = Path(tmp)
        shutil.copy(HERE / "runner.Dockerfile", context / "Dockerfile")
        shutil.copytree(wheel_dir, context / "wheels")
        say(f"runner image {tag}: building on {base}")
        last: list[str] = []
        for chunk in client.api.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE": base, "VERSION": fifoflow_version(), "RUNTIMES": runtimes},
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "error" in chunk:
                raise BuildError(
                    f"docker build failed: {chunk['error'].strip()}\n" + "\n".join(last[-20:])
                )
            for line in re.sub(r"\x1b\[[0-9;]*m", "", str(chunk.get("stream", ""))).splitlines():
                if line.strip():
                    last.append(line)
                    say(f"  {line}")
    return tag


def image_size(tag: str) -> int:
    return int(_docker().images.get(tag).attrs["Size"])
