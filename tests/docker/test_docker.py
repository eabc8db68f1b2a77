"""The Docker backend against a real engine: pulls from a local registry, runner
containers, docker kill, reconcile, image update under load."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ..dispatcher.test_dispatcher import DispatcherProcess, events, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.slow

# python -> node -> python; the last module counts and checks the order.
CHAIN = {
    "fifoflow": 1,
    "id": "chain",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return {'i': msg}\n"},
        {"id": "b", "runtime": "node", "code": "exports.handle = (msg) => ({...msg, seen: 'node'});\n"},
        {
            "id": "c",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    s = ctx.state\n"
                "    s['ok'] = s.get('ok', True) and msg['seen'] == 'node' and msg['i'] == s.get('n', 0)\n"
                "    s['n'] = s.get('n', 0) + 1\n"
            ),
        },
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}  # fmt: skip


def docker_dispatcher(
    tmp_path: Path, image: str, *extra: str, heartbeat: float = 0.5
) -> DispatcherProcess:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher", heartbeat=heartbeat)
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--docker", image, *extra,
    ]  # fmt: skip
    return dispatcher


def state_of(dispatcher: DispatcherProcess) -> dict[str, Any] | None:
    try:
        return dispatcher.api("GET", "/flows/chain/modules/c/state")["state"]
    except httpx.HTTPStatusError:
        return None


def inject(dispatcher: DispatcherProcess, msgs: list[int]) -> None:
    dispatcher.api("POST", "/flows/chain/modules/a/inputs/in", json={"msgs": msgs})


def test_a_flow_on_a_pulled_container_goes_on_after_docker_kill(
    tmp_path: Path,
    docker_client: Any,
    pushed: Callable[[str], str],
    cleanup_containers: Callable[[Path], None],
) -> None:
    image = pushed("pull-kill")
    dispatcher = docker_dispatcher(
        tmp_path, image, "--docker-cpus", "1.5", "--docker-memory", "768MiB"
    )
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    try:
        # The image was not here: the backend pulled it from the registry.
        wait_until(
            "the pull", lambda: any(e["status"] == "done" for e in events(dispatcher, "pull")), 120
        )
        assert events(dispatcher, "pull")[0] == {
            **events(dispatcher, "pull")[0],
            "status": "started",
            "image": image,
        }
        [slot] = wait_until("a ready runner container", lambda: [
            c for c in dispatcher.api("GET", "/backend")["containers"] if c["runnerStatus"] == "ready"
        ], 120)  # fmt: skip
        container = docker_client.containers.get(slot["container"])
        labels = container.labels
        assert labels["io.fifoflow.slot"] == slot["name"]
        assert "io.fifoflow.dispatcher" in labels
        host = container.attrs["HostConfig"]
        assert (host["NanoCpus"], host["Memory"]) == (1_500_000_000, 768 * 2**20)
        assert host["RestartPolicy"]["Name"] == "on-failure"
        assert any(
            m["Destination"] == "/state" and m["Type"] == "volume"
            for m in container.attrs["Mounts"]
        )
        assert any(
            e.startswith("FIFOFLOW_REGISTRATION_TOKEN=ffreg_")
            for e in container.attrs["Config"]["Env"]
        )
        assert container.attrs["Config"]["User"] == "fifoflow"
        runner = next(r for r in dispatcher.api("GET", "/runners") if r["id"] == slot["runner"])
        assert runner["hardware"]["capacity"] == {"cpus": 1.5, "memory": 768 * 2**20}

        placed = dispatcher.api("POST", "/flows", json=CHAIN)
        assert (placed["status"], placed["runner"]) == ("placed", slot["runner"])
        inject(dispatcher, list(range(1000)))
        wait_until(
            "1000 messages through python -> node -> python",
            lambda: state_of(dispatcher) == {"ok": True, "n": 1000},
        )
        wait_until(
            "a snapshot at the dispatcher",
            lambda: dispatcher.api("GET", "/flows/chain")["states"].get("c", {}).get("n") == 1000,
        )

        started = time.monotonic()
        container.kill()
        moved = wait_until("the flow on a new container's runner", lambda: (
            (f := dispatcher.api("GET", "/flows/chain"))["status"] == "placed"
            and f["runner"] not in (None, slot["runner"]) and f
        ), 120)  # fmt: skip
        took = time.monotonic() - started
        print(f"docker kill -> flow placed on a new container: {took:.1f} s")
        [exited] = events(dispatcher, "container-exited")
        assert (exited["container"], exited["exitCode"]) == (slot["name"], 137)
        # Lost from the engine's event ("die"), not from a poll or the heartbeat TTL.
        [died] = events(dispatcher, "container-died")
        assert (died["container"], died["exitCode"]) == (slot["name"], 137)
        [lost] = [e for e in events(dispatcher, "lost") if e["runner"] == slot["runner"]]
        assert lost["why"] == "its container died (exit code 137)"
        new = [c for c in dispatcher.api("GET", "/backend")["containers"]]
        assert [c["runner"] for c in new] == [moved["runner"]]
        # The counter goes on from its snapshot, in order.
        inject(dispatcher, list(range(1000, 1100)))
        wait_until("the counter to go on", lambda: state_of(dispatcher) == {"ok": True, "n": 1100})

        # A dispatcher restart (same address) adopts its container and removes an
        # orphan it labelled.
        dispatcher.port = int(dispatcher.url.rsplit(":", 1)[1])
        assert dispatcher.stop() == 0, "\n".join(dispatcher.lines[-60:])
        did = new[0]["name"].split("-")[1]
        orphan = docker_client.containers.run(
            "fifoflow-base:bookworm", ["sleep", "600"], detach=True,
            labels={"io.fifoflow.dispatcher": did, "io.fifoflow.slot": f"ff-{did}-999"},
        )  # fmt: skip
        dispatcher.start()
        wait_until("the orphan removed", lambda: events(dispatcher, "orphan-removed"))
        assert [e["container"] for e in events(dispatcher, "container-adopted")] == [new[0]["name"]]
        assert orphan.id not in {c.id for c in docker_client.containers.list(all=True)}
        # (the runner reconnects within its TTL: not lost, the flow kept where it runs)
        wait_until(
            "the flow answers again", lambda: state_of(dispatcher) == {"ok": True, "n": 1100}
        )
        assert not [e for e in events(dispatcher, "displaced") if e["runner"] == moved["runner"]]
    finally:
        dispatcher.stop()


KILL_THE_RUNNER = (
    "import os, signal\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        cmdline = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if b'runner\\0serve' in cmdline:\n"
    "        os.kill(int(pid), signal.SIGKILL)\n"
)


def test_a_runner_that_crashes_in_its_container_is_lost_at_once_and_comes_back(
    tmp_path: Path,
    docker_client: Any,
    pushed: Callable[[str], str],
    cleanup_containers: Callable[[Path], None],
) -> None:
    """The runner process dies inside its container (not a docker kill): the engine
    restarts the container in place (restart policy on-failure). The dispatcher's
    defaults (heartbeat 5 s, TTL 15 s): the runner is lost at once from the engine's
    "die" event, not after the TTL; the same container (same slot, same volume) comes
    back with the runner's identity and takes its flow again, with its state."""
    dispatcher = docker_dispatcher(tmp_path, pushed("crash"), heartbeat=5.0)
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    try:
        [slot] = wait_until("a ready runner container", lambda: [
            c for c in dispatcher.api("GET", "/backend")["containers"] if c["runnerStatus"] == "ready"
        ], 120)  # fmt: skip
        assert dispatcher.api("POST", "/flows", json=CHAIN)["runner"] == slot["runner"]
        inject(dispatcher, list(range(500)))
        wait_until(
            "a snapshot at the dispatcher",
            lambda: dispatcher.api("GET", "/flows/chain")["states"].get("c", {}).get("n") == 500,
        )
        container = docker_client.containers.get(slot["container"])
        container.exec_run(["python3", "-c", KILL_THE_RUNNER])

        [lost] = wait_until("the runner lost", lambda: [
            e for e in events(dispatcher, "lost") if e["runner"] == slot["runner"]
        ], 60)  # fmt: skip
        # (were it the heartbeat TTL, the event would say how long it was silent)
        assert lost["why"] == "its container died (exit code 137)", lost
        assert [e["flow"] for e in events(dispatcher, "displaced", slot["runner"])] == ["chain"]
        wait_until("the flow placed again", lambda: (
            dispatcher.api("GET", "/flows/chain")["status"] == "placed"
        ), 120)  # fmt: skip
        # The engine restarted the same container; its runner kept its identity, and
        # the pool did not start another.
        container.reload()
        assert container.attrs["RestartCount"] >= 1
        assert dispatcher.api("GET", "/flows/chain")["runner"] == slot["runner"]
        [now] = dispatcher.api("GET", "/backend")["containers"]
        assert (now["name"], now["container"]) == (slot["name"], slot["container"])
        assert len(events(dispatcher, "container-started")) == 1
        assert not events(dispatcher, "container-exited")
        # The counter goes on from its snapshot, in order.
        inject(dispatcher, list(range(500, 600)))
        wait_until("the counter to go on", lambda: state_of(dispatcher) == {"ok": True, "n": 600})
    finally:
        dispatcher.stop()


