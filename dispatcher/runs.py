"""Runs through the dispatcher: the resolver of submissions against its stored flows,
and the linked runners as the :class:`~fifoflow.runner.runs.book.RunBook`'s workers.

The book itself (queue, leases, retries, timeouts, results once) is
``runner/runs/book.py``, shared with a runner served alone; the dispatcher keeps one in
its SQLite store (``Dispatcher.run_book``). What is the dispatcher's own:

- :class:`Resolver`: a submission names a stored flow (``flow``, optionally at a
  ``revision``: another one is refused as :class:`RevisionConflict`) or carries a
  document inline (parsed and validated by the flows codec). Its inputs are resolved to
  :class:`Target` s: ``to`` names an input port of the flow, absent means the flow's one
  entry port. Every refusal names the field (``FlowError`` problems ``inputs[2].to: ...``).
  Flows with ``browser`` modules are refused for now (runs in pages: not yet).
- :class:`RunnerWorker`: one per linked runner that is ready and not draining.
  ``fits`` asks placement (``placement.py``, the rules of flows: runtimes, labels,
  room) whether the runner can take the whole flow; ``free`` is the ``maxRuns`` the
  runner announced (in its hardware report) less the runs it holds; ``offer`` and
  ``cancel`` are the link calls ``offerRun`` / ``cancelRun`` with the dispatcher's call
  deadline (``calls.py``). A runner that does not answer an offer in time refused it.

Link calls (JSON-RPC over the runner's control link):

- dispatcher -> runner: ``offerRun(RunOffer)`` (answer: null; a refusal is an error
  with code ``run_refused`` whose message is the reason), ``cancelRun{runId, attempt,
  reason}``.
- runner -> dispatcher (``link.py``): ``runProgress(RunProgress)``,
  ``runResult(RunResult)`` (answer ``{"recorded": bool}``), ``runsHeld{runs}`` (answer
  ``{"stop": [[runId, attempt], ...]}``), ``runGiveBack{runId, attempt, reason}``. A
  runner speaks only for attempts given to it (:meth:`RunnerWorkers.check_attempt`);
  anything else is :class:`NotYourPart`, recorded as a ``refused-call`` event.

Resource handling: nothing here owns a task or a file; the book runs in the
dispatcher's nursery, the workers call through links the dispatcher holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..flows import dump_flow, parse_flow
from ..flows.errors import FlowError, Problem
from ..runner.errors import RevisionConflict
from ..runner.rpc import LinkClosed, RemoteError
from ..runner.runs.errors import RunRefused
from ..runner.runs.model import Target
from ..runtimes.registry import discover
from .calls import call_runner
from .errors import FlowUnknown, RunnerTimeout
from .placement import ModuleAsk, RunnerOffer, plan_placement
from .status import RunnerStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..runner.rpc import RpcPeer
    from ..runner.runs.model import RunOffer, RunSubmission
    from .store import DispatcherStore

__all__ = ["PAGES_PENDING", "Resolver", "RunnerWorker", "RunnerWorkers", "run_asks"]

#: why a run with browser modules is refused today
PAGES_PENDING = "browser modules in runs: not yet (deploy the flow instead)"


def run_asks(document: Mapping[str, Any], labels: Mapping[str, str]) -> list[ModuleAsk]:
    """What each module of a run's flow asks of a runner: its own placement, plus the
    run's ``labels`` (the whole run goes to one runner)."""
    asks = []
    for module in document.get("modules") or ():
        ask = ModuleAsk.from_module(module)
        if labels:
            ask = ModuleAsk(
                id=ask.id,
                runtime=ask.runtime,
                labels={**ask.labels, **labels},
                cpus=ask.cpus,
                memory=ask.memory,
            )
        asks.append(ask)
    return asks


class Resolver:
    """Turns a :class:`RunSubmission` into ``(flow id, revision, document, targets)``.

    Raises :class:`FlowError` (an invalid document or input; each problem names its
    path), :class:`FlowUnknown` (no stored flow of that id), :class:`RevisionConflict`
    (the stored flow is at another revision)."""

    def __init__(self, store: DispatcherStore) -> None:
        self.store = store

    def __call__(self, sub: RunSubmission) -> tuple[str, int | None, dict[str, Any], list[Target]]:
        if (sub.flow is None) == (sub.document is None):
            raise FlowError(
                [
                    Problem(
                        "flow",
                        "give a stored flow's id (flow) or a document inline (document), one of them",
                    )
                ]
            )
        revision: int | None
        if sub.document is not None:
            if sub.revision is not None:
                raise FlowError(
                    [
                        Problem(
                            "revision", "a revision goes with a stored flow (flow), not a document"
                        )
                    ]
                )
            document = sub.document
            revision = None
        else:
            assert sub.flow is not None
            record = self.store.flow(sub.flow)
            if record is None:
                raise FlowUnknown(
                    f"no flow {sub.flow!r} is stored here (deploy it, or send the document inline)"
                )
            revision = int(record.get("revision") or 1)
            if sub.revision is not None and sub.revision != revision:
                raise RevisionConflict(
                    f"flow {sub.flow!r} is at revision {revision}, not {sub.revision}"
                )
            document = record["document"]
        try:
            flow = parse_flow(
                document,
                base_dir=None,
                runtimes=discover(attached=True).keys(),
                source_name="document" if sub.document is not None else "flow",
            )
        except FlowError as exc:
            if sub.document is None:
                raise
            raise FlowError(
                [
                    Problem(f"document.{p.path}" if p.path else "document", p.message)
                    for p in exc.problems
                ]
            ) from None
        pages = sorted(m.id for m in flow.modules if m.runtime == "browser")
        if pages:
            raise FlowError([Problem("flow", f"{PAGES_PENDING}: module(s) {', '.join(pages)}")])
        standalone = orjson.loads(dump_flow(flow, inline=True))
        return flow.id, revision, standalone, _targets(flow, sub)


