"""The Swarm backend: the Docker backend's runner slots as Docker Swarm services.

For users who outgrow one machine: Swarm decides which host runs each runner, the
dispatcher still places flows across runners. Everything else (pull policy, pool,
reconcile, image updates) is the Docker backend's (``docker_backend.py``); only how a
slot is started, found and removed differs.
"""

from __future__ import annotations

from typing import Any

import trio

from .docker_backend import LABEL_DISPATCHER, LABEL_SLOT, DockerBackend

__all__ = ["SwarmBackend"]


class SwarmBackend(DockerBackend):
    """The same backend on Docker Swarm: a service (one replica) per runner slot.

    How it maps: a slot is a service named like the container would be, labelled the
    same way (``io.fifoflow.dispatcher``/``io.fifoflow.slot``, on the service and its
    task containers); CPU/memory limits are the service's resource limits; the state
    dir is a named volume on the node that runs the task; the restart policy is
    Swarm's (``any``: a killed task is started again by Swarm, with the same volume, so
    its runner comes back with its identity and its flows). A slot started for a flow
    whose modules require labels gets placement constraints ``node.labels.<k>==<v>``:
    Swarm picks a node with those labels (``docker node update --label-add k=v NODE``),
    and its runner reports the labels so that the dispatcher places those modules there.
    Placement across runners stays the dispatcher's; Swarm only decides which host runs
    a runner. Run the dispatcher on a manager node.

    Failure detection: the engine's ``die`` event of a task container (it carries the
    slot's labels) declares its runner lost at once, as in the Docker backend; Swarm
    then starts a new task for the service (after its 1 s delay) and the runner comes
    back with its identity and takes its flows again (those another runner took stay
    there). An engine reports only its own node's containers: a runner on another node
    is noticed by its heartbeat TTL (or its service's poll), not at once.
    """

    name = "swarm"

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
        from docker.types import Resources, RestartPolicy

        tags = {LABEL_DISPATCHER: self.dispatcher_id, LABEL_SLOT: name}
        service = await self._docker(
            self.client.services.create,
            image,
            args=command,
            name=name,
            labels=tags,
            container_labels=tags,
            env=[f"{k}={v}" for k, v in env.items()],
            mounts=[f"{name}:/state:rw"],
            resources=Resources(cpu_limit=int(cpus * 1e9), mem_limit=memory),
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            networks=[self.options.network],
            constraints=[f"node.labels.{k}=={v}" for k, v in sorted(labels.items())],
            stop_grace_period=int(self.options.stop_timeout * 1e9),
            init=True,
        )
        return str(service.id)

    async def _state(self, slot: dict[str, Any]) -> tuple[Any, str, int | None]:
        import docker.errors

        try:
            service = await self._docker(self.client.services.get, slot["container_id"])
        except docker.errors.NotFound:
            return None, "missing", None
        tasks = await self._docker(service.tasks)
        states = {t.get("Status", {}).get("State") for t in tasks}
        # Swarm restarts failed tasks itself: the slot lives while its service does.
        return service, "running" if "running" in states else "pending", None

    async def _labelled(self) -> list[tuple[str, str, str, Any]]:
        found = await self._docker(
            self.client.services.list,
            filters={"label": f"{LABEL_DISPATCHER}={self.dispatcher_id}"},
        )
        return [(s.attrs["Spec"]["Labels"].get(LABEL_SLOT, ""), s.id, "running", s) for s in found]

    async def _destroy(self, service: Any, slot: str, *, graceful: bool) -> None:
        import docker.errors

        if service is not None:
            try:
                await self._docker(service.remove)  # tasks get SIGTERM, then the grace period
            except docker.errors.NotFound:
                pass
        # The volume is free once the task containers are gone.
        with trio.move_on_after(self.options.stop_timeout + 5):
            while await self._docker(  # noqa: ASYNC110 (the engine's state, polled)
                self.client.containers.list,
                all=True,
                filters={"label": f"{LABEL_SLOT}={slot}"},
            ):
                await trio.sleep(0.2)
        try:
            await self._remove_volume(slot)
        except docker.errors.APIError as exc:
            self._event("volume-left", container=slot, error=str(exc.explanation or exc))