def test_a_missing_image_fails_its_pull_and_the_flow_waits(
    tmp_path: Path, registry: str, cleanup_containers: Callable[[Path], None]
) -> None:
    image = f"{registry}/fifoflow-runner:no-such-tag"
    dispatcher = docker_dispatcher(tmp_path, image)
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    try:
        [failed] = wait_until("the failed pull", lambda: events(dispatcher, "pull-failed"), 60)
        assert failed["image"] == image
        assert "not found" in failed["error"] or "unknown" in failed["error"], failed
        pending = dispatcher.api("POST", "/flows", json=CHAIN)
        assert pending["status"] == "pending"
        assert "no ready runner has runtime" in pending["reason"]
        assert f"pull of {image} failed" in pending["reason"], pending["reason"]
        assert dispatcher.api("GET", "/backend")["containers"] == []
    finally:
        dispatcher.stop()


def test_an_image_update_under_load_loses_nothing(
    tmp_path: Path,
    docker_client: Any,
    pushed: Callable[[str], str],
    cleanup_containers: Callable[[Path], None],
) -> None:
    v1, v2 = pushed("v1"), pushed("v2")
    dispatcher = docker_dispatcher(tmp_path, v1)
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    total, sent = 20_000, [0]
    failures: list[BaseException] = []
    try:
        wait_until("a ready runner container", lambda: [
            c for c in dispatcher.api("GET", "/backend")["containers"] if c["runnerStatus"] == "ready"
        ], 120)  # fmt: skip
        assert dispatcher.api("POST", "/flows", json=CHAIN)["status"] == "placed"

        def produce() -> None:
            # 200 messages every call, as fast as the dispatcher takes them; a call that
            # finds the flow between two runners (409) is sent again.
            try:
                while sent[0] < total:
                    batch = list(range(sent[0], sent[0] + 200))
                    try:
                        inject(dispatcher, batch)
                        sent[0] += len(batch)
                    except httpx.HTTPStatusError as exc:
                        if exc.response.status_code != 409:
                            raise
            except BaseException as exc:
                failures.append(exc)

        producer = threading.Thread(target=produce)
        producer.start()
        wait_until("the load to be under way", lambda: sent[0] >= 2000)
        done = dispatcher.api("POST", "/backend/image", json={"image": v2}, timeout=300)
        producer.join(timeout=300)
        assert not failures, failures
        assert done["moved"] == ["chain"]
        print(f"image update under load: {done['seconds']:.2f} s, sent {sent[0]} messages")
        try:
            wait_until(
                "every message, once, in order",
                lambda: state_of(dispatcher) == {"ok": True, "n": total},
                30,
            )
        except AssertionError:
            print("STATE", state_of(dispatcher))
            for e in dispatcher.api("GET", "/events")[-30:]:
                print("EV", {k: v for k, v in e.items() if k not in ("placement",)})
            raise
        backend = dispatcher.api("GET", "/backend")
        assert backend["image"] == v2
        assert [c["image"] for c in backend["containers"]] == [v2]
        steps = [e["step"] for e in events(dispatcher, "update")]
        assert steps == ["pull", "starting", "moving", "done"]
        old = [e["container"] for e in events(dispatcher, "container-stopped")]
        assert len(old) == 1
        assert old[0] not in [c["name"] for c in backend["containers"]]
    finally:
        dispatcher.stop()


