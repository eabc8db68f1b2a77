"""``fifoflow runner install-service``: a unit systemd accepts, and no leftovers when a
step fails (here: systemd is not running, so ``systemctl`` fails)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path


def ff(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fifoflow.api", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    done = ff(
        "runner",
        "install-service",
        "--print",
        "--state-dir",
        str(tmp_path / "s"),
        "--dispatcher",
        "http://127.0.0.1:8480",
    )
    assert done.returncode == 0
    unit = tmp_path / "fifoflow-runner.service"
    unit.write_text(done.stdout)
    assert "--dispatcher http://127.0.0.1:8480" in done.stdout
    assert "EnvironmentFile=-" in done.stdout
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr


def test_a_failed_install_removes_what_it_wrote(tmp_path: Path) -> None:
    config = tmp_path / "config"
    state = tmp_path / "state"
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "PATH": os.environ["PATH"]}
    probe = (
        subprocess.run(["systemctl", "--user", "daemon-reload"], capture_output=True, check=False)
        if shutil.which("systemctl")
        else None
    )
    if probe is not None and probe.returncode == 0:
        pytest.skip("systemd runs here: installing would really enable a service")
    done = ff(
        "runner",
        "install-service",
        "--state-dir",
        str(state),
        "--registration-token",
        "tok",
        env=env,
    )
    assert done.returncode == 1
    assert "could not install the runner service" in done.stderr
    assert "removed what was written" in done.stderr
    assert not (config / "systemd" / "user" / "fifoflow-runner.service").exists()
    assert not (state / "registration.env").exists()
    gone = ff("runner", "uninstall-service", env=env)
    assert gone.returncode == 0
    assert "nothing to remove" in gone.stdout
