"""Hot swap: apply a new version of a flow to its running instances.

The diff comes from :func:`fifoflow.flows.diff.diff_flows`; this module applies it at a
quiet point, all or nothing:

0. Fast path: when the update only changes one module's code or config, its load is
   sent to its host at once (behind what the host was already sent), with no pause.
1. Runtimes the new version needs and the flow does not run yet are started (empty).
2. **Pause**: the flow's hosts get no new deliveries; what is in flight finishes
   (``drain``: every host acknowledges everything it was sent). Producers and injects
   keep queueing in the runner, within the usual bounds. No message is inside a host.
3. **Load**: added modules; moved modules in their new runtime, with the state their
   old host last reported (exact: the host is drained); changed modules in place (the
   host replaces the code between two messages, keeps ``ctx.state``, runs ``migrate``
   and ``init``). If any load fails, what was loaded is undone (new modules unloaded,
   replaced ones loaded again with their old code and exact old state, ``migrate``
   off) and the update is refused with the host's error: the old version runs on.
4. **Commit**: removed modules and the old homes of moved modules are unloaded;
   messages waiting in the runner for a moved module go, in order, in front of its
   queue in the new runtime (and go before anything a module of its new host sends it
   over a wire inside that host: ``DeliveryQueues.set_local``); what waited for a removed module is taken out and
   returned in the report. The runner's routing table, the load frames (used on a
   restart) and every host's route table are replaced in one step.
5. **Resume**; runtimes left without modules are stopped gracefully.

A message is therefore routed entirely by the old wiring or entirely by the new one,
handled entirely by the old code or entirely by the new, and never lost or doubled.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from ..flows.diff import FlowDiff, diff_flows
from .errors import FlowLoadError, FlowStateError, RunnerError
from .events import EventKind
from .status import FlowStatus

if TYPE_CHECKING:
    from collections import deque

    from ..flows import Flow
    from .flowrun import FlowRun
    from .instance import RuntimeInstance
    from .queues import Delivery

__all__ = ["SwapRejected", "hot_swap"]


class SwapRejected(RunnerError):
    """New code did not load; nothing was changed. ``.module`` and ``.error`` say why."""

    code = "swap_rejected"
    field = "flow"

    def __init__(self, module: str, error: dict[str, Any]) -> None:
        self.module = module
        self.error = error
        super().__init__(
            f"update refused, the running version is unchanged: module {module!r} did not load: "
            f"{error.get('type', 'Error')}: {error.get('message', '')}"
        )


async def hot_swap(
    run: FlowRun, new_flow: Flow, states: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply ``new_flow`` to the running ``run``; a report of what was done. ``states``
    (module id -> state) seeds modules the update adds (a module a dispatcher moves
    here from another runner)."""
    started = time.perf_counter()
    diff = diff_flows(run.flow, new_flow)
    if run.status is not FlowStatus.RUNNING or run.instance_nursery is None:
        raise FlowStateError(f"flow {run.flow_id!r} is {run.status}, not running")
    plan = run.plan(new_flow)
    reloaded = diff.reloaded()
    if diff.empty or (
        len(reloaded) == 1
        and diff == FlowDiff(**{_KIND[reloaded[0] in diff.code_changed]: reloaded})
    ):
        # Nothing to re-route: no pause. One module's new code or config goes to its host
        # behind what was already sent to it, so it takes over between two messages; a
        # host that cannot load it keeps the old version (PROTOCOL.md, load).
        if reloaded:
            mid = reloaded[0]
            instance = run.instances[run.flow.module(mid).host]
            qid = run.qualified(mid)
            error = await instance.load_module(
                {**plan.loads[run.flow.module(mid).host][qid], "state": None}
            )
            if error is not None:
                raise SwapRejected(mid, error)
        run.flow = new_flow
        run._install(plan)
        run.debugger.forget({m.id for m in new_flow.modules})
        return _report(run, diff, 0, {}, 0.0, started)
    old_instances = dict(run.instances)
    fresh = [inst for rt, inst in plan.instances.items() if rt not in old_instances]
    started_fresh: list[RuntimeInstance] = []
    try:
        for instance in fresh:
            instance.set_modules({}, {})
            await run.instance_nursery.start(instance.run)
            started_fresh.append(instance)
    except FlowLoadError as exc:
        # a compiled runtime's new binary did not build: the old one runs on
        for instance in started_fresh:
            await instance.stop()
        raise SwapRejected(run.short(exc.module), exc.error) from None
    except BaseException:
        for instance in started_fresh:
            await instance.stop()
        raise

    by_id_old = {m.id: m for m in run.flow.modules}
    by_id_new = {m.id: m for m in new_flow.modules}
    dropped: dict[str, list[dict[str, Any]]] = {}
    rehomed = 0
    paused_at = time.perf_counter()
    committed = False
    for instance in old_instances.values():
        instance.pause()
    try:
        with trio.move_on_after(run.config.swap_timeout) as quiet:
            for instance in old_instances.values():
                await instance.drain()
        if quiet.cancelled_caught:
            raise FlowStateError(
                f"flow {run.flow_id!r} did not reach a quiet point within "
                f"{run.config.swap_timeout:g} s (a handler is busy); nothing was changed"
            )
        await _load_all(run, plan, diff, old_instances, by_id_old, by_id_new, states or {})

        # Commit. First what needs the hosts (unloads), then one synchronous step.
        for mid in diff.removed:
            await old_instances[by_id_old[mid].host].unload_module(run.qualified(mid))
        for mid, src, _ in diff.moved:
            await old_instances[src].unload_module(run.qualified(mid))
        for mid in diff.removed:
            queue = old_instances[by_id_old[mid].host].queues.take_queue(run.qualified(mid))
            if queue:
                dropped[mid] = [{"port": d.port, "msgs": d.msgs} for d in queue]
                run.settle(sum(d.count for d in queue))
            if run.journal is not None:
                run.journal.forget(run.qualified(mid))  # what waited for it is dropped
        for mid, src, dst in diff.moved:
            qid = run.qualified(mid)
            queue: deque[Delivery] = old_instances[src].queues.take_queue(qid)
            rehomed += plan.instances[dst].queues.prepend(qid, queue)
        run.flow = new_flow
        run._install(plan)
        run.debugger.forget({m.id for m in new_flow.modules})
        committed = True
        for instance in plan.instances.values():
            try:
                await instance.control([{"op": "route", "routes": instance.routes}])
            except FlowStateError:
                pass  # a host that went away gets the new table when it is restarted
    finally:
        paused_ms = (time.perf_counter() - paused_at) * 1000
        for instance in (*old_instances.values(), *fresh):
            instance.resume()
        if not committed:
            for instance in started_fresh:
                await instance.stop()
    for runtime, instance in old_instances.items():
        if runtime not in plan.instances:
            await instance.stop()
    return _report(run, diff, rehomed, dropped, paused_ms, started)