def test_a_flow_that_needs_more_gets_a_container_sized_to_it(
    tmp_path: Path,
    docker_client: Any,
    pushed: Callable[[str], str],
    cleanup_containers: Callable[[Path], None],
) -> None:
    image = pushed("sized")
    dispatcher = docker_dispatcher(
        tmp_path, image, "--docker-cpus", "0.5", "--docker-memory", "512MiB"
    )
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    try:
        wait_until("the pool's runner", lambda: [
            c for c in dispatcher.api("GET", "/backend")["containers"] if c["runnerStatus"] == "ready"
        ], 120)  # fmt: skip
        big = {**CHAIN, "modules": [
            {**m, "placement": {"cpus": 0.75, "memory": "600MiB"}} if m["id"] == "b" else m
            for m in CHAIN["modules"]
        ]}  # fmt: skip
        first = dispatcher.api("POST", "/flows", json=big)
        assert first["status"] == "pending"
        assert "needs 0.75 CPUs" in first["reason"], first["reason"]
        placed = wait_until("a container sized to the flow", lambda: (
            (f := dispatcher.api("GET", "/flows/chain"))["status"] == "placed" and f
        ), 120)  # fmt: skip
        # b (the module that needs the room) runs there; a and c fit the pool's runner.
        [sized] = [
            c for c in dispatcher.api("GET", "/backend")["containers"]
            if c["runner"] == placed["placement"]["b"]
        ]  # fmt: skip
        assert (sized["cpus"], sized["memory"]) == (0.75, int(600 * 2**20 * 1.25))
        host = docker_client.containers.get(sized["container"]).attrs["HostConfig"]
        assert (host["NanoCpus"], host["Memory"]) == (750_000_000, int(600 * 2**20 * 1.25))
        [started] = [e for e in events(dispatcher, "container-for-flow")]
        assert started["flow"] == "chain"
        inject(dispatcher, list(range(100)))
        wait_until("the flow runs there", lambda: state_of(dispatcher) == {"ok": True, "n": 100})
    finally:
        dispatcher.stop()


