"""Runs with go modules on a real executor: the host binary is built as part of the
attempt (build lines in the run's logs), a second run of the same flow builds nothing
and takes a warm host of its module set, a compile error fails the attempt with the
file and line, cancel and timeout kill the go host's process."""

from __future__ import annotations

import os
import secrets
import shutil
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from fifoflow.flows import parse_flow
from fifoflow.runner.runs.model import RunProgress, RunState

from .helpers_exec import Reporter, executor, offer

if TYPE_CHECKING:
    from fifoflow.runner.runs.executor import RunExecutor

if shutil.which("go") is None and not os.environ.get("FIFOFLOW_GO"):
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI: the go toolchain is missing (tests.setup_machine installs golang-go)"
        )
    pytest.skip("no Go toolchain (apt-get install golang-go)", allow_module_level=True)

#: a cold Go cache compiles the standard library first (~20 s here)
BUILD = 180

PY_SRC = "def handle(msg, ctx):\n    return {'i': msg}\n"
NODE_DST = "exports.handle = (msg, ctx) => ({ ...msg, node: true });\n"


def go_mid(tag: str) -> str:
    """Counts in its state; ``tag`` makes the source (so its binary) new to the cache."""
    return (
        "package mid\n\n"
        'import "fifoflow"\n\n'
        f"// {tag}\n"
        "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
        '\tn, _ := ctx.State["n"].(float64)\n'
        '\tctx.State["n"] = n + 1\n'
        "\tm := msg.(map[string]any)\n"
        '\tm["mid"] = n + 1\n'
        "\treturn m, nil\n"
        "}\n"
    )


#: line 7 does not compile
GO_BROKEN = (
    "package mid\n\n"
    'import "fifoflow"\n\n'
    "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
    "\treturn nope(msg), nil\n"
    "}\n"
)
GO_SLEEPS = (
    "package mid\n\n"
    'import (\n\t"fifoflow"\n\t"time"\n)\n\n'
    "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
    '\ttime.Sleep(time.Duration(msg.(map[string]any)["i"].(float64)) * time.Second)\n'
    "\treturn msg, nil\n"
    "}\n"
)


def chain(mid: str) -> dict[str, Any]:
    return {
        "modules": [
            {"id": "src", "runtime": "python", "code": PY_SRC},
            {"id": "mid", "runtime": "go", "code": mid, "timeout": 60},
            {"id": "dst", "runtime": "node", "code": NODE_DST},
        ],
        "wires": ["src.out -> mid.in", "mid.out -> dst.in"],
    }


def build_lines(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["text"] for entry in logs if entry["stream"] == "build"]


class HostsReporter(Reporter):
    """Also notes, at each progress, whether the attempt had its go host yet."""

    def __init__(self) -> None:
        super().__init__()
        self.ex: RunExecutor | None = None
        self.go_host: list[bool] = []

    async def progress(self, p: RunProgress) -> bool:
        assert self.ex is not None
        hosts = self.ex.hosts(p.runId, p.attempt)
        self.go_host.append(any(key.startswith("go-") for key in hosts))
        return await super().progress(p)


async def test_python_go_node_run_then_a_second_run_builds_nothing() -> None:
    rep = HostsReporter()
    doc = chain(go_mid(secrets.token_hex(8)))
    async with executor(reporter=rep) as ex:
        rep.ex = ex
        first = offer(doc, [0, 1, 2], to="src.in", lease=0.1)
        await ex.start(first)
        r1 = await rep.wait_result(first, BUILD)
        # the lease was renewed while the go host was being built
        assert False in rep.go_host, rep.go_host
        second = offer(doc, [5], to="src.in")
        await ex.start(second)
        r2 = await rep.wait_result(second)
        stats = ex.pool.statistics()
    assert r1.state is RunState.SUCCEEDED, r1
    assert [o["msg"] for o in r1.outputs] == [
        {"i": i, "mid": i + 1, "node": True} for i in range(3)
    ]
    assert r1.handled == {"src": 3, "mid": 3, "dst": 3}
    lines = build_lines(r1.logs)
    assert any(line.startswith("building the go host go-") for line in lines), lines
    assert any(line.startswith("built the go host go-") for line in lines), lines
    # the second run: nothing built, a warm host of that module set, fresh state
    assert r2.state is RunState.SUCCEEDED, r2
    assert [o["msg"] for o in r2.outputs] == [{"i": 5, "mid": 1, "node": True}]
    lines = build_lines(r2.logs)
    assert lines, r2.logs
    assert all("cached" in line for line in lines), lines
    assert stats.reused >= 1
    assert any(key.startswith("go-") for key in stats.idle), stats