_KIND = {True: "code_changed", False: "config_changed"}


def _report(
    run: FlowRun,
    diff: FlowDiff,
    rehomed: int,
    dropped: dict[str, list[dict[str, Any]]],
    paused_ms: float,
    started: float,
) -> dict[str, Any]:
    report = {
        "changes": diff.describe(),
        "summary": diff.summary(),
        "rehomed": rehomed,
        "dropped": dropped,
        "pausedMs": round(paused_ms, 3),
        "durationMs": round((time.perf_counter() - started) * 1000, 3),
    }
    run.publish({"kind": EventKind.SWAP, **report})
    return report


async def _load_all(
    run: FlowRun,
    plan: Any,
    diff: Any,
    old_instances: dict[str, RuntimeInstance],
    by_id_old: dict[str, Any],
    by_id_new: dict[str, Any],
    states: dict[str, Any],
) -> None:
    undo: list[tuple[str, RuntimeInstance, str, dict[str, Any] | None, Any]] = []

    def frame_of(mid: str) -> dict[str, Any]:
        return plan.loads[by_id_new[mid].host][run.qualified(mid)]

    try:
        for mid in diff.added:
            target = plan.instances[by_id_new[mid].host]
            error = await target.load_module({**frame_of(mid), "state": states.get(mid)})
            if error is not None:
                raise SwapRejected(mid, error)
            undo.append(("unload", target, run.qualified(mid), None, None))
        for mid, src, dst in diff.moved:
            qid = run.qualified(mid)
            state = old_instances[src].states.get(qid)
            target = plan.instances[dst]
            error = await target.load_module({**frame_of(mid), "state": state})
            if error is not None:
                raise SwapRejected(mid, error)
            undo.append(("unload", target, qid, None, None))
        for mid in diff.reloaded():
            qid = run.qualified(mid)
            instance = old_instances[by_id_old[mid].host]
            before_frame = instance.modules[qid]
            before_state = instance.states.get(qid)
            error = await instance.load_module({**frame_of(mid), "state": None})
            if error is not None:
                raise SwapRejected(mid, error)
            undo.append(("restore", instance, qid, before_frame, before_state))
    except BaseException:
        with trio.CancelScope(shield=True):
            for action, instance, qid, frame, state in reversed(undo):
                try:
                    if action == "unload":
                        await instance.unload_module(qid)
                    else:
                        assert frame is not None
                        await instance.load_module({**frame, "state": state, "migrate": False})
                        if state is not None:
                            instance.states[qid] = state
                except RunnerError as exc:
                    instance._log(qid, "error", f"could not undo the load of {qid}: {exc}")
        raise