@pytest.fixture
def swarm(docker_client: Any) -> Any:
    """This engine as a one-node Swarm (left again afterwards if the test made it one)."""
    made = docker_client.info()["Swarm"]["LocalNodeState"] != "active"
    if made:
        docker_client.swarm.init(advertise_addr="127.0.0.1")
    node = docker_client.nodes.list()[0]
    yield node
    spec = node.attrs["Spec"]
    node.reload()
    node.update({**node.attrs["Spec"], "Labels": spec.get("Labels", {})})
    if made:
        docker_client.swarm.leave(force=True)


def test_the_swarm_backend_runs_runners_as_services(
    tmp_path: Path,
    docker_client: Any,
    swarm: Any,
    pushed: Callable[[str], str],
    cleanup_containers: Callable[[Path], None],
) -> None:
    image = pushed("swarm")
    dispatcher = docker_dispatcher(tmp_path, image, "--swarm", "--docker-cpus", "0.5")
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    services: list[Any] = []
    try:
        [slot] = wait_until("a ready runner service", lambda: [
            c for c in dispatcher.api("GET", "/backend")["containers"] if c["runnerStatus"] == "ready"
        ], 120)  # fmt: skip
        assert dispatcher.api("GET", "/backend")["backend"] == "swarm"
        service = docker_client.services.get(slot["name"])
        services.append(service)
        spec = service.attrs["Spec"]
        assert spec["Labels"]["io.fifoflow.slot"] == slot["name"]
        task = spec["TaskTemplate"]
        assert task["Resources"]["Limits"]["NanoCPUs"] == 500_000_000
        assert task["RestartPolicy"]["Condition"] == "any"
        assert task["ContainerSpec"]["Mounts"][0]["Target"] == "/state"

        assert dispatcher.api("POST", "/flows", json=CHAIN)["runner"] == slot["runner"]
        inject(dispatcher, list(range(500)))
        wait_until(
            "500 messages through the service's runner",
            lambda: state_of(dispatcher) == {"ok": True, "n": 500},
        )

        # A module that needs zone=b: a service constrained to such nodes; it runs once
        # the node has the label, and the module is placed on its runner.
        zoned = {**CHAIN, "id": "zoned", "modules": [
            {**m, "placement": {"labels": {"zone": "b"}}} if m["id"] == "c" else m
            for m in CHAIN["modules"]
        ]}  # fmt: skip
        assert dispatcher.api("POST", "/flows", json=zoned)["status"] == "pending"
        [started] = wait_until(
            "a service for the zoned flow", lambda: events(dispatcher, "container-for-flow")
        )
        assert started["labels"] == {"zone": "b"}
        zoned_service = wait_until("the zoned service", lambda: [
            s for s in docker_client.services.list() if s.name not in (slot["name"],)
            and s.attrs["Spec"]["Labels"].get("io.fifoflow.slot")
        ])[0]  # fmt: skip
        services.append(zoned_service)
        placement = zoned_service.attrs["Spec"]["TaskTemplate"]["Placement"]
        assert placement["Constraints"] == ["node.labels.zone==b"]
        assert dispatcher.api("GET", "/flows/zoned")["status"] == "pending"  # no such node yet
        swarm.update(
            {
                **swarm.attrs["Spec"],
                "Labels": {**swarm.attrs["Spec"].get("Labels", {}), "zone": "b"},
            }
        )
        placed = wait_until("the zoned flow placed", lambda: (
            (f := dispatcher.api("GET", "/flows/zoned"))["status"] == "placed" and f
        ), 120)  # fmt: skip
        zoned_runner = next(
            c["runner"]
            for c in dispatcher.api("GET", "/backend")["containers"]
            if c["name"] == zoned_service.name
        )
        assert placed["placement"]["c"] == zoned_runner
    finally:
        dispatcher.stop()
        for service in services:
            try:
                service.remove()
            except Exception:
                pass


