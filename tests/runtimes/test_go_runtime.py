"""The go runtime outside a runner: the conformance kit on the go host, the runtimes
listing with and without a toolchain, the builder's error mapping, validate's go vet."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fifoflow.runtimes.gobuild import GoBuildError, GoSource, ensure_binary, vet

GO = shutil.which("go")
if GO is None:
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI: the go toolchain is missing (tests.setup_machine installs golang-go)"
        )
    pytest.skip("no Go toolchain (apt-get install golang-go)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
FIFOFLOW = [sys.executable, "-m", "fifoflow.api"]

GOOD = 'package x\n\nimport "fifoflow"\n\nfunc Handle(msg any, ctx *fifoflow.Ctx) (any, error) { return msg, nil }\n'


def test_go_host_passes_the_kit() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fifoflow.runtimes.conformance", "--runtime", "go"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    # the go host speaks raw (1.1), direct (1.2) and counts (1.3): only load_bad_command
    # (exec only) is skipped
    for check in (
        "raw_emit",
        "direct_send",
        "direct_full_cut",
        "direct_receive",
        "direct_receive_in_pieces",
        "direct_garbage_is_fatal",
        "local_counts",
    ):
        assert f"PASS {check}" in result.stdout
    assert result.stdout.splitlines()[-1] == "24 passed, 0 failed, 1 skipped"


def test_runtimes_lists_go_only_with_a_toolchain(tmp_path: Path) -> None:
    listed = subprocess.run([*FIFOFLOW, "runtimes"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0
    assert any(line.split()[0] == "go" for line in listed.stdout.splitlines())
    # a PATH with node but no go
    bare = tmp_path / "bin"
    bare.mkdir()
    node = shutil.which("node")
    assert node is not None
    (bare / "node").symlink_to(node)
    env = {k: v for k, v in os.environ.items() if k != "FIFOFLOW_GO"}
    env["PATH"] = str(bare)
    without = subprocess.run(
        [*FIFOFLOW, "runtimes"], capture_output=True, text=True, timeout=60, env=env
    )
    assert without.returncode == 0
    assert "go" not in [line.split()[0] for line in without.stdout.splitlines()]
    assert (
        "not available: go (go not found: needs the Go toolchain (Debian package golang-go"
        in without.stderr
    )


def test_compile_errors_name_the_users_file_and_line(tmp_path: Path) -> None:
    bad = GOOD.replace("return msg, nil", "return msg, nil +")
    with pytest.raises(GoBuildError) as info:
        ensure_binary([GoSource(GOOD, "good.go"), GoSource(bad, "flows/x/bad.go")], tmp_path)
    assert info.value.filename == "flows/x/bad.go"
    assert info.value.line == 5
    assert info.value.message.startswith("flows/x/bad.go:5:")
    assert "mods/m" not in info.value.output, "a generated path leaked into the message"


def test_a_wrong_handle_signature_is_reported_at_the_func(tmp_path: Path) -> None:
    wrong = 'package x\n\nimport "fifoflow"\n\nvar _ = fifoflow.Version\n\nfunc Handle(msg string) string { return msg }\n'
    with pytest.raises(GoBuildError) as info:
        ensure_binary([GoSource(wrong, "w.go")], tmp_path)
    assert info.value.line == 7
    assert "wrong signature" in info.value.message
    assert "func Handle(msg any, ctx *fifoflow.Ctx) (any, error)" in info.value.message


def test_vet_reports_in_the_users_terms(tmp_path: Path) -> None:
    suspicious = GOOD.replace(
        "return msg, nil }", 'ctx.Log(fmt.Sprintf("%d", "x")); return msg, nil }'
    ).replace('import "fifoflow"', 'import (\n\t"fmt"\n\n\t"fifoflow"\n)')
    assert vet([GoSource(GOOD, "good.go")], tmp_path) == []
    problems = vet([GoSource(suspicious, "flows/s.go")], tmp_path)
    assert any(p.startswith("flows/s.go:9:") and "Sprintf" in p for p in problems), problems


def test_validate_runs_go_vet(tmp_path: Path) -> None:
    ok = subprocess.run(
        [*FIFOFLOW, "validate", str(REPO / "flows" / "examples" / "go" / "flow.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "m.go").write_text(GOOD.replace("return msg, nil", "return undefinedName, nil"))
    (tmp_path / "flow.json").write_text(
        '{"fifoflow": 1, "id": "v", "modules": [{"id": "m", "runtime": "go", "file": "m.go"}]}'
    )
    bad = subprocess.run(
        [*FIFOFLOW, "validate", str(tmp_path / "flow.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert f"{tmp_path / 'm.go'}:5:" in bad.stderr, bad.stderr
    assert "undefinedName" in bad.stderr


def test_go_host_unit_tests(tmp_path: Path) -> None:
    """The host's own Go tests (its JSON reader and writer against encoding/json, a
    delivery benchmark's set-up) pass."""
    from fifoflow.runtimes.gobuild import HOST_DIR, _go_env

    work = tmp_path / "host"
    work.mkdir()
    for path in HOST_DIR.glob("*.go"):
        shutil.copy(path, work / path.name)
    (work / "go.mod").write_text("module fifoflow\n\ngo 1.18\n")
    result = subprocess.run(
        [GO, "test", "-count=1", "./..."],
        cwd=work,
        env=_go_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok")
