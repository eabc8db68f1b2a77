"""A local image registry for tests and benchmarks: Debian's ``docker-registry`` binary
run in a container of the base image on a free 127.0.0.1 port (host network)."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from fifoflow.images.build import DEFAULT_BASE

__all__ = ["start_registry"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_registry(client: Any, directory: Path, timeout: float = 30) -> tuple[Any, str]:
    """(its container, ``127.0.0.1:PORT``) once it answers; the caller removes it."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise FileNotFoundError("Debian's docker-registry is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = directory / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: /tmp/registry\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    container = client.containers.run(
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
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not _answers(f"http://{address}/v2/"):
        if time.monotonic() > deadline:
            container.remove(force=True)
            raise TimeoutError(f"the registry at {address} did not answer within {timeout:g} s")
        time.sleep(0.1)
    return container, address