def test_a_flow_across_two_runner_containers_goes_from_container_to_container(
    tmp_path: Path,
    docker_client: Any,
    pushed: Callable[[str], str],
    cleanup_containers: Callable[[Path], None],
) -> None:
    """Runner containers listen for peers on their own address (``--host 0.0.0.0``: the
    container's address is said to the dispatcher), so the wire between the parts of a
    flow split over two containers goes from one to the other directly."""
    v1 = pushed("v1")
    dispatcher = docker_dispatcher(tmp_path, v1)
    cleanup_containers(dispatcher.state_dir)
    dispatcher.start()
    try:
        wait_until("a ready runner container", lambda: [
            c for c in dispatcher.api("GET", "/backend")["containers"] if c["runnerStatus"] == "ready"
        ], 120)  # fmt: skip
        # c needs zone=b, which no runner has: a container is started for it
        zoned = {**CHAIN, "modules": [
            {**m, "placement": {"labels": {"zone": "b"}}} if m["id"] == "c" else m
            for m in CHAIN["modules"]  # type: ignore[attr-defined]
        ]}  # fmt: skip
        dispatcher.api("POST", "/flows", json=zoned)
        placed = wait_until("the flow placed on two containers", lambda: (
            (f := dispatcher.api("GET", "/flows/chain"))["status"] == "placed" and f
        ), 120)  # fmt: skip
        assert placed["placement"]["b"] != placed["placement"]["c"]
        for start in range(0, 10_000, 1000):
            inject(dispatcher, list(range(start, start + 1000)))
        wait_until(
            "every message, in order",
            lambda: state_of(dispatcher) == {"ok": True, "n": 10_000},
            60,
        )
        [wire] = [
            w for w in dispatcher.api("GET", "/flows/chain/stats")["wires"] if w["via"] == "relay"
        ]
        assert wire["wire"] == "b.out->c.in"
        assert (wire["direct"], wire["dispatcher"]) == (10_000, 0), wire
    finally:
        dispatcher.stop()
