"""The conformance kit passes the three built-in hosts and catches broken ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fifoflow.runtimes.conformance import run_checks

BROKEN = Path(__file__).with_name("broken_host.py")


def failed_checks(breakage: str) -> dict[str, str]:
    """The kit run against broken_host.py with ``breakage``: failed check -> detail."""
    results = run_checks(
        [sys.executable, str(BROKEN), breakage], "python", timeout=2, out=lambda _: None
    )
    return {r.name: r.detail for r in results if r.status == "fail"}


@pytest.mark.parametrize("runtime", ["python", "node", "exec"])
def test_builtin_host_passes_the_kit(runtime: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fifoflow.runtimes.conformance", "--runtime", runtime],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert " 0 failed" in result.stdout.splitlines()[-1]
    # python and node have direct channels (PROTOCOL.md section 11); exec does not
    for check in (
        *("direct_send", "direct_full_cut", "direct_receive", "direct_receive_in_pieces"),
        "direct_garbage_is_fatal",
    ):
        assert f"{'SKIP' if runtime == 'exec' else 'PASS'} {check}" in result.stdout
    # all three count what they deliver inside themselves (section 12)
    assert "PASS local_counts" in result.stdout


def test_kit_names_the_rule_a_host_breaks_by_acknowledging_first() -> None:
    lines: list[str] = []
    results = run_checks(
        [sys.executable, str(BROKEN), "done-first"], "python", timeout=2, out=lines.append
    )
    failed = {r.name: r.detail for r in results if r.status == "fail"}
    assert "deliver_emit_done" in failed
    assert "emits before done" in failed["deliver_emit_done"]
    assert lines[-1].split(",")[1].strip() != "0 failed"


def test_kit_names_the_rule_a_raw_host_breaks_by_writing_msgs_first() -> None:
    failed = failed_checks("raw-msgs-first")
    assert "raw_emit" in failed
    assert "msgs last" in failed["raw_emit"]
    # the same host is fine by protocol 1: only the raw rule is broken
    assert "deliver_emit_done" not in failed


def test_kit_names_the_rule_a_direct_host_breaks_by_not_writing_its_channels() -> None:
    failed = failed_checks("direct-ignored")
    assert "direct_send" in failed
    assert '"d" and "ch"' in failed["direct_send"]
    assert "direct_receive" in failed


def test_kit_names_the_rule_a_counting_host_breaks_by_reporting_nothing() -> None:
    failed = failed_checks("counts-ignored")
    assert "local_counts" in failed
    assert '"local": [' in failed["local_counts"]
    assert "got None" in failed["local_counts"]


def test_kit_fails_a_host_whose_hello_lacks_the_protocol_version() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fifoflow.runtimes.conformance",
            "--lang",
            "python",
            "--timeout",
            "2",
            "--",
            sys.executable,
            str(BROKEN),
            "no-protocol",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "FAIL hello: hello.protocol must be 1" in result.stdout


def test_kit_refuses_an_unknown_runtime_with_usage_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fifoflow.runtimes.conformance", "--runtime", "cobol"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown runtime 'cobol'" in result.stderr
