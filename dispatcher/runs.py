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
  A flow with ``browser`` modules needs at least one other module (its server side).
- :class:`RunnerWorker`: one per linked runner that is ready, not draining, and has
  said what it holds (``runsHeld``, after its ``ready``: a runner takes runs from then).
  ``fits`` asks placement (``placement.py``, the rules of flows: runtimes, labels,
  room) whether the runner can take the whole flow; ``free`` is the ``maxRuns`` the
  runner announced (in its hardware report) less the runs it holds; ``offer`` and
  ``cancel`` are the link calls ``offerRun`` / ``cancelRun`` with the dispatcher's call
  deadline (``calls.py``). A runner that does not answer an offer in time refused it.
- Runs with ``browser`` modules (``sides.py``): the worker is the server side; ``fits``
  asks placement for the other modules only; ``offer`` splits the document
  (:func:`~.parts.flow_part`), offers the server its part first, then the pages that are
  connected, one after the other, until one accepts the browser part. No page, or every
  page refuses: the offer is refused with the reason (the server side is canceled; the
  run waits queued, and is offered again as soon as a page's runner is ready).

Link calls (JSON-RPC over the runner's control link):

- dispatcher -> runner: ``offerRun(RunOffer)`` (answer: null; a refusal is an error
  with code ``run_refused`` whose message is the reason), ``cancelRun{runId, attempt,
  reason}``; to the sides of a run with browser modules ``runDeliver`` and ``runEnd``
  (``sides.py``).
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

import attrs
import orjson
import trio

from ..flows import dump_flow, parse_flow
from ..flows.errors import FlowError, Problem
from ..runner.errors import RevisionConflict
from ..runner.rpc import LinkClosed, RemoteError
from ..runner.runs.errors import RunRefused
from ..runner.runs.model import RunPart, Target, targets
from ..runtimes.registry import discover
from .calls import call_runner
from .errors import FlowUnknown, RunnerTimeout
from .parts import flow_part
from .placement import ModuleAsk, RunnerOffer, plan_placement
from .sides import Coordinator, Side
from .status import RunnerStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..runner.rpc import RpcPeer
    from ..runner.runs.model import RunOffer, RunSubmission
    from .store import DispatcherStore

__all__ = ["PAGE_RUNTIME", "Resolver", "RunnerWorker", "RunnerWorkers", "page_modules", "run_asks"]

#: the runtime whose modules run in a page (the page side of a run)
PAGE_RUNTIME = "browser"


def page_modules(document: Mapping[str, Any]) -> set[str]:
    """The modules of a run's flow that run in a page."""
    return {str(m["id"]) for m in document.get("modules") or () if m.get("runtime") == PAGE_RUNTIME}


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
        #: the runtimes a flow may name (those of the dispatcher's runners, ``browser``
        #: included): read once, as the dispatcher's deploy reads them
        self.runtimes = frozenset(discover(attached=True).keys())

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
                runtimes=self.runtimes,
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
        pages = sorted(m.id for m in flow.modules if m.runtime == PAGE_RUNTIME)
        if pages and len(pages) == len(flow.modules):
            raise FlowError(
                [
                    Problem(
                        "flow",
                        "a run with browser modules needs a server side too (a module in"
                        f" another runtime); this flow has only: {', '.join(pages)}",
                    )
                ]
            )
        standalone = orjson.loads(dump_flow(flow, inline=True))
        return flow.id, revision, standalone, targets(flow, sub)


def _part(offer: RunOffer, side: str, modules: set[str]) -> RunOffer:
    """One side's offer: its part of the flow, its inputs, the ports it relays."""
    document, relay = flow_part(offer.flow, modules)
    return attrs.evolve(
        offer,
        flow=document,
        inputs=[t for t in offer.inputs if t.module in modules],
        part=RunPart(side=side, relay=relay, coordinated=True),
    )


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
        pages = page_modules(document)
        if pages and (record.get("hardware") or {}).get("labels", {}).get("client"):
            return f"runner {self.id} is a page's: it takes the browser part of a run, not a run"
        asks = [a for a in run_asks(document, run.get("labels") or {}) if a.id not in pages]
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
        pages = page_modules(offer.flow)
        if pages:
            await self._offer_sides(offer, pages)
            return
        await self.workers.offer_to(self.id, offer)

    async def _offer_sides(self, offer: RunOffer, pages: set[str]) -> None:
        """A run with browser modules: the server part here first, then the browser part
        to the first page that takes it (``sides.py``)."""
        coordinator = self.workers.coordinator
        if coordinator is None:
            raise RunRefused("this dispatcher serves no pages: browser modules cannot run")
        candidates = self.workers.pages()
        if not candidates:
            raise RunRefused(
                f"no page is connected to take the browser part (module(s)"
                f" {', '.join(sorted(pages))}): the run waits for one"
            )
        server_modules = {m["id"] for m in offer.flow["modules"]} - pages
        c = coordinator.open(offer.runId, offer.attempt, self.id, offer.flow, pages)
        server_side = Side(f"server:{self.id}", self.id, frozenset(server_modules))
        try:
            await self.workers.offer_to(self.id, _part(offer, server_side.name, server_modules))
            coordinator.add_side(c, server_side)
            refusals = []
            for page, runner_id in candidates:
                side = Side(f"page:{page}", runner_id, frozenset(pages))
                try:
                    await self.workers.offer_to(runner_id, _part(offer, side.name, pages))
                except RunRefused as exc:
                    refusals.append(f"page {page}: {exc}")
                    continue
                coordinator.add_side(c, side)
                c.started.set()
                return
        except BaseException:
            coordinator.abort(c)
            if server_side.accepted:
                await self.cancel_side(offer, "the offer did not go through")
            raise
        coordinator.abort(c)
        await self.cancel_side(offer, "no page took the browser part")
        raise RunRefused("no page took the browser part: " + "; ".join(refusals))

    async def cancel_side(self, offer: RunOffer, reason: str) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(self.workers.call_timeout()):
            await self._cancel_here(offer.runId, offer.attempt, reason)

    async def cancel(self, run_id: str, attempt: int, reason: str) -> None:
        coordinator = self.workers.coordinator
        c = coordinator.get(run_id, attempt) if coordinator is not None else None
        if c is not None and c.server == self.id:
            coordinator.stop(c, reason)  # every side, this one included
            return
        await self._cancel_here(run_id, attempt, reason)

    async def _cancel_here(self, run_id: str, attempt: int, reason: str) -> None:
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
        #: runs with browser modules (set by the dispatcher when it serves pages)
        self.coordinator: Coordinator | None = None
        #: the pages that can be offered a browser part now: [(page id, runner id)]
        self.pages: Callable[[], list[tuple[str, str]]] = list

    async def offer_to(self, runner_id: str, offer: RunOffer) -> None:
        """``offerRun`` to a runner; :class:`RunRefused` with the reason."""
        peer = self.links.get(runner_id)
        if peer is None:
            raise RunRefused(f"runner {runner_id} is not linked")
        params = self.converter.unstructure(offer)
        try:
            await call_runner(peer, runner_id, self.call_timeout(), "offerRun", **params)
        except RemoteError as exc:
            raise RunRefused(f"runner {runner_id} refused: {exc}") from None
        except RunnerTimeout as exc:
            raise RunRefused(str(exc)) from None
        except LinkClosed:
            raise RunRefused(f"runner {runner_id} went away before it answered") from None

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
