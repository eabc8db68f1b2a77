"""A real dispatcher process and real runner processes: registration, hardware,
heartbeats, loss, sign-off, and a dispatcher restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from ..api.helpers import ServerProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


class DispatcherProcess(ServerProcess):
    def __init__(self, state_dir: Path, port: int = 0, heartbeat: float = 0.2) -> None:
        super().__init__(state_dir)
        self.port = port
        self.heartbeat = heartbeat

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "fifoflow.api", "dispatcher", "serve",
            "--port", str(self.port), "--state-dir", str(self.state_dir),
            "--heartbeat", str(self.heartbeat),
        ]  # fmt: skip

    def api(self, method: str, path: str, **kw: Any) -> Any:
        token = (self.state_dir / "token").read_text().strip()
        response = httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {token}"},
            **{"timeout": 30, **kw},
        )
        response.raise_for_status()
        return response.json()

    def token(self) -> str:
        return self.api("POST", "/tokens")["token"]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll a condition of the dispatcher's state with a deadline (its API has no push)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def runner_status(dispatcher: DispatcherProcess, runner_id: str) -> str:
    return next(r["status"] for r in dispatcher.api("GET", "/runners") if r["id"] == runner_id)


def events(
    dispatcher: DispatcherProcess, kind: str, runner_id: str | None = None
) -> list[dict[str, Any]]:
    return [
        e for e in dispatcher.api("GET", "/events")
        if e["kind"] == kind and (runner_id is None or e["runner"] == runner_id)
    ]  # fmt: skip


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def start_runner(
    tmp_path: Path, name: str, dispatcher: DispatcherProcess, token: str | None
) -> ServerProcess:
    extra = ["--dispatcher", dispatcher.url]
    if token:
        extra += ["--registration-token", token]
    runner = ServerProcess(tmp_path / name, *extra)
    runner.start()
    return runner


def linked_id(runner: ServerProcess) -> str:
    # The runner prints "linked ... as <id>" once its first ready was accepted.
    buffer = wait_until(
        "the runner to link", lambda: " as r-" in runner.output() and runner.output()
    )
    return "r-" + buffer.split(" as r-", 1)[1].split()[0]


def test_three_runners_register_report_and_sign_off(
    tmp_path: Path, dispatcher: DispatcherProcess
) -> None:
    runners = [start_runner(tmp_path, f"r{i}", dispatcher, dispatcher.token()) for i in range(3)]
    try:
        ids = [linked_id(r) for r in runners]
        listed = {r["id"]: r for r in dispatcher.api("GET", "/runners")}
        assert sorted(listed) == sorted(ids)
        for rid in ids:
            assert listed[rid]["status"] == "ready"
            hw = listed[rid]["hardware"]
            assert hw["cpus"] >= 1
            assert {"python", "node", "exec"} <= set(hw["runtimes"])
            [report] = events(dispatcher, "hardware", rid)
            assert report["full"] is True
        identity = tmp_path / "r0" / "dispatcher.json"
        assert oct(identity.stat().st_mode & 0o777) == "0o600"
        assert orjson.loads(identity.read_bytes())["runnerId"] == ids[0]

        # SIGTERM: the runner signs off and exits 0.
        assert runners[0].stop() == 0
        assert runner_status(dispatcher, ids[0]) == "signed-off"

        # Restart with a changed cached hardware copy: only the difference is sent.
        cache = tmp_path / "r0" / "hardware.json"
        real = orjson.loads(cache.read_bytes())
        cache.write_bytes(orjson.dumps({**real, "cpus": 999, "os": "Plan 9"}))
        runners[0] = start_runner(tmp_path, "r0", dispatcher, None)  # no token needed now
        assert linked_id(runners[0]) == ids[0]
        reports = events(dispatcher, "hardware", ids[0])
        assert reports[-1]["full"] is False
        assert reports[-1]["changes"] == {"cpus": real["cpus"], "os": real["os"]}
        assert runner_status(dispatcher, ids[0]) == "ready"

        # SIGKILL: no sign-off; the dispatcher marks it lost after the TTL (3 x 0.2 s).
        assert runners[1].proc is not None
        runners[1].proc.send_signal(signal.SIGKILL)
        runners[1].proc.wait()
        wait_until(
            "the killed runner to be lost", lambda: runner_status(dispatcher, ids[1]) == "lost"
        )
        [lost] = events(dispatcher, "lost", ids[1])
        assert lost["silentFor"] >= 0.6
        assert runner_status(dispatcher, ids[2]) == "ready"  # the others are fine
    finally:
        for runner in runners:
            runner.stop()


def test_a_used_or_unknown_token_is_refused(tmp_path: Path, dispatcher: DispatcherProcess) -> None:
    token = dispatcher.token()
    first = start_runner(tmp_path, "a", dispatcher, token)
    try:
        linked_id(first)
        for name, bad in (("b", token), ("c", "ffreg_nope")):
            done = subprocess.run(
                [sys.executable, "-m", "fifoflow.api", "runner", "serve", "--port", "0",
                 "--state-dir", str(tmp_path / name), "--dispatcher", dispatcher.url,
                 "--registration-token", bad],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 2
            expected = "already used" if bad == token else "unknown registration token"
            assert expected in done.stderr
            assert "fifoflow dispatcher token" in done.stderr
        unregistered = subprocess.run(
            [sys.executable, "-m", "fifoflow.api", "runner", "serve", "--port", "0",
             "--state-dir", str(tmp_path / "d"), "--dispatcher", dispatcher.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert unregistered.returncode == 2
        assert "not registered" in unregistered.stderr
    finally:
        first.stop()


def test_runners_reconnect_after_a_dispatcher_restart(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    port = int(dispatcher.url.rsplit(":", 1)[1])
    runner = start_runner(tmp_path, "r", dispatcher, dispatcher.token())
    try:
        rid = linked_id(runner)
        assert dispatcher.stop() == 0
        dispatcher = DispatcherProcess(tmp_path / "dispatcher", port=port)
        dispatcher.start()
        # Same runners (SQLite), and the runner comes back on its own (backoff).
        assert [r["id"] for r in dispatcher.api("GET", "/runners")] == [rid]
        wait_until(
            "the runner to reconnect", lambda: len(events(dispatcher, "connected", rid)) >= 2
        )
        wait_until(
            "the runner to be ready again", lambda: runner_status(dispatcher, rid) == "ready"
        )
        assert len(events(dispatcher, "registered", rid)) == 1
    finally:
        runner.stop()
        dispatcher.stop()


def test_a_runner_comes_back_within_the_ttl_after_a_long_dispatcher_downtime(
    tmp_path: Path,
) -> None:
    # A restarted dispatcher gives each runner it knew one TTL (3 heartbeats: 3 s here)
    # to come back before it is lost and its flows are placed again from snapshots.
    # After a long downtime the runner's backoff has grown past that (up to 10 s, +50%
    # jitter): it must wait at most a third of the TTL the dispatcher gave it.
    dispatcher = DispatcherProcess(tmp_path / "dispatcher", heartbeat=1.0)
    dispatcher.start()
    port = int(dispatcher.url.rsplit(":", 1)[1])
    runner = start_runner(tmp_path, "r", dispatcher, dispatcher.token())
    try:
        rid = linked_id(runner)
        placed = dispatcher.api("POST", "/flows", json=COUNTER)
        assert (placed["status"], placed["runner"]) == ("placed", rid)
        assert dispatcher.stop() == 0
        # the downtime itself (no synchronization): long enough for the backoff to grow
        # to 3.2 s and more between tries (0.2 s doubling)
        time.sleep(8)
        dispatcher = DispatcherProcess(tmp_path / "dispatcher", port=port, heartbeat=1.0)
        dispatcher.start()
        back = time.monotonic()
        wait_until(
            "the runner to reconnect", lambda: len(events(dispatcher, "connected", rid)) >= 2
        )
        took = time.monotonic() - back
        assert took < 3.0, f"the runner came back {took:.1f} s after the restart (TTL 3 s)"
        wait_until("the runner ready again", lambda: runner_status(dispatcher, rid) == "ready")
        assert not events(dispatcher, "lost", rid)
        assert not events(dispatcher, "displaced")
        [flow] = dispatcher.api("GET", "/flows")
        assert (flow["runner"], flow["status"]) == (rid, "placed")
        assert dispatcher.api("GET", "/health")["ttl"] == 3.0
    finally:
        runner.stop()
        dispatcher.stop()


def test_operator_routes_need_the_token(dispatcher: DispatcherProcess) -> None:
    for method, path in (
        ("GET", "/runners"),
        ("POST", "/tokens"),
        ("GET", "/events"),
        ("GET", "/health"),
    ):
        response = httpx.request(method, dispatcher.url + path, timeout=30)
        assert response.status_code == 401
        assert response.json()["error"]["field"] == "Authorization"
    assert dispatcher.api("GET", "/health")["status"] == "ok"


COUNTER = {
    "fifoflow": 1,
    "id": "counter",
    "modules": [
        {
            "id": "count",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    ctx.state[msg] = ctx.state.get(msg, 0) + 1\n"
                "    return {msg: ctx.state[msg]}\n"
            ),
        }
    ],
}


def test_a_flow_is_placed_and_moves_off_a_lost_runner_with_its_state(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    port = int(dispatcher.url.rsplit(":", 1)[1])
    runners = [start_runner(tmp_path, f"r{i}", dispatcher, dispatcher.token()) for i in range(2)]
    try:
        ids = [linked_id(r) for r in runners]
        placed = dispatcher.api("POST", "/flows", json=COUNTER)
        assert placed["status"] == "placed"
        holder = placed["runner"]
        other = next(i for i in ids if i != holder)
        dispatcher.api(
            "POST", "/flows/counter/modules/count/inputs/in", json={"msgs": ["a", "a", "b"]}
        )
        wait_until(
            "the counts",
            lambda: (
                dispatcher.api("GET", "/flows/counter/modules/count/state")["state"]
                == {"a": 2, "b": 1}
            ),
        )
        # The runner's checkpoint reaches the dispatcher (every second).
        wait_until(
            "a snapshot",
            lambda: (
                dispatcher.api("GET", "/flows/counter")["states"] == {"count": {"a": 2, "b": 1}}
            ),
        )

        killed = runners[ids.index(holder)]
        assert killed.proc is not None
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait()
        moved = wait_until(
            "the flow to be placed on the other runner",
            lambda: (
                (f := dispatcher.api("GET", "/flows/counter"))["runner"] == other
                and f["status"] == "placed"
                and f
            ),
        )
        assert moved["runner"] == other
        kinds = [e["kind"] for e in dispatcher.api("GET", "/events") if e.get("flow") == "counter"]
        assert kinds[-3:] == ["placed", "displaced", "placed"]
        dispatcher.api("POST", "/flows/counter/modules/count/inputs/in", json={"msgs": ["a"]})
        wait_until(
            "the counter to go on from its snapshot",
            lambda: (
                dispatcher.api("GET", "/flows/counter/modules/count/state")["state"]
                == {"a": 3, "b": 1}
            ),
        )

        # A dispatcher restart keeps flows and placements.
        assert dispatcher.stop() == 0
        dispatcher = DispatcherProcess(tmp_path / "dispatcher", port=port)
        dispatcher.start()
        [flow] = dispatcher.api("GET", "/flows")
        assert (flow["id"], flow["runner"], flow["status"]) == ("counter", other, "placed")
        wait_until(
            "the runner to be ready again", lambda: runner_status(dispatcher, other) == "ready"
        )
        wait_until(
            "calls to be forwarded again",
            lambda: _try(
                lambda: dispatcher.api("GET", "/flows/counter/modules/count/state")["state"]
            ),
        )
    finally:
        for runner in runners:
            runner.stop()  # (a killed one: just collects its output and closes its pipe)
        dispatcher.stop()


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except httpx.HTTPStatusError:
        return None


def test_a_flow_no_runner_can_take_waits_as_pending(dispatcher: DispatcherProcess) -> None:
    pending = dispatcher.api("POST", "/flows", json=COUNTER)
    assert pending["status"] == "pending"
    assert "module count: no ready runner has runtime python" in pending["reason"]
    response = httpx.get(
        dispatcher.url + "/flows/counter/modules/count/state",
        headers={"Authorization": f"Bearer {(dispatcher.state_dir / 'token').read_text().strip()}"},
        timeout=30,
    )
    assert response.status_code == 409
    assert "no runner right now" in response.json()["error"]["message"]
    # a module the flow does not have is a 404 whether or not the flow has a runner
    headers = {"Authorization": f"Bearer {(dispatcher.state_dir / 'token').read_text().strip()}"}
    for method, path, body in (
        ("GET", "/flows/counter/modules/ghost/state", None),
        ("POST", "/flows/counter/modules/ghost/inputs/in", {"msgs": [1]}),
        ("PUT", "/flows/counter/modules/ghost/breakpoint", None),
    ):
        response = httpx.request(
            method, dispatcher.url + path, json=body, headers=headers, timeout=30
        )
        assert response.status_code == 404, (path, response.text)
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("module_not_found", "moduleId")


def test_local_runners_in_one_command(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--local-runners", "2",
    ]  # fmt: skip
    dispatcher.start()
    try:
        wait_until(
            "two local runners",
            lambda: [r["status"] for r in dispatcher.api("GET", "/runners")] == ["ready", "ready"],
        )
        placed = dispatcher.api("POST", "/flows", json=COUNTER)
        assert placed["status"] == "placed"
        dispatcher.api("POST", "/flows/counter/modules/count/inputs/in", json={"msgs": ["x"]})
        wait_until(
            "the count",
            lambda: (
                dispatcher.api("GET", "/flows/counter/modules/count/state")["state"] == {"x": 1}
            ),
        )
    finally:
        assert dispatcher.stop() == 0
    # The dispatcher stopped its runners first: they signed off, and none is left running.
    statuses = {r["status"] for r in _runners_from_db(tmp_path / "dispatcher")}
    assert statuses == {"signed-off"}
    assert "started 2 local runner(s)" in "\n".join(dispatcher.lines)


def _runners_from_db(state_dir: Path) -> list[dict[str, Any]]:
    from fifoflow.dispatcher.store import DispatcherStore

    store = DispatcherStore.open(state_dir)
    try:
        return store.runners()
    finally:
        store.close()


def test_draining_a_runner_moves_its_flow_with_state_and_queued_messages(tmp_path: Path) -> None:
    slow = {
        "fifoflow": 1,
        "id": "slow",
        "modules": [
            {
                "id": "count",
                "runtime": "python",
                "code": (
                    "import time\n"
                    "def handle(msg, ctx):\n"
                    "    time.sleep(0.002)\n"
                    "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
                    "    ctx.state['last'] = msg\n"
                ),
            }
        ],
    }
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    runners = [start_runner(tmp_path, f"r{i}", dispatcher, dispatcher.token()) for i in range(2)]
    try:
        ids = [linked_id(r) for r in runners]
        holder = dispatcher.api("POST", "/flows", json=slow)["runner"]
        other = next(i for i in ids if i != holder)
        dispatcher.api(
            "POST", "/flows/slow/modules/count/inputs/in", json={"msgs": list(range(1000))}
        )
        moved = dispatcher.api("POST", f"/runners/{holder}/drain")
        assert moved == {"moved": ["slow"]}
        flow = dispatcher.api("GET", "/flows/slow")
        assert (flow["runner"], flow["status"]) == (other, "placed"), [
            (e["kind"], e["runner"], e.get("flow"), e.get("placement"))
            for e in dispatcher.api("GET", "/events")
        ]
        # Every message handled exactly once across the two runners, in order.
        wait_until(
            "all 1000 messages",
            lambda: (
                dispatcher.api("GET", "/flows/slow/modules/count/state")["state"]
                == {"n": 1000, "last": 999}
            ),
            timeout=60,
        )
        assert runner_status(dispatcher, holder) == "drained"
        handed = [e for e in dispatcher.api("GET", "/events") if e["kind"] == "drained"]
        assert handed[-1]["flows"] == ["slow"]
    finally:
        for runner in runners:
            runner.stop()
        dispatcher.stop()


@contextmanager
def two_zones(
    tmp_path: Path,
) -> Iterator[tuple[DispatcherProcess, list[ServerProcess], dict[str, str]]]:
    """A dispatcher and two linked runners labelled zone=a and zone=b: (dispatcher,
    runners, runner id by zone); all stopped after."""
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    runners: list[ServerProcess] = []
    try:
        for zone in ("a", "b"):
            runner = ServerProcess(
                tmp_path / zone, "--dispatcher", dispatcher.url,
                "--registration-token", dispatcher.token(), "--label", f"zone={zone}",
            )  # fmt: skip
            runner.start()
            runners.append(runner)
        yield dispatcher, runners, {z: linked_id(r) for z, r in zip("ab", runners, strict=True)}
    finally:
        for runner in runners:
            runner.stop()
        dispatcher.stop()


def test_a_flow_spanning_two_runners_keeps_order(tmp_path: Path) -> None:
    last = (
        "def handle(msg, ctx):\n"
        "    s = ctx.state\n"
        "    s['ok'] = s.get('ok', True) and msg['i'] == s.get('n', 0)\n"
        "    s['n'] = s.get('n', 0) + 1\n"
    )
    flow = {
        "fifoflow": 1,
        "id": "span",
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return {'i': msg}\n",
             "placement": {"labels": {"zone": "a"}}},
            {"id": "b", "runtime": "node", "code": "exports.handle = (msg) => msg;\n",
             "placement": {"labels": {"zone": "b"}}},
            {"id": "c", "runtime": "python", "code": last, "placement": {"labels": {"zone": "a"}}},
        ],
        "wires": ["a.out -> b.in", "b.out -> c.in"],
    }  # fmt: skip
    with two_zones(tmp_path) as (dispatcher, _runners, ids):
        placed = dispatcher.api("POST", "/flows", json=flow)
        assert placed["status"] == "placed"
        assert placed["placement"] == {"a": ids["a"], "b": ids["b"], "c": ids["a"]}
        assert placed["runner"] is None  # it spans two runners
        for start in range(0, 10_000, 1000):
            dispatcher.api(
                "POST",
                "/flows/span/modules/a/inputs/in",
                json={"msgs": list(range(start, start + 1000))},
            )
        state = wait_until(
            "10,000 messages through both runners",
            lambda: (
                (s := dispatcher.api("GET", "/flows/span/modules/c/state")["state"])
                and s.get("n") == 10_000
                and s
            ),
            timeout=60,
        )
        assert state == {"ok": True, "n": 10_000}


def test_a_port_wired_within_its_part_and_to_another_runner_feeds_both(
    tmp_path: Path,
) -> None:
    # a.out feeds d on its own runner and b on the other one: the part lists a.out as
    # an exit, so the crossing wire gets every message too (it used to get none).
    count = (
        "def handle(msg, ctx):\n"
        "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
        "    ctx.state['sum'] = ctx.state.get('sum', 0) + msg\n"
    )
    flow = {
        "fifoflow": 1,
        "id": "fork",
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n",
             "placement": {"labels": {"zone": "a"}}},
            {"id": "d", "runtime": "python", "code": count, "placement": {"labels": {"zone": "a"}}},
            {"id": "b", "runtime": "python", "code": count, "placement": {"labels": {"zone": "b"}}},
        ],
        "wires": ["a.out -> d.in", "a.out -> b.in"],
    }  # fmt: skip
    with two_zones(tmp_path) as (dispatcher, runners, ids):
        placed = dispatcher.api("POST", "/flows", json=flow)
        assert placed["placement"] == {"a": ids["a"], "d": ids["a"], "b": ids["b"]}
        dispatcher.api("POST", "/flows/fork/modules/a/inputs/in", json={"msgs": list(range(500))})
        want = {"n": 500, "sum": sum(range(500))}
        for module in ("d", "b"):  # each message once at each end, none lost
            state = wait_until(
                f"500 messages at {module}",
                lambda m=module: (
                    (s := dispatcher.api("GET", f"/flows/fork/modules/{m}/state")["state"])
                    and s.get("n", 0) >= 500
                    and s
                ),
                timeout=60,
            )
            assert state == want, module
        # the runner's own flow document says which port leaves the part
        token = (runners[0].state_dir / "token").read_text().strip()
        got = httpx.get(
            f"{runners[0].url}/flows/fork",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert got.json()["flow"]["exits"] == ["a.out"]


def test_breakpoints_steps_and_logs_across_runners(tmp_path: Path) -> None:
    flow = {
        "fifoflow": 1,
        "id": "dbg",
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    ctx.log('a got', msg)\n    return msg + 1\n",
             "placement": {"labels": {"zone": "a"}}},
            {"id": "b", "runtime": "node", "code": "exports.handle = (msg) => msg * 2;\n",
             "placement": {"labels": {"zone": "b"}}},
        ],
        "wires": ["a.out -> b.in"],
    }  # fmt: skip
    with two_zones(tmp_path) as (dispatcher, _runners, ids):
        assert dispatcher.api("POST", "/flows", json=flow)["status"] == "placed"
        bp = dispatcher.api(
            "PUT", "/flows/dbg/modules/a/breakpoint", json={"condition": "msg == 2"}
        )
        assert bp == {"module": "a", "condition": "msg == 2", "hits": 0}
        dispatcher.api("POST", "/flows/dbg/modules/a/inputs/in", json={"msgs": [1, 2, 3]})
        # The hit on runner a pauses the part on runner b as well.
        wait_until(
            "the pause to reach runner b",
            lambda: any(e["kind"] == "paused" for e in dispatcher.api("GET", "/events")),
        )
        paused = next(e for e in dispatcher.api("GET", "/events") if e["kind"] == "paused")
        assert (paused["runner"], paused["module"], paused["msg"]) == (ids["a"], "a", 2)
        wait_until(
            "both parts to be paused",
            lambda: all(
                part["paused"] for part in dispatcher.api("GET", "/flows/dbg/debug").values()
            ),
        )
        assert sorted(dispatcher.api("GET", "/flows/dbg/debug")) == sorted(ids.values())
        queues = dispatcher.api("GET", "/flows/dbg/queues")
        assert [q["msg"] for q in queues["a"]] == [2, 3]
        step = dispatcher.api("POST", "/flows/dbg/step")
        assert sorted(step) == ["dbg/a", "dbg/b"]
        assert step["dbg/a"]["inputStates"]["consumed"] == {"port": "in", "msg": 2}
        assert step["dbg/a"]["outputStates"] == {"out": [3]}
        assert dispatcher.api("DELETE", "/flows/dbg/modules/a/breakpoint") == {"removed": True}
        dispatcher.api("POST", "/flows/dbg/continue")
        logs = wait_until(
            "a's three log lines",
            lambda: (
                (lines := [e["text"] for e in dispatcher.api("GET", "/flows/dbg/logs")])
                and len(lines) >= 3
                and lines
            ),
        )
        assert logs[:3] == ["a got 1", "a got 2", "a got 3"]
        runner_logs = dispatcher.api("GET", f"/runners/{ids['a']}/logs")
        assert {e["flow"] for e in runner_logs} == {"dbg"}


def _sized(flow_id: str, **placement: Any) -> dict[str, Any]:
    module = {**COUNTER["modules"][0], "placement": placement}  # type: ignore[index]
    return {**COUNTER, "id": flow_id, "modules": [module]}


def test_placement_by_capacity_and_refusals_that_say_why(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    runners = []
    try:
        # small offers 1 CPU and 1 GiB; big offers 2 CPUs and far more memory than
        # this machine has (its own check refuses what does not fit right now).
        for name, cpus, memory in (("small", "1", "1GiB"), ("big", "2", "1000TiB")):
            runner = ServerProcess(
                tmp_path / name, "--dispatcher", dispatcher.url,
                "--registration-token", dispatcher.token(), "--cpus", cpus, "--memory", memory,
            )  # fmt: skip
            runner.start()
            runners.append(runner)
        small, big = (linked_id(r) for r in runners)
        hw = {r["id"]: r["hardware"] for r in dispatcher.api("GET", "/runners")}
        assert hw[small]["capacity"] == {"cpus": 1.0, "memory": 1024**3}
        python = next(r for r in dispatcher.api("GET", "/runtimes") if r["id"] == "python")
        assert sorted(python["runners"]) == sorted([small, big])

        # 1.5 CPUs fit only on big; then 0.5 CPU + 512 MiB goes to the less loaded small.
        assert dispatcher.api("POST", "/flows", json=_sized("f1", cpus=1.5))["runner"] == big
        placed = dispatcher.api("POST", "/flows", json=_sized("f2", cpus=0.5, memory="512MiB"))
        assert placed["runner"] == small
        # 1 CPU: each has 0.5 left.
        pending = dispatcher.api("POST", "/flows", json=_sized("f3", cpus=1))
        assert pending["status"] == "pending"
        assert "needs 1 CPUs" in pending["reason"]
        assert "at most 0.5 CPUs" in pending["reason"], pending["reason"]
        # 500 TiB passes the dispatcher's books (big offers 1000) but not big's own check.
        hungry = dispatcher.api("POST", "/flows", json=_sized("f4", memory="500TiB"))
        assert hungry["status"] == "pending"
        assert f"runner {big} refused" in hungry["reason"]
        assert "free now" in hungry["reason"], hungry["reason"]
        [refusal] = [e for e in events(dispatcher, "refused") if e["flow"] == "f4"]
        assert refusal["runner"] == big

        assert dispatcher.api("GET", "/runtimes/python/flows?ids=true") == ["f1", "f2", "f3", "f4"]
        flows = dispatcher.api("GET", "/runtimes/python/flows")
        assert [f["id"] for f in flows] == ["f1", "f2", "f3", "f4"]
        assert dispatcher.api("GET", "/runtimes/node/flows") == []
        response = httpx.get(
            dispatcher.url + "/runtimes/cobol/flows",
            headers={
                "Authorization": f"Bearer {(dispatcher.state_dir / 'token').read_text().strip()}"
            },
            timeout=30,
        )
        assert response.status_code == 404
        assert "no runner reports runtime 'cobol'" in response.json()["error"]["message"]

        # Removing f1 frees big's CPUs: f3 is placed there at once.
        dispatcher.api("DELETE", "/flows/f1")
        f3 = dispatcher.api("GET", "/flows/f3")
        assert (f3["status"], f3["runner"]) == ("placed", big)

        # An update that asks for more than its runner offers: refused there, the flow
        # waits with its state (nothing lost), and says why.
        dispatcher.api("POST", "/flows/f2/modules/count/inputs/in", json={"msgs": ["a", "a"]})
        wait_until(
            "f2's count",
            lambda: dispatcher.api("GET", "/flows/f2/modules/count/state")["state"] == {"a": 2},
        )
        updated = dispatcher.api("PUT", "/flows/f2", json=_sized("f2", cpus=4))
        assert updated["status"] == "pending"
        assert f"runner {small} refused: flow f2 needs 4 CPUs" in updated["reason"]
        assert dispatcher.api("GET", "/flows/f2")["states"] == {"count": {"a": 2}}
        # Back to a size that fits: placed again, the count goes on.
        assert dispatcher.api("PUT", "/flows/f2", json=_sized("f2", cpus=0.5))["status"] == "placed"
        dispatcher.api("POST", "/flows/f2/modules/count/inputs/in", json={"msgs": ["a"]})
        wait_until(
            "f2's count to go on",
            lambda: dispatcher.api("GET", "/flows/f2/modules/count/state")["state"] == {"a": 3},
        )
    finally:
        for runner in runners:
            runner.stop()
        dispatcher.stop()


async def test_client_sockets_refuse_bad_input_with_reasons(tmp_path: Path) -> None:
    import trio
    import trio_websocket

    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    try:
        ws_url = dispatcher.url.replace("http", "ws")
        token = dispatcher.api("GET", "/client-token")["token"]
        assert token != (dispatcher.state_dir / "token").read_text().strip()
        operator = (dispatcher.state_dir / "token").read_text().strip()
        with trio.fail_after(30):
            # The operator token is not a client token; a bad page id is refused too.
            for query, why in (
                (f"token={operator}&page=p1", "wrong or missing client token"),
                (f"token={token}&page=bad%20id", "page must be"),
            ):
                async with trio_websocket.open_websocket_url(f"{ws_url}/client/ws?{query}") as ws:
                    answer = orjson.loads(await ws.get_message())
                    assert answer["op"] == "refused"
                    assert why in answer["message"]
                    # the server closes it (4401): wait for that, or the client's
                    # socket is left to the garbage collector
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == 4401
            async with trio_websocket.open_websocket_url(
                f"{ws_url}/client/ws?token={token}&page=p1"
            ) as ws:
                welcome = orjson.loads(await ws.get_message())
                assert welcome["op"] == "welcome"
                await ws.send_message("not json")
                assert orjson.loads(await ws.get_message()) == {
                    "op": "error", "message": "not a control message",
                }  # fmt: skip
                await ws.send_message('{"op": "teleport", "id": 7}')
                reply = orjson.loads(await ws.get_message())
                assert reply == {
                    "op": "error",
                    "id": 7,
                    "message": "unknown op 'teleport' (known: inject, bye)",
                }
                await ws.send_message(
                    '{"op": "inject", "id": 8, "flow": "nope", "module": "m", "msgs": [1]}'
                )
                reply = orjson.loads(await ws.get_message())
                assert (reply["op"], reply["id"]) == ("error", 8)
                assert "no flow 'nope'" in reply["message"]
                await ws.send_message('{"op": "bye"}')
            # A host socket nobody asked for is refused.
            async with trio_websocket.open_websocket_url(
                f"{ws_url}/client/host?token={token}&page=p1&secret={welcome['secret']}&host=x"
            ) as ws:
                answer = orjson.loads(await ws.get_message())
                assert answer["op"] == "refused"
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 4404
    finally:
        dispatcher.stop()


async def test_the_runner_link_refuses_bad_calls_naming_the_param(
    dispatcher: DispatcherProcess,
) -> None:
    import trio
    import trio_websocket

    async def call(ws: Any, method: str, params: Any) -> dict[str, Any]:
        await ws.send_message(
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).decode()
        )
        return orjson.loads(await ws.get_message())["error"]

    with trio.fail_after(30):
        url = dispatcher.url.replace("http", "ws") + "/link"
        async with trio_websocket.open_websocket_url(url) as ws:
            error = await call(ws, "register", {"token": 5})
            assert error["code"] == -32602
            assert "token: expected a string, got an integer" in error["message"]
            error = await call(ws, "register", {"token": "t", "colour": "red"})
            assert "unknown field(s): colour" in error["message"]
            error = await call(ws, "register", {"token": "t", "name": "x" * 1_000_000})
            assert "name: must have at most 256 characters" in error["message"]
            error = await call(
                ws, "relay", {"flowId": "f", "moduleId": "m", "port": "in", "msgs": []}
            )
            assert "say hello first" in error["message"]
            error = await call(ws, "teleport", {})
            assert "unknown method 'teleport'" in error["message"]
            assert "register" in error["message"]
            # the link still serves: a wrong token is the dispatcher's answer, not a crash
            error = await call(ws, "register", {"token": "ffreg_nope"})
            assert error["code"] == -32000
            assert error["data"]["code"] == "registration_refused"


async def test_a_runner_speaks_only_for_the_parts_placed_on_it(
    tmp_path: Path, dispatcher: DispatcherProcess
) -> None:
    """A registered, ready runner (a fake one, over the real link protocol) relays
    into, pauses and snapshots a flow placed on another runner: each call is refused
    (``not_your_part``, naming the param), recorded as an event, and the flow goes on
    as if nothing was said."""
    import trio
    import trio_websocket

    pair = {
        "fifoflow": 1,
        "id": "pair",
        "modules": [
            {**COUNTER["modules"][0], "id": "a"},  # type: ignore[dict-item]
            {
                "id": "b",
                "runtime": "python",
                "code": "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n",
            },
        ],
        "wires": ["a.out -> b.in"],
    }
    real = start_runner(tmp_path, "real", dispatcher, dispatcher.token())
    try:
        holder = linked_id(real)
        placed = dispatcher.api("POST", "/flows", json=pair)
        assert placed["placement"] == {"a": holder, "b": holder}
        dispatcher.api("POST", "/flows/pair/modules/a/inputs/in", json={"msgs": ["x"]})
        wait_until(
            "b to count one message",
            lambda: dispatcher.api("GET", "/flows/pair/modules/b/state")["state"] == {"n": 1},
        )
        wait_until("a snapshot", lambda: dispatcher.api("GET", "/flows/pair")["states"])
        before = dispatcher.api("GET", "/flows/pair")

        ids = iter(range(1, 1000))

        async def call(ws: Any, method: str, **params: Any) -> dict[str, Any]:
            await ws.send_message(
                orjson.dumps(
                    {"jsonrpc": "2.0", "id": next(ids), "method": method, "params": params}
                ).decode()
            )
            return orjson.loads(await ws.get_message())

        with trio.fail_after(30):
            url = dispatcher.url.replace("http", "ws") + "/link"
            async with trio_websocket.open_websocket_url(url) as ws:
                me = (await call(ws, "register", token=dispatcher.token(), name="fake"))["result"]
                await call(ws, "hello", runnerId=me["runnerId"], secret=me["secret"])
                assert (await call(ws, "ready", flows=[]))["result"] is True
                refusals = {
                    "relay": await call(
                        ws, "relay", flowId="pair", moduleId="a", port="out", msgs=["x"] * 5
                    ),
                    "paused": await call(ws, "paused", flowId="pair", reason="pause"),
                    "snapshot": await call(
                        ws, "snapshot", flowId="pair", states={"a": {"x": 99}, "b": {"x": 99}}
                    ),
                    "unknown": await call(
                        ws, "relay", flowId="nope", moduleId="a", port="out", msgs=[1]
                    ),
                }
                for what, answer in refusals.items():
                    error = answer["error"]
                    assert error["data"]["code"] == "not_your_part", (what, error)
                    assert "is placed on this runner" in error["message"], (what, error)
                assert refusals["relay"]["error"]["message"].startswith("relay: no part of flow")
                # the link still serves the runner's own calls
                assert (await call(ws, "heartbeat"))["result"] is True

        refused = events(dispatcher, "refused-call", me["runnerId"])
        assert [(e["call"], e["flow"]) for e in refused] == [
            ("relay", "pair"), ("paused", "pair"), ("snapshot", "pair"), ("relay", "nope"),
        ]  # fmt: skip
        assert {e["field"] for e in refused} == {"flowId"}
        # The flow is unaffected: not paused, no relayed message reached b, its
        # snapshot is its own runner's.
        debug = dispatcher.api("GET", "/flows/pair/debug")
        assert [part["paused"] for part in debug.values()] == [False]
        dispatcher.api("POST", "/flows/pair/modules/a/inputs/in", json={"msgs": ["y"]})
        wait_until(
            "b to count y (and none of the 5 relayed)",
            lambda: dispatcher.api("GET", "/flows/pair/modules/b/state")["state"] == {"n": 2},
        )
        after = dispatcher.api("GET", "/flows/pair")
        assert (after["placement"], after["status"]) == (before["placement"], "placed")
        assert after["states"].get("a", {}).get("x") != 99
        assert "x" not in after["states"].get("b", {})
    finally:
        real.stop()
