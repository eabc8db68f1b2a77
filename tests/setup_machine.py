"""What the test suite needs of this machine, installed and started by ``make test``.

- A Docker engine: when ``docker info`` does not answer and we are root, Debian's
  ``docker.io`` is installed if missing and ``dockerd`` started in the background
  (its own session, log in ``/var/log/fifoflow-dockerd.log``); it keeps running after
  the tests, like any engine.
- ``debootstrap`` (the offline base image) and ``docker-registry`` (a local registry,
  so the dispatcher's pulls are real pulls).
- ``go`` (Debian's ``golang-go``) for the go runtime and its tests.
- ``chromium`` for the browser tests (Playwright drives /usr/bin/chromium; it never
  downloads a browser).

Without root, or without apt, nothing is installed: the Docker tests then skip with
the reason, except under ``CI=true``, where this script fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

DOCKERD_LOG = "/var/log/fifoflow-dockerd.log"
PACKAGES = {
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "docker-registry": "docker-registry",
    "chromium": "chromium",
    "go": "golang-go",
}


def _say(text: str) -> None:
    print(f"setup: {text}", flush=True)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def ensure_packages() -> str | None:
    missing = [pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"missing {', '.join(missing)} and cannot install them (needs root and apt-get)"
    _say(f"installing {', '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return None


def ensure_docker() -> str | None:
    if docker_answers():
        return None
    problem = ensure_packages()
    if problem:
        return problem
    if os.geteuid() != 0:
        return "no Docker engine answers and only root can start dockerd"
    _say(f"starting dockerd (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as log:
        subprocess.Popen(
            ["dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not a child of this script or of the tests
        )
    deadline = time.monotonic() + 60
    while not docker_answers():
        if time.monotonic() > deadline:
            return f"dockerd did not answer within 60 s (see {DOCKERD_LOG})"
        time.sleep(0.5)
    return None


def main() -> int:
    problem = ensure_docker() or ensure_packages()
    if problem is None:
        _say("Docker engine, debootstrap, docker-registry and chromium ready")
        return 0
    if os.environ.get("CI") == "true":
        print(f"setup: FAILED: {problem}", file=sys.stderr)
        return 1
    _say(f"Docker and browser tests will be skipped: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
