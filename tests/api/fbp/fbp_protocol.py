"""The FBP protocol's conformance suite (``fbp-test`` of the npm package ``fbp-protocol``).

Installed at test time from the npm registry, through npm, into a cache directory
(``$FIFOFLOW_TEST_CACHE``, default ``~/.cache/fifoflow-test``), pinned to :data:`VERSION`;
later runs reuse it. The suite is run as published: its ``fbp-test`` bin, a
``fbp-config.json`` naming host, port and the ``core`` collection, the secret in
``FBP_PROTOCOL_SECRET``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

VERSION = "0.9.8"
#: the cases fbp-test 0.9.8 has (a different count means the suite is not the one pinned)
CASES = 22


def cache_dir() -> Path:
    base = os.environ.get("FIFOFLOW_TEST_CACHE") or str(Path.home() / ".cache" / "fifoflow-test")
    return Path(base) / f"fbp-protocol-{VERSION}"


def ensure_installed() -> Path:
    """The install prefix (CalledProcessError or OSError when npm cannot install it)."""
    target = cache_dir()
    marker = target / "node_modules" / "fbp-protocol" / "package.json"
    if marker.exists() and (target / "node_modules" / ".bin" / "_mocha").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"installing fbp-protocol {VERSION} into {target} (once)", file=sys.stderr)
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
            str(target),
            f"fbp-protocol@{VERSION}",
        ],
        check=True,
        stdout=sys.stderr,
        timeout=600,
    )
    return target


def run_fbp_test(
    prefix: Path, project: Path, *, host: str, port: int, secret: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the suite against a runtime already listening on ``host:port``."""
    config = {
        "name": "fifoflow",
        "host": host,
        "port": port,
        "collection": "core",
        "version": "0.7",
    }
    (project / "fbp-config.json").write_bytes(orjson.dumps(config))
    return subprocess.run(
        ["node", str(prefix / "node_modules" / ".bin" / "fbp-test")],
        cwd=prefix,  # fbp-test runs ./node_modules/.bin/_mocha
        env={**os.environ, "PROJECT_HOME": str(project), "FBP_PROTOCOL_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
