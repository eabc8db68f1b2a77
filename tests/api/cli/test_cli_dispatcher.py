"""``fifoflow dispatcher token|runners|flows|events|deploy|drain|...`` against a real
dispatcher process: what each prints, and what it says (and exits with) when the
dispatcher refuses, cannot be reached, or the token file is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from ...conftest import REPO
from ...dispatcher.test_dispatcher import DispatcherProcess

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def live_dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path_factory.mktemp("cli") / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


def ff(d: DispatcherProcess, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fifoflow.api", "dispatcher", *args],
        env={
            **os.environ,
            "FIFOFLOW_DISPATCHER_URL": d.url,
            "FIFOFLOW_DISPATCHER_TOKEN_FILE": str(d.state_dir / "token"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tokens_lists_and_events(live_dispatcher: DispatcherProcess) -> None:
    d = live_dispatcher
    quiet = ff(d, "token", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("ffreg_")
    assert quiet.stderr == ""
    told = ff(d, "token")
    assert told.returncode == 0, told.stderr
    assert told.stdout.startswith("ffreg_")
    assert "works once, until" in told.stderr
    client = ff(d, "client-token")
    assert client.stdout.strip() == (d.state_dir / "client-token").read_text().strip()

    runners = ff(d, "runners")
    assert runners.returncode == 0, runners.stderr
    assert runners.stdout.split() == [
        "RUNNER", "NAME", "STATUS", "SEEN", "CPUS", "MEMORY", "RUNTIMES", "LABELS",
    ]  # fmt: skip
    assert orjson.loads(ff(d, "runners", "--json").stdout) == []
    assert orjson.loads(ff(d, "containers").stdout) == {"backend": None}

    events = ff(d, "events").stdout.splitlines()
    assert [line.split()[2] for line in events][:2] == ["token", "token"]
    first = int(events[0].split()[0])
    assert ff(d, "events", "--since", str(first)).stdout.splitlines() == events[1:]


def test_deploy_places_or_says_why_pending(
    live_dispatcher: DispatcherProcess, tmp_path: Path
) -> None:
    d = live_dispatcher
    done = ff(d, "deploy", str(REPO / "flows/examples/hello/flow.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flow 'hello' is pending: module greet: no ready runner")
    assert done.stdout.rstrip().endswith("(placed when a runner can take it)")
    flows = ff(d, "flows").stdout.splitlines()
    assert flows[0].split() == ["FLOW", "STATUS", "RUNNER", "MODULES", "REASON"]
    assert flows[1].split()[:4] == ["hello", "pending", "-", "greet,shout,frame"]
    assert [f["id"] for f in orjson.loads(ff(d, "flows", "--json").stdout)] == ["hello"]
    assert any(" deployed " in line for line in ff(d, "events").stdout.splitlines())

    bad = tmp_path / "flow.json"
    bad.write_text('{"fifoflow": 1, "id": "bad", "modules": [{"id": "a", "runtime": "nodejs"}]}')
    refused = ff(d, "deploy", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"{bad}: invalid flow\n  ")


def test_refusals_unreachable_and_token_problems(
    live_dispatcher: DispatcherProcess, tmp_path: Path
) -> None:
    d = live_dispatcher
    drain = ff(d, "drain", "r-nope")
    assert (drain.returncode, drain.stdout) == (1, "")
    assert drain.stderr == "fifoflow: no runner 'r-nope' (HTTP 404)\n"
    update = ff(d, "update-image", "foo:1")
    assert update.returncode == 1
    assert update.stderr.splitlines() == [
        "updating to foo:1 (follow with: fifoflow dispatcher events)",
        "fifoflow: this dispatcher has no container backend (serve --docker IMAGE) (HTTP 409)",
    ]

    away = ff(d, "runners", "--url", "http://127.0.0.1:1")
    assert away.returncode == 1
    assert away.stderr.startswith("fifoflow: cannot reach the dispatcher at http://127.0.0.1:1: ")

    missing = ff(d, "runners", "--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.startswith(
        f"fifoflow: no token file at {tmp_path / 'nope'} (a dispatcher"
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    wrong.chmod(0o600)
    denied = ff(d, "runners", "--token-file", str(wrong))
    assert denied.returncode == 1
    assert denied.stderr.startswith("fifoflow: wrong token")
    assert denied.stderr.endswith(" (HTTP 401)\n")
