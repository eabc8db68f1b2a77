"""The Docker backend: runner containers the dispatcher starts, watches and replaces
(its Swarm variant, one service per runner slot, is `swarm_backend.py`; the engine's
event stream, `engine_events.py`). About 630 lines: one pool's whole life (pull, start,
watch, reconcile, update) around one engine client, which reads best in one place.

It keeps a **pool** of runner containers from one image (``fifoflow dispatcher serve
--docker IMAGE --docker-runners N``), and starts one more, sized to the flow's needs,
for a flow that waits because no runner has room for it. Placement never sees any of
this: each container runs ``fifoflow runner serve`` and registers over its control
link like any runner (``backends.py``).

Per container (a *slot*, named ``ff-<dispatcher>-<n>``, recorded in the dispatcher's
SQLite ``containers`` table):

- the image is made present first by its **pull policy** (``always``,
  ``if-not-present``, ``never``), with pull progress as ``pull`` events and printed
  lines; a failed pull is a ``pull-failed`` event, the flows that wait for a runner
  say why, and the pull is tried again later (backoff up to a minute);
- labels ``io.fifoflow.dispatcher`` / ``io.fifoflow.slot``; CPU and memory limits
  (``nano_cpus``, ``mem_limit``; the runner offers the same with ``--cpus``/``--memory``);
  the one-time registration token in ``FIFOFLOW_REGISTRATION_TOKEN``; a named volume
  for the runner's state dir (``/state``); restart policy ``on-failure`` (up to 5
  restarts in place, with the engine's own backoff);
- **failure detection** follows the engine's event stream (``engine_events.py``; the
  ``die`` and ``destroy`` events of containers labelled with this dispatcher): the
  moment a container dies, its runner is declared lost (``Dispatcher.runner_gone``)
  and its flows are placed again from their last snapshot, on another runner if one
  can take them at once; the pool's tick runs at once too;
- a container that **died and is restarted in place** by ``on-failure`` (its runner
  crashed, OOM inside it) keeps its slot: no replacement is started; the engine's
  restart is the backoff. Its runner comes back with its identity (the volume), is
  told to drop the flows it restored from its state dir that the dispatcher placed
  again (the dispatcher's snapshot is the one that runs on), and takes what is still
  pending. Declaring it lost at once rather than waiting for it to come back: a flow
  that another runner can take answers again without waiting for a restart that may
  never succeed (crash loop), and it is what the local backend does;
- a container that **exited for good** (``docker kill`` or ``docker stop``: the engine
  never restarts a container stopped by hand; ``on-failure`` gave up after 5
  restarts) or **is gone** (removed by hand) leaves the table; its replacement is
  started first, then the old container is removed with its volume (about 1.2 s from
  a ``docker kill`` to its flow answering again here, most of it the new runner's
  start-up; 0.23 s when another runner takes the flow;
  ``python -m tests.bench --only recovery-docker``);
- the **poll** (every ``interval``) stays as the fallback, and does the pool's other
  work (pool size, pulls retried, containers sized for waiting flows): the event
  stream can break (the engine restarting; it is then opened again with ``since``,
  which replays what was missed, but a dispatcher that was down misses events for
  good), and a tick reads each container's state, so an exit is never missed. A
  restart in place that no event told about needs nothing: the runner comes back
  with its identity and the flows it checkpointed.

On start the backend **reconciles**: containers labelled with this dispatcher that
its table knows are adopted, the others (orphans) removed with their volumes; table
rows whose container is missing are dropped.

**Update** (:meth:`DockerBackend.update_image`): pull the new image, start as many new
containers as the pool has, wait for their runners to be ready, cordon the old runners
(no new flows), drain each (its flows move with their state and waiting messages, as
in ``Dispatcher.drain``), then stop and remove the old containers. Progress is reported
as ``update`` events.

Resource handling: docker SDK calls block, so each runs in a worker thread
(``trio.to_thread.run_sync``); the loop in :meth:`run` lives in the dispatcher's
nursery, and the event stream's follower in :meth:`run`'s own (cancelled with it:
the stream is closed, its thread ends). Containers outlive the dispatcher on purpose (a restarted dispatcher adopts
them); ``stop_all`` stops and removes them when asked.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..flows.resources import format_size, parse_size
from .engine_events import follow_events
from .status import FlowStatus, RunnerStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from .service import Dispatcher

__all__ = ["PULL_POLICIES", "DockerBackend", "DockerOptions"]

PULL_POLICIES = ("always", "if-not-present", "never")
LABEL_DISPATCHER = "io.fifoflow.dispatcher"
LABEL_SLOT = "io.fifoflow.slot"
GiB = 1024**3


@attrs.frozen
class DockerOptions:
    #: the runner image of the pool
    image: str
    #: URL of the dispatcher as the containers reach it
    dispatcher_url: str
    pull: str = "if-not-present"
    #: the dispatcher's TLS certificate fingerprint the runners pin (None: plain HTTP)
    dispatcher_fingerprint: str | None = None
    #: runner containers kept running
    runners: int = 1
    #: limits of a pool container (what its runner offers)
    cpus: float = 1.0
    memory: int = 1 * GiB
    #: "host" (the containers share the host's network; the dispatcher may listen on
    #: 127.0.0.1) or a Docker network name
    network: str = "host"
    #: how often containers are checked
    interval: float = 1.0
    #: seconds a stopping runner gets to sign off before it is killed
    stop_timeout: float = 10.0


class DockerBackend:
    name = "docker"

    def __init__(
        self,
        dispatcher: Dispatcher,
        options: DockerOptions,
        *,
        client: Any = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if options.pull not in PULL_POLICIES:
            raise ValueError(f"pull policy must be one of {', '.join(PULL_POLICIES)}")
        self.dispatcher = dispatcher
        self.store = dispatcher.store
        self.options = options
        self.say = say or (lambda text: None)
        if client is None:
            import docker

            client = docker.from_env()
        self.client = client
        did = self.store.meta("dispatcher_id")
        if did is None:
            did = uuid.uuid4().hex[:8]
            self.store.set_meta("dispatcher_id", did)
        self.dispatcher_id = did
        #: the pool's image: the option, or what the last update set
        self.image = self.store.meta("docker_image") or options.image
        self._pull_retry: dict[str, tuple[float, float]] = {}  # image -> (not before, delay)
        self._sized_for: set[str] = set()  # flows a sized container was started for
        self._lock = trio.Lock()
        self._updating = False
        #: set by an engine event: the loop ticks now, not at the end of its interval
        self._wake = trio.Event()

    # ------------------------------------------------------------------ helpers

    async def _docker(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kw))

    def _event(self, kind: str, **detail: Any) -> None:
        self.store.add_event(None, kind, detail)

    def slots(self) -> list[dict[str, Any]]:
        return self.store.containers(self.name)

    def runners(self) -> list[str]:
        return [s["name"] for s in self.slots()]

    def runner_of(self, slot: str) -> dict[str, Any] | None:
        for runner in self.store.runners():
            if (runner["hardware"].get("labels") or {}).get("fifoflow.slot") == slot:
                return runner
        return None

    def describe(self) -> dict[str, Any]:
        slots = []
        for slot in self.slots():
            runner = self.runner_of(slot["name"])
            slots.append(
                {
                    "name": slot["name"],
                    "container": (slot["container_id"] or "")[:12],
                    "image": slot["image"],
                    "cpus": slot["cpus"],
                    "memory": slot["memory"],
                    "status": slot["status"],
                    "runner": runner["id"] if runner else None,
                    "runnerStatus": runner["status"] if runner else None,
                }
            )
        return {
            "backend": self.name,
            "image": self.image,
            "pull": self.options.pull,
            "runners": self.options.runners,
            "problem": self.dispatcher.backend_problem,
            "containers": slots,
        }

    # ------------------------------------------------------------------ the loop

    async def run(
        self, *, task_status: trio.TaskStatus[DockerBackend] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            # Listening before reconcile: nothing that happens from here on is missed.
            await nursery.start(
                functools.partial(
                    follow_events,
                    self.client,
                    self.event_filters(),
                    self.on_engine_event,
                    problem=self._stream_problem,
                )
            )
            await self.reconcile()
            task_status.started(self)
            while True:
                try:
                    async with self._lock:
                        await self.tick()
                except Exception as exc:  # an engine hiccup must not end the dispatcher
                    self._event("backend-error", error=f"{type(exc).__name__}: {exc}")
                    self.say(f"{self.name} backend: {type(exc).__name__}: {exc}")
                # The poll is the fallback: a tick comes at least every interval, and at
                # once when the engine says one of our containers died or went.
                with trio.move_on_after(self.options.interval):
                    await self._wake.wait()
                self._wake = trio.Event()

    # ------------------------------------------------------------------ engine events

    def event_filters(self) -> dict[str, list[str]]:
        """The engine events the backend follows: its containers dying or going."""
        return {
            "type": ["container"],
            "label": [f"{LABEL_DISPATCHER}={self.dispatcher_id}"],
            "event": ["die", "destroy"],
        }

    def on_engine_event(self, event: dict[str, Any]) -> None:
        """One of this dispatcher's containers died (its runner with it: lost now, its
        flows placed again; the engine may be restarting it in place) or was removed;
        either way the next tick runs now (it replaces what is gone for good)."""
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        name = attributes.get(LABEL_SLOT, "")
        slot = next((s for s in self.slots() if s["name"] == name), None)
        if slot is None or slot["status"] == "stopping":
            return  # not ours any more, or stopped on purpose (its runner signed off)
        if (event.get("Action") or event.get("status")) == "die":
            code = attributes.get("exitCode")
            exit_code = int(code) if code is not None and str(code).isdigit() else None
            self._event("container-died", container=name, exitCode=exit_code)
            runner = self.runner_of(name)
            if runner is not None:
                self.dispatcher.runner_gone(
                    runner["id"], f"its container died (exit code {exit_code})"
                )
        self._wake.set()

    def _stream_problem(self, text: str) -> None:
        self._event("backend-error", error=text)
        self.say(f"{self.name} backend: {text}")

    async def reconcile(self) -> None:
        """Adopt this dispatcher's known containers, remove its orphans."""
        found = await self._labelled()
        known = {s["name"]: s for s in self.slots()}
        for slot, ident, status, obj in found:
            if slot in known:
                self.store.put_container(slot, self.name, container_id=ident)
                self._event("container-adopted", container=slot, status=status)
            else:
                await self._destroy(obj, slot, graceful=False)
                self._event("orphan-removed", container=slot or ident[:12])
        present = {slot for slot, _, _, _ in found}
        for name in known:
            if name not in present:
                self.store.remove_container(name)
                self._event("container-missing", container=name)

    async def tick(self) -> None:
        dead = await self._check_containers()
        try:
            if self._updating:
                return
            live = [s for s in self.slots() if s["image"] == self.image and not s["flow"]]
            missing = self.options.runners - len(live)
            for _ in range(max(0, missing)):
                if not await self.start_container(
                    self.image, self.options.cpus, self.options.memory
                ):
                    return
            await self._size_for_pending()
        finally:
            # After the replacements started: their runners boot while these go.
            for obj, name in dead:
                await self._destroy(obj, name, graceful=False)

    async def _check_containers(self) -> list[tuple[Any, str]]:
        """Record each slot's status; a slot whose container exited for good or is gone
        leaves the table, its runner lost now. Returns those (container, slot) for
        :meth:`_destroy`."""
        dead = []
        for slot in self.slots():
            obj, status, code = await self._state(slot)
            if status in ("running", "created", "restarting", "pending"):
                if status != slot["status"]:
                    self.store.put_container(slot["name"], self.name, status=status)
                continue
            # exited (not to be restarted by the engine), dead or gone: the slot is replaced
            runner = self.runner_of(slot["name"])
            self._event("container-exited", container=slot["name"], status=status, exitCode=code)
            self.say(f"{self.name} backend: {slot['name']} {status} (exit code {code})")
            self.store.remove_container(slot["name"])
            if runner is not None:
                self.dispatcher.runner_gone(runner["id"], f"its container {status}")
            dead.append((obj, slot["name"]))
        return dead

    async def _size_for_pending(self) -> None:
        """A flow that waits for room no runner has gets a container sized to it."""
        for record in self.store.flows():
            if record["status"] != FlowStatus.PENDING or record["id"] in self._sized_for:
                continue
            reason = record["reason"] or ""
            if "CPUs and" not in reason and " and labels " not in reason:
                continue  # not a matter of room or labels (a runtime, a refusal)
            cpus = memory = 0.0
            labels: dict[str, str] = {}
            for module in record["document"]["modules"]:
                placement = module.get("placement") or {}
                cpus += float(placement.get("cpus", 0))
                memory += parse_size(placement.get("memory", 0))
                labels.update(placement.get("labels") or {})
            cpus = max(cpus, self.options.cpus)
            memory = max(int(memory * 1.25), self.options.memory)  # the runtimes' own share
            self._sized_for.add(record["id"])
            self._event(
                "container-for-flow",
                flow=record["id"],
                cpus=cpus,
                memory=format_size(memory),
                labels=labels,
            )
            await self.start_container(
                self.image, cpus, memory, sized_for=record["id"], labels=labels
            )

    # ------------------------------------------------------------------ images

    async def ensure_image(self, image: str, policy: str | None = None) -> bool:
        """Make the image present by its pull policy. False (and the problem noted for
        pending flows) when it cannot be."""
        import docker.errors

        policy = policy or self.options.pull
        not_before, delay = self._pull_retry.get(image, (0.0, 2.0))
        if time.monotonic() < not_before:
            return False
        try:
            present = True
            try:
                await self._docker(self.client.images.get, image)
            except docker.errors.ImageNotFound:
                present = False
            if policy == "never" and not present:
                raise LookupError(
                    f"image {image} is not present and the pull policy is never"
                    " (docker pull it, or use --pull if-not-present)"
                )
            if policy == "always" or not present:
                await self._pull(image)
        except (LookupError, docker.errors.APIError, docker.errors.DockerException) as exc:
            why = str(exc.explanation if isinstance(exc, docker.errors.APIError) else exc)
            problem = f"the docker backend cannot start a runner: pull of {image} failed: {why}"
            if isinstance(exc, LookupError):
                problem = f"the docker backend cannot start a runner: {why}"
            if self.dispatcher.backend_problem != problem:
                self._event("pull-failed", image=image, error=why)
                self.say(problem)
            self.dispatcher.backend_problem = problem
            self._pull_retry[image] = (time.monotonic() + delay, min(delay * 2, 60.0))
            for record in self.store.flows():
                if record["status"] == FlowStatus.PENDING:
                    reason = (record["reason"] or "").split("; the docker backend")[0]
                    self.store.update_flow(
                        record["id"], reason=f"{reason}; {problem}" if reason else problem
                    )
            return False
        self._pull_retry.pop(image, None)
        self.dispatcher.backend_problem = None
        return True

    async def _pull(self, image: str) -> None:
        import docker.errors
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(image)
        self.say(f"pulling {image}")
        self._event("pull", image=image, status="started")
        layers: dict[str, tuple[int, int]] = {}
        last = [0.0]
        send, receive = trio.open_memory_channel[dict[str, Any]](100)

        def stream() -> None:
            # Errors travel as chunks: the pull's own ({"error": ...}) and the engine's
            # refusal to start it (an unknown repository, say).
            try:
                for chunk in self.client.api.pull(
                    repository, tag=tag or "latest", stream=True, decode=True
                ):
                    trio.from_thread.run(send.send, chunk)
            except docker.errors.APIError as exc:
                trio.from_thread.run(send.send, {"error": str(exc.explanation or exc)})
            except docker.errors.DockerException as exc:
                trio.from_thread.run(send.send, {"error": str(exc)})
            finally:
                trio.from_thread.run_sync(send.close)

        error = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, stream)
            async for chunk in receive:
                if "error" in chunk:
                    error = str(chunk["error"])
                    continue  # (the stream ends after it; read it to its end)
                detail = chunk.get("progressDetail") or {}
                if chunk.get("id") and detail.get("total"):
                    layers[chunk["id"]] = (int(detail.get("current", 0)), int(detail["total"]))
                now = time.monotonic()
                if layers and now - last[0] >= 1.0:
                    last[0] = now
                    done = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    self._event("pull", image=image, status="progress", done=done, total=total)
                    self.say(
                        f"pulling {image}: {100 * done / total:.0f}%"
                        f" ({done / 2**20:.1f} of {total / 2**20:.1f} MiB)"
                    )
        if error is not None:
            raise docker.errors.APIError(error, explanation=error)
        self._event("pull", image=image, status="done")
        self.say(f"pulled {image}")

    # ------------------------------------------------------------------ containers

    async def start_container(
        self,
        image: str,
        cpus: float,
        memory: int,
        *,
        sized_for: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> str | None:
        """A new runner container (slot) from ``image`` that registers with a fresh
        one-time token; ``labels``: placement labels its runner reports (on Swarm, also
        constraints on the node it runs on)."""
        if not await self.ensure_image(image):
            return None
        n = int(self.store.meta("docker_next_slot") or "1")
        self.store.set_meta("docker_next_slot", str(n + 1))
        name = f"ff-{self.dispatcher_id}-{n}"
        token = self.dispatcher.issue_token()["token"]
        command = [
            "--host", "127.0.0.1" if self.options.network == "host" else "0.0.0.0",
            "--port", "0", "--name", name, "--label", f"fifoflow.slot={name}",
            "--cpus", f"{cpus:g}", "--memory", str(int(memory)),
        ]  # fmt: skip
        for key, value in sorted((labels or {}).items()):
            command += ["--label", f"{key}={value}"]
        self.store.put_container(
            name, self.name, image=image, cpus=cpus, memory=int(memory), flow=sized_for
        )
        ident = await self._launch(
            name,
            image,
            command,
            env={
                "FIFOFLOW_REGISTRATION_TOKEN": token,
                "FIFOFLOW_DISPATCHER": self.options.dispatcher_url,
                **(
                    {"FIFOFLOW_DISPATCHER_FINGERPRINT": self.options.dispatcher_fingerprint}
                    if self.options.dispatcher_fingerprint
                    else {}
                ),
            },
            cpus=cpus,
            memory=int(memory),
            labels=labels or {},
        )
        self.store.put_container(name, self.name, container_id=ident, status="running")
        self._event(
            "container-started",
            container=name,
            image=image,
            cpus=cpus,
            memory=format_size(int(memory)),
            **({"flow": sized_for} if sized_for else {}),
        )
        self.say(f"{self.name} backend: started {name} from {image}")
        return name

    async def stop_container(self, slot: str) -> None:
        """Stop gracefully (the runner signs off), then remove it and its volume."""
        record = next((s for s in self.slots() if s["name"] == slot), None)
        if record is None:
            return
        self.store.put_container(slot, self.name, status="stopping")
        obj, _, _ = await self._state(record)
        await self._destroy(obj, slot, graceful=True)
        self.store.remove_container(slot)
        self._event("container-stopped", container=slot)

    # ------------------------------------------------------------------ the engine

    async def _launch(
        self,
        name: str,
        image: str,
        command: list[str],
        *,
        env: dict[str, str],
        cpus: float,
        memory: int,
        labels: dict[str, str],
    ) -> str:
        container = await self._docker(
            self.client.containers.run,
            image,
            command=command,
            name=name,
            detach=True,
            labels={LABEL_DISPATCHER: self.dispatcher_id, LABEL_SLOT: name},
            environment=env,
            volumes={name: {"bind": "/state", "mode": "rw"}},
            network_mode=self.options.network,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
            nano_cpus=int(cpus * 1e9),
            mem_limit=memory,
            init=True,
        )
        return str(container.id)

    async def _state(self, slot: dict[str, Any]) -> tuple[Any, str, int | None]:
        """(the container, its status, its exit code); status "missing" when gone."""
        import docker.errors

        try:
            container = await self._docker(self.client.containers.get, slot["container_id"])
        except docker.errors.NotFound:
            return None, "missing", None
        return container, container.status, container.attrs.get("State", {}).get("ExitCode")

    async def _labelled(self) -> list[tuple[str, str, str, Any]]:
        """(slot, id, status, object) of everything labelled with this dispatcher."""
        found = await self._docker(
            self.client.containers.list,
            all=True,
            filters={"label": f"{LABEL_DISPATCHER}={self.dispatcher_id}"},
        )
        return [(c.labels.get(LABEL_SLOT, ""), c.id, c.status, c) for c in found]

    async def _destroy(self, container: Any, slot: str, *, graceful: bool) -> None:
        import docker.errors

        if container is not None:
            try:
                if graceful:
                    await self._docker(container.stop, timeout=int(self.options.stop_timeout))
                await self._docker(container.remove, force=True)
            except docker.errors.NotFound:
                pass
        await self._remove_volume(slot)

    async def _remove_volume(self, slot: str) -> None:
        import docker.errors

        if not slot:
            return
        try:
            volume = await self._docker(self.client.volumes.get, slot)
            await self._docker(volume.remove, force=True)
        except docker.errors.NotFound:
            pass

    async def stop_all(self) -> None:
        async with self._lock:
            for slot in self.slots():
                await self.stop_container(slot["name"])

    # ------------------------------------------------------------------ update

    async def update_image(
        self, image: str, pull: str | None = None, *, ready_timeout: float = 120.0
    ) -> dict[str, Any]:
        """Move the pool to a new image: new containers first, then each flow moves
        to them with its state and waiting messages, then the old ones stop."""
        if pull is not None and pull not in PULL_POLICIES:
            raise ValueError(f"pull policy must be one of {', '.join(PULL_POLICIES)}")
        started = time.monotonic()
        async with self._lock:
            self._updating = True
            try:
                self._event("update", image=image, step="pull")
                self.say(f"update to {image}: pulling")
                if not await self.ensure_image(image, pull):
                    raise RuntimeError(self.dispatcher.backend_problem or f"cannot pull {image}")
                old = [s["name"] for s in self.slots()]
                new = []
                for _ in range(max(1, self.options.runners)):
                    name = await self.start_container(image, self.options.cpus, self.options.memory)
                    if name is None:
                        raise RuntimeError(self.dispatcher.backend_problem or "cannot start")
                    new.append(name)
                self._event("update", image=image, step="starting", containers=new)
                self.say(f"update to {image}: started {', '.join(new)}; waiting for them")
                with trio.fail_after(ready_timeout):
                    while not all(
                        (r := self.runner_of(n)) is not None and r["status"] == RunnerStatus.READY
                        for n in new
                    ):
                        await self.dispatcher.runner_ready_event().wait()
                old_runners = [r for n in old if (r := self.runner_of(n)) is not None]
                for runner in old_runners:  # cordon all first: flows go to the new ones
                    self.store.update_runner(runner["id"], status=RunnerStatus.DRAINING)
                moved: list[str] = []
                for runner in old_runners:
                    self._event("update", image=image, step="moving", runner=runner["id"])
                    self.say(f"update to {image}: moving the flows of {runner['id']}")
                    moved += await self.dispatcher.drain(runner["id"])
                for name in old:
                    await self.stop_container(name)
                self.image = image
                self.store.set_meta("docker_image", image)
                took = round(time.monotonic() - started, 3)
                self._event("update", image=image, step="done", moved=moved, seconds=took)
                self.say(f"update to {image}: done in {took:.1f} s ({len(moved)} flow(s) moved)")
                return {"image": image, "moved": moved, "seconds": took, "containers": new}
            finally:
                self._updating = False