def _targets(flow: Any, sub: RunSubmission) -> list[Target]:
    inputs = {(m.id, p) for m in flow.modules for p in m.inputs}
    entries = flow.entry_ports()
    targets = []
    for i, item in enumerate(sub.inputs):
        if item.to is None:
            if len(entries) != 1:
                names = ", ".join(f"{m}.{p}" for m, p in entries) or "none"
                raise FlowError(
                    [
                        Problem(
                            f"inputs[{i}].to",
                            f"flow {flow.id!r} has {len(entries)} entry ports ({names}): say which",
                        )
                    ]
                )
            module, port = entries[0]
        else:
            module, port = item.to.split(".", 1)
            if (module, port) not in inputs:
                known = ", ".join(f"{m}.{p}" for m, p in sorted(inputs)) or "none"
                raise FlowError(
                    [
                        Problem(
                            f"inputs[{i}].to",
                            f"no input port {item.to!r} in flow {flow.id!r} (its inputs: {known})",
                        )
                    ]
                )
        targets.append(Target(module=module, port=port, msg=item.msg))
    return targets


class RunnerWorker:
    """A linked, ready runner as a worker of the run book."""

    def __init__(self, workers: RunnerWorkers, runner_id: str) -> None:
        self.workers = workers
        self.id = runner_id

    def _record(self) -> dict[str, Any] | None:
        return self.workers.store.runner(self.id)

    def fits(self, run: Mapping[str, Any]) -> str | None:
        """None when this runner can take the whole run by the placement rules of flows;
        else why not."""
        record = self._record()
        if record is None:
            return f"runner {self.id} is not known"
        document = run.get("document") or {}
        asks = run_asks(document, run.get("labels") or {})
        cpus, memory = self.workers.reserved(self.id)
        offer = RunnerOffer.from_runner(
            record, linked=self.id in self.workers.links, reserved_cpus=cpus, reserved_memory=memory
        )
        plan = plan_placement(asks, [offer], {})
        if plan.reason is not None:
            return plan.reason
        return None

    def max_runs(self) -> int:
        record = self._record()
        if record is None:
            return 0
        try:
            return max(0, int(record["hardware"].get("maxRuns", 1)))
        except (TypeError, ValueError):
            return 1

    def free(self) -> int:
        if self.id not in self.workers.links:
            return 0
        return max(0, self.max_runs() - self.workers.held(self.id))

    async def offer(self, offer: RunOffer) -> None:
        peer = self.workers.links.get(self.id)
        if peer is None:
            raise RunRefused(f"runner {self.id} is not linked")
        params = self.workers.converter.unstructure(offer)
        try:
            await call_runner(peer, self.id, self.workers.call_timeout(), "offerRun", **params)
        except RemoteError as exc:
            raise RunRefused(f"runner {self.id} refused: {exc}") from None
        except RunnerTimeout as exc:
            raise RunRefused(str(exc)) from None
        except LinkClosed:
            raise RunRefused(f"runner {self.id} went away before it answered") from None

    async def cancel(self, run_id: str, attempt: int, reason: str) -> None:
        peer = self.workers.links.get(self.id)
        if peer is None:
            return  # its lease runs out; when it links again, runsHeld tells it to stop
        try:
            await call_runner(
                peer, self.id, self.workers.call_timeout(), "cancelRun",
                runId=run_id, attempt=attempt, reason=reason,
            )  # fmt: skip
        except (RemoteError, RunnerTimeout, LinkClosed):
            pass  # the attempt no longer counts either way; runsHeld settles it later


class RunnerWorkers:
    """The dispatcher's workers for the book: added when a runner says ready (and is not
    draining), removed when its link goes, it is lost, signs off or drains."""

    def __init__(
        self,
        store: DispatcherStore,
        links: Mapping[str, RpcPeer],
        call_timeout: Callable[[], float],
        held: Callable[[str], int],
    ) -> None:
        from ..flows.converter import make_converter

        self.store = store
        self.links = links
        self.call_timeout = call_timeout
        self.held = held
        self.converter = make_converter()

    def reserved(self, runner_id: str) -> tuple[float, float]:
        """CPUs and memory the modules of deployed flows reserve on the runner (a run
        fits in what they leave)."""
        cpus = memory = 0.0
        for record in self.store.flows():
            asks = {m["id"]: ModuleAsk.from_module(m) for m in record["document"]["modules"]}
            for module_id, where in record["placement"].items():
                ask = asks.get(module_id)
                if where == runner_id and ask is not None:
                    cpus += ask.cpus
                    memory += ask.memory
        return cpus, memory

    def worker(self, runner_id: str) -> RunnerWorker:
        return RunnerWorker(self, runner_id)

    def eligible(self, runner_id: str) -> bool:
        record = self.store.runner(runner_id)
        return (
            record is not None
            and record["status"] == RunnerStatus.READY
            and runner_id in self.links
        )
