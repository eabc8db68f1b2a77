"""Node-RED side by side: the same three-function chain, embedded in a node process.

Node-RED is installed once, from the npm registry, into a cache directory
(``$FIFOFLOW_BENCH_CACHE``, default ``~/.cache/fifoflow-bench``), pinned to
:data:`VERSION`; later runs reuse it. ``nodered_chain.js`` builds the flow (three
``function`` nodes doing ``return msg;`` and a counting one), hands messages to the
first node's ``receive()`` and times until the last has counted them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

VERSION = "5.0.7"
HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    base = os.environ.get("FIFOFLOW_BENCH_CACHE") or str(Path.home() / ".cache" / "fifoflow-bench")
    return Path(base) / f"node-red-{VERSION}"


def ensure_installed() -> Path:
    target = cache_dir()
    marker = target / "node_modules" / "node-red" / "package.json"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"installing Node-RED {VERSION} into {target} (once; later runs reuse it)", flush=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
            str(target),
            f"node-red@{VERSION}",
        ],
        check=True,
        stdout=sys.stderr,
    )
    return target


def run(messages: int, rounds: int) -> dict[str, Any]:
    """Node-RED's msgs/s per round, or ``{"error": why}`` if it cannot be installed."""
    try:
        home = ensure_installed()
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"error": f"Node-RED {VERSION} could not be installed: {exc}"}
    with tempfile.TemporaryDirectory(prefix="ffbench-nodered-") as user_dir:
        done = subprocess.run(
            [
                "node",
                str(HERE / "nodered_chain.js"),
                str(home),
                user_dir,
                str(messages),
                str(rounds),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        return {"error": f"Node-RED run failed: {done.stderr.strip()[-500:]}"}
    return orjson.loads(done.stdout.strip().splitlines()[-1])
