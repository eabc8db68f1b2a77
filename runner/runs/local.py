"""A runner served alone takes runs itself: a :class:`RunBook` whose one worker is the
runner's own :class:`~.executor.RunExecutor` (see ``RUNS.md``).

:class:`LocalRuns` owns the pieces: the store (``<state_dir>/runs.sqlite``, or memory
without a state dir), the book (its events on the runner's hub, so ``/ws`` subscribers get
``run`` and ``run-progress``), a :class:`Resolver` over the runner's stored flows or an
inline document, and, when the executor exists, a :class:`LocalWorker` adapting it to the
book's ``Worker`` protocol with a reporter that calls the book directly.
``LocalRuns.run`` sets ``runner.run_book`` while it runs (None again after).

Resource handling: :meth:`LocalRuns.run` owns the book's task and closes the store when
it ends; the executor is the runner's (``Runner.run`` owns it).

Error handling: the resolver raises :class:`~fifoflow.flows.FlowError` (each problem's
path is the submission's: ``document.modules[0].runtime``, ``inputs[1].to``), the runner's
``FlowNotFound`` and ``RevisionConflict``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from ...flows import FlowError, dump_flow, parse_flow
from ...flows.errors import Problem
from ..errors import RevisionConflict
from .book import RunBook
from .errors import LeaseLost
from .model import RunOffer, RunProgress, RunResult, RunSubmission, Target, targets
from .store import RunStore

if TYPE_CHECKING:
    from pathlib import Path

    from ..service import Runner

__all__ = ["LOCAL", "LocalRuns", "LocalWorker", "Resolver"]

log = logging.getLogger("fifoflow.runs")

#: the worker id of a runner's own executor
LOCAL = "local"


class Resolver:
    """A submission against the runner: a stored flow (its document and revision) or an
    inline document (parsed here, problems under ``document.``)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __call__(self, sub: RunSubmission) -> tuple[str, int | None, dict[str, Any], list[Target]]:
        if (sub.flow is None) == (sub.document is None):
            message = "give a stored flow's id (flow) or a document inline (document), one of them"
            raise FlowError([Problem("flow", message)])
        revision: int | None = None
        if sub.document is not None:
            if sub.revision is not None:
                message = "a revision goes with a stored flow (flow), not a document"
                raise FlowError([Problem("revision", message)])
            try:
                flow = parse_flow(
                    sub.document,
                    base_dir=None,
                    runtimes=self.runner.runtimes,
                    source_name="document",
                )
            except FlowError as exc:
                raise FlowError(
                    [
                        Problem(f"document.{p.path}" if p.path else "document", p.message)
                        for p in exc.problems
                    ]
                ) from None
        else:
            assert sub.flow is not None
            stored = self.runner.flow(sub.flow)  # FlowNotFound
            flow = stored.flow
            revision = int(self.runner.describe_flow(sub.flow).get("revision") or 1)
            if sub.revision is not None and sub.revision != revision:
                raise RevisionConflict(
                    f"flow {sub.flow!r} is at revision {revision}, not {sub.revision}"
                )
        document = orjson.loads(dump_flow(flow, inline=True))
        return flow.id, revision, document, targets(flow, sub)


class LocalWorker:
    """The runner's executor as the book's one worker."""

    id = LOCAL

    def __init__(self, executor: Any) -> None:
        self.executor = executor

    def fits(self, run: dict[str, Any]) -> str | None:
        """A runner served alone carries no labels: a run that asks for some waits (for
        a runner that has them: none will come; the user sees the reason and cancels)."""
        if run.get("labels"):
            wanted = ", ".join(f"{k}={v}" for k, v in run["labels"].items())
            return f"this runner carries no labels (the run asks for {wanted})"
        missing = (
            sorted(
                {m.get("runtime") for m in run.get("document", {}).get("modules", ())}
                - set(self.executor.runner.runtimes)
            )
            if hasattr(self.executor, "runner")
            else []
        )
        if missing:
            return f"this runner has no runtime {', '.join(map(str, missing))}"
        if not getattr(self.executor, "accepting", True):
            return "the runner is not taking runs now (draining)"
        return None

    async def offer(self, offer: RunOffer) -> None:
        await self.executor.start(offer)

    async def cancel(self, run_id: str, attempt: int, reason: str) -> None:
        await self.executor.cancel(run_id, attempt, reason)


class BookReporter:
    """What the executor tells the book, told directly (nothing to lose in between)."""

    def __init__(self) -> None:
        self.book: RunBook | None = None

    async def progress(self, p: RunProgress) -> bool:
        assert self.book is not None
        try:
            self.book.progress(LOCAL, p)
        except LeaseLost:
            return False
        return True

    async def result(self, r: RunResult) -> bool:
        assert self.book is not None
        try:
            self.book.finish(LOCAL, r)
        except LeaseLost:
            log.info("result dropped: lease lost", extra={"run": r.runId, "attempt": r.attempt})
        return True


class LocalRuns:
    """The book of a runner served alone, over the runner's executor (``Runner.executor``,
    made when ``RunnerConfig.max_runs`` > 0; without one, runs stay queued)."""

    def __init__(self, runner: Runner, state_dir: Path | None) -> None:
        self.runner = runner
        self.state_dir = state_dir

    async def run(
        self, *, task_status: trio.TaskStatus[RunBook] = trio.TASK_STATUS_IGNORED
    ) -> None:
        store = RunStore.open(self.state_dir / "runs.sqlite" if self.state_dir else ":memory:")
        reporter = BookReporter()
        executor = self.runner.executor
        spill = None
        if executor is not None:

            def spill(run_id: str, attempt: int) -> Path | None:
                return executor.attempt_dir(run_id, attempt) / "outputs.jsonl"

        else:
            log.warning("this runner has no run executor (max_runs 0): runs stay queued")
        book = RunBook(store, Resolver(self.runner), hub=self.runner.events, spill=spill)
        reporter.book = book
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(book.run)
                if executor is not None:
                    executor.reporter = reporter
                    book.add_worker(LocalWorker(executor))
                    for result in executor.undelivered():
                        await reporter.result(result)
                    stop = book.reconcile(LOCAL, executor.held())
                    for run_id, attempt in stop:
                        await executor.cancel(run_id, attempt, "no longer counts")
                self.runner.run_book = book
                task_status.started(book)
        finally:
            self.runner.run_book = None
            store.close()