async def test_a_compile_error_fails_the_attempt_with_file_and_line() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(chain(GO_BROKEN), [1], to="src.in")
        await ex.start(o)  # accepted: the build is part of the attempt
        r = await rep.wait_result(o, BUILD)
        assert ex.held() == []
    assert r.state is RunState.FAILED, r
    assert "module mid does not build" in (r.reason or ""), r.reason
    assert "job/mid:6:" in (r.reason or ""), r.reason
    assert "nope" in (r.reason or "")
    assert r.errors[0]["module"] == "mid"
    assert r.errors[0]["error"]["type"] == "CompileError"
    assert r.errorsTotal == 1
    assert r.outputs == []
    assert any("does not build" in line for line in build_lines(r.logs))


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancel_or_timeout_kills_the_go_host(how: str) -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        options: dict[str, Any] = {"lease": 0.5}
        if how == "timeout":
            options["timeout"] = 3.0
        o = offer(chain(GO_SLEEPS), [30], to="src.in", **options)
        await ex.start(o)
        found = await ex.wait_hosts(o.runId, 1)
        (key,) = [k for k in found if k.startswith("go-")]
        pid = found[key]
        assert pid is not None
        assert psutil.pid_exists(pid)
        host = psutil.Process(pid)
        # the message is in the go host
        await rep.wait_for(lambda: any(p.handled.get("mid") for p in rep.progress_seen), BUILD)
        if how == "cancel":
            await ex.cancel(o.runId, 1, "canceled by the user")
            assert not _running(host)
        r = await rep.wait_result(o, BUILD)
        assert not _running(host)
    if how == "cancel":
        assert r.state is RunState.CANCELED
        assert r.reason == "canceled by the user"
    else:
        assert r.state is RunState.TIMED_OUT, r
        assert "timeout" in (r.reason or "")


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def go_host_key(doc: dict[str, Any]) -> str:
    flow = parse_flow(
        {"fifoflow": 1, "id": "job", **doc},
        base_dir=None,
        runtimes=["python", "go", "node"],
    )
    (key,) = {m.host for m in flow.modules if m.runtime == "go"}
    return key


async def test_the_pool_keeps_the_most_recently_used_go_sets_warm() -> None:
    rep = Reporter()
    one, two = chain(go_mid("one")), chain(GO_SLEEPS)
    async with executor(reporter=rep, warm=1) as ex:
        ex.pool.max_builds = 1
        o1 = offer(one, [1], to="src.in")
        await ex.start(o1)
        assert (await rep.wait_result(o1, BUILD)).state is RunState.SUCCEEDED
        assert go_host_key(one) in ex.pool.statistics().idle
        o2 = offer(two, [0], to="src.in")
        await ex.start(o2)
        r2 = await rep.wait_result(o2, BUILD)
        idle = ex.pool.statistics().idle
    assert r2.state is RunState.SUCCEEDED, r2
    assert [o["msg"] for o in r2.outputs] == [{"i": 0, "node": True}]
    # the set used last is kept warm; the other one's hosts were killed
    assert [key for key in idle if key.startswith("go-")] == [go_host_key(two)]
