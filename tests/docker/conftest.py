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
import sqlite3
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

from .registry import start_registry

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


@pytest.fixture(scope="session")
def registry(
    docker_client: Any, runner_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    try:
        container, address = start_registry(docker_client, tmp_path_factory.mktemp("registry"))
    except FileNotFoundError as exc:
        why = f"{exc} (tests/setup_machine.py installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield address
    finally:
        container.remove(force=True)


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
