"""Runner containers (``--only docker``): the runner image's size, a cold container
start to its runner registered and ready (seconds, from the dispatcher's own event
times), the first pull from a local registry, and the duration of an image update
with one flow moved. Needs a Docker engine (``make test`` starts one); skipped without.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from ..dispatcher.test_dispatcher import DispatcherProcess, events, wait_until
from ..docker.registry import start_registry


def _engine() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception:
        return None
    return client


def bench_image() -> str:
    """The runner image the container figures use, built offline (cached)."""
    from fifoflow.images.build import (
        DEFAULT_BASE,
        build_base,
        build_runner,
        build_wheelhouse,
        default_cache_dir,
    )

    quiet = lambda line: None  # noqa: E731
    cache = default_cache_dir()
    build_base(DEFAULT_BASE, cache_dir=cache, say=quiet)
    return build_runner(
        "fifoflow-runner:bench",
        base=DEFAULT_BASE,
        wheel_dir=build_wheelhouse(cache / "wheelhouse", say=quiet),
        say=quiet,
    )


def run(kills: int = 5, updates: int = 3) -> dict[str, Any] | None:
    client = _engine()
    if client is None:
        print("  skipped: no Docker engine answers (make test starts one)")
        return None
    tag = bench_image()
    size = client.images.get(tag).attrs["Size"]
    with tempfile.TemporaryDirectory(prefix="ffbench-docker-") as tmp:
        registry, address = start_registry(client, Path(tmp))
        dispatcher = None
        try:
            refs = []
            for name in ("v1", "v2"):
                ref = f"{address}/fifoflow-runner:{name}"
                client.images.get(tag).tag(ref)
                _pushed(client, ref)
                refs.append(ref)
            client.images.remove(client.images.get(tag).id, force=True)  # pull for real
            dispatcher = DispatcherProcess(Path(tmp) / "dispatcher", heartbeat=0.5)
            dispatcher.command = lambda: [  # type: ignore[method-assign]
                *DispatcherProcess.command(dispatcher),  # type: ignore[arg-type]
                "--docker", refs[0],
            ]  # fmt: skip
            dispatcher.start()
            d = dispatcher
            wait_until(
                "the pull", lambda: any(e["status"] == "done" for e in events(d, "pull")), 120
            )
            pulls = events(d, "pull")
            pull_s = pulls[-1]["time"] - pulls[0]["time"]
            starts = []
            for i in range(kills + 1):
                slot = wait_until(
                    "the benchmark step",
                    lambda: [
                        c
                        for c in d.api("GET", "/backend")["containers"]
                        if c["runnerStatus"] == "ready"
                    ],
                    120,
                )[0]
                started = next(
                    e for e in events(d, "container-started") if e["container"] == slot["name"]
                )
                ready = next(e for e in events(d, "ready") if e["runner"] == slot["runner"])
                if i:  # the first one includes the pull
                    starts.append(ready["time"] - started["time"])
                if i < kills:
                    client.containers.get(slot["container"]).kill()
                    wait_until("the killed container gone", lambda s=slot: not any(
                        c["name"] == s["name"] for c in d.api("GET", "/backend")["containers"]
                    ))  # fmt: skip
            d.api("POST", "/flows", json=_FLOW)
            durations = []
            for i in range(updates):
                done = d.api(
                    "POST", "/backend/image", json={"image": refs[(i + 1) % 2]}, timeout=300
                )
                durations.append(done["seconds"])
        finally:
            if dispatcher is not None:
                dispatcher.stop()
                for c in client.containers.list(all=True, filters={"label": "io.fifoflow.slot"}):
                    c.remove(force=True, v=True)
                for v in client.volumes.list(filters={"dangling": True}):
                    v.remove(force=True)
            registry.remove(force=True)
    return {
        "image_mib": size / 2**20,
        "first_pull_s": pull_s,
        "container_start_to_ready_s": statistics.median(starts),
        "container_start_to_ready_max_s": max(starts),
        "update_s": statistics.median(durations),
        "update_max_s": max(durations),
    }


def _pushed(client: Any, ref: str) -> bool:
    for line in client.api.push(ref, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
    return True


_FLOW = {
    "fifoflow": 1,
    "id": "bench",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
        {"id": "b", "runtime": "node", "code": "exports.handle = (msg) => msg;\n"},
    ],
    "wires": ["a.out -> b.in"],
}


def print_report(result: dict[str, Any] | None) -> None:
    if result is None:
        return
    print(f"  runner image size: {result['image_mib']:.0f} MiB")
    print(f"  first pull from a local registry: {result['first_pull_s']:.2f} s")
    print(
        f"  cold container start -> runner registered and ready: "
        f"{result['container_start_to_ready_s']:.2f} s median "
        f"(max {result['container_start_to_ready_max_s']:.2f} s)"
    )
    print(
        f"  image update, one flow moved: {result['update_s']:.2f} s median "
        f"(max {result['update_max_s']:.2f} s)"
    )
