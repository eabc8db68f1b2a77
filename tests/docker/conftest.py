"""A real Docker engine, the runner image (built offline, cached), and a local registry.

- ``docker_client``: the engine ``make test`` started (tests/setup_machine.py). Missing:
  a skip with the reason, or a failure under ``CI=true``.
- ``runner_image``: ``fifoflow-runner:test`` built by images/build.py (the base from
  Debian's packages with debootstrap, cached in ``~/.cache/fifoflow/images``).
- ``registry``: Debian's ``docker-registry`` binary, run in a container of the base
  image on a free 127.0.0.1 port, so the dispatcher's pulls are real pulls.
- ``pushed``: pushes the runner image to that registry under a new tag and removes the
  local tags (the runner's own layers go with them; the base's stay), so the next pull
  downloads them.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

from fifoflow.images.build import (
    DEFAULT_BASE,
    build_base,
    build_runner,
    build_wheelhouse,
    default_cache_dir,
)

RUNNER_TEST_TAG = "fifoflow-runner:test"


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        why = f"no Docker engine ({exc}); make test starts one (tests/setup_machine.py) as root"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return client


@pytest.fixture(scope="session")
def runner_image(docker_client: Any) -> str:
    say = lambda line: None if line.startswith("  ") else print(f"[image] {line}", flush=True)  # noqa: E731
    cache = default_cache_dir()
    build_base(DEFAULT_BASE, cache_dir=cache, say=say)
    wheels = build_wheelhouse(cache / "wheelhouse", say=say)
    return build_runner(RUNNER_TEST_TAG, base=DEFAULT_BASE, wheel_dir=wheels, say=say)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def registry(docker_client: Any, runner_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        why = "Debian's docker-registry is not installed (tests/setup_machine.py installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    port = _free_port()
    config = tmp_path_factory.mktemp("registry") / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        "    rootdirectory: /tmp/registry\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    container = docker_client.containers.run(
        DEFAULT_BASE,
        ["docker-registry", "serve", "/etc/registry.yml"],
        name=f"fifoflow-test-registry-{port}",
        detach=True,
        network_mode="host",
        volumes={
            str(Path(binary).resolve()): {"bind": "/usr/bin/docker-registry", "mode": "ro"},
            str(config): {"bind": "/etc/registry.yml", "mode": "ro"},
        },
        labels={"io.fifoflow.test": "registry"},
    )
    try:
        import httpx

        address = f"127.0.0.1:{port}"
        _wait(lambda: _answers(httpx, f"http://{address}/v2/"), "the registry to answer")
        yield address
    finally:
        container.remove(force=True)


def _answers(httpx: Any, url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


@pytest.fixture(scope="session")
def _pushed_refs() -> list[str]:
    return []


@pytest.fixture
def pushed(
    docker_client: Any, runner_image: str, registry: str, _pushed_refs: list[str]
) -> Callable[[str], str]:
    """Push the runner image as ``<registry>/fifoflow-runner:<tag>`` and remove it here
    (every tag of it: the runner's own layers go, the base's stay), so that the
    dispatcher's pull downloads it. Later pushes start from a pull of the first."""
    import docker.errors

    def push(tag: str) -> str:
        ref = f"{registry}/fifoflow-runner:{tag}"
        try:
            image = docker_client.images.get(runner_image)
        except docker.errors.ImageNotFound:
            image = docker_client.images.pull(_pushed_refs[0])
        image.tag(ref)
        for line in docker_client.api.push(ref, stream=True, decode=True):
            assert "error" not in line, line
        docker_client.images.remove(image.id, force=True)
        _pushed_refs.append(ref)
        return ref

    return push


def remove_local(docker_client: Any, ref: str) -> None:
    import docker.errors

    try:
        docker_client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture
def cleanup_containers(docker_client: Any) -> Iterator[Callable[[Path], None]]:
    """Remove the containers and volumes of the dispatchers (by state dir) a test ran."""
    state_dirs: list[Path] = []
    yield state_dirs.append
    for state_dir in state_dirs:
        try:
            with sqlite3.connect(state_dir / "dispatcher.sqlite3") as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'dispatcher_id'").fetchone()
        except sqlite3.Error:
            row = None
        if row is None:
            continue
        for container in docker_client.containers.list(
            all=True, filters={"label": f"io.fifoflow.dispatcher={row[0]}"}
        ):
            container.remove(force=True, v=True)
            for mount in container.attrs.get("Mounts", []):
                if mount.get("Name"):
                    try:
                        docker_client.volumes.get(mount["Name"]).remove(force=True)
                    except Exception:
                        pass


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
