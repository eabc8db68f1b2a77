"""Client runners: the runners of web pages, kept in the dispatcher's process.

Each page (``page`` id chosen by the page, kept across reloads in its session storage)
gets a :class:`~fifoflow.runner.service.Runner` here whose only runtime is ``browser``
and whose hosts attach themselves from the page (``runner/attached.py``). That runner
registers with this dispatcher over an ordinary control link (to its own URL), with the
label ``client=<page>``: placement, relay, breakpoints, steps, hot swap and snapshots
treat it like any runner. Design: ``runtimes/browser/DESIGN.md``.

Lifecycle: created when the page first connects; while the page is away its hosts wait
for it (their modules' state and unacknowledged messages are kept); a page that says
``bye``, or stays away longer than ``grace`` seconds, has its runner signed off and
stopped (its flows are then placed again elsewhere or wait). A page that stays gone
``prune_after`` seconds more is pruned: its runner row, state dir and page secret are
deleted (its id is free again). At most ``max_pages`` pages run at once; one more is
refused (:class:`~.errors.PageRefused`).

A page id is bound to a secret: the first connection of a page id gets a random page
secret (in ``welcome``; only its digest is kept, in ``<state dir>/clients/<page>.secret``,
so it survives a dispatcher restart); every later connection of that id, control or
host socket, must bring it, or is refused. A page's client token therefore reaches only
its own page: it cannot take another page's id (and receive its modules' ``load``
frames), and injects only into the flows it runs (``Dispatcher.check_page_inject``).

Resource handling: every client runner lives in :meth:`ClientRunners.run`'s nursery;
leaving it stops them all (they sign off first).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
import shutil
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from ..runner import RunnerConfig, open_runner
from ..runner.attached import AttachedHosts
from ..runner.errors import RunnerError
from ..runner.events import EventKind
from ..runner.link import DispatcherLink
from ..runtimes.registry import discover
from .errors import PageRefused
from .store import digest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from .service import Dispatcher

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_PRUNE_AFTER",
    "PAGE_ID",
    "ClientRunner",
    "ClientRunners",
]

log = logging.getLogger("fifoflow.dispatcher.clients")

PAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_GRACE = 60.0
DEFAULT_MAX_PAGES = 100
DEFAULT_PRUNE_AFTER = 600.0
#: browser parts of runs one page runs at once
PAGE_RUNS = 4


@attrs.define(eq=False)
class ClientRunner:
    page: str
    hosts: AttachedHosts
    runner_id: str | None = None
    stop: trio.Event = attrs.field(factory=trio.Event)
    ended: trio.Event = attrs.field(factory=trio.Event)
    #: the connections of the page now (a reload can overlap the old one)
    connections: int = 0
    generation: int = 0
    #: the page takes the browser parts of runs (``connect(url, {runs: false})``: no)
    takes_runs: bool = True
    #: ``async (message: dict) -> None``: tells the page something on its control
    #: socket (``{"op": "run", ...}``); None while it is away
    notify: Any = None
    #: its runner (for runs: its executor)
    runner: Any = None

    def running_runs(self) -> int:
        executor = getattr(self.runner, "executor", None)
        return int(executor.statistics()["running"]) if executor is not None else 0

    def admit(self, offer: Any) -> str | None:
        """The client runner's say on the browser part of a run: None takes it."""
        if not self.takes_runs:
            return f"page {self.page} takes no runs (it connected with runs: false)"
        if not self.connections:
            return f"page {self.page} is away"
        return None


class ClientRunners:
    def __init__(
        self,
        dispatcher: Dispatcher,
        url: str,
        state_dir: Path,
        *,
        grace: float = DEFAULT_GRACE,
        max_pages: int = DEFAULT_MAX_PAGES,
        prune_after: float = DEFAULT_PRUNE_AFTER,
        fingerprint: str | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.url = url
        self.state_dir = state_dir
        #: the dispatcher's TLS certificate (sha256), pinned by the pages' runners
        self.fingerprint = fingerprint
        #: seconds a page may stay away before its runner signs off
        self.grace = grace
        #: pages served at once; one more is refused
        self.max_pages = max_pages
        #: seconds a page stays known (runner row, state dir, secret) after it is gone
        self.prune_after = prune_after
        self.pages: dict[str, ClientRunner] = {}
        #: pages gone (their runner ended), each waiting to be pruned
        self._gone: dict[str, ClientRunner] = {}
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()

    async def run(
        self, *, task_status: trio.TaskStatus[ClientRunners] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # pages known from before a restart are pruned too unless they come back
                for path in sorted((self.state_dir / "clients").glob("*.secret")):
                    page = path.name.removesuffix(".secret")
                    identity = self._identity(page)
                    gone = ClientRunner(page, AttachedHosts(), runner_id=identity.get("runnerId"))
                    self._gone[page] = gone
                    nursery.start_soon(self._prune, gone)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def stop_all(self) -> None:
        for client in list(self.pages.values()):
            client.stop.set()
        for client in list(self.pages.values()):
            await client.ended.wait()

    def _identity(self, page: str) -> dict[str, str]:
        """The page runner's registration (``runner/link.py``'s ``dispatcher.json``)."""
        try:
            identity = orjson.loads(
                (self.state_dir / "clients" / page / "dispatcher.json").read_bytes()
            )
        except (OSError, orjson.JSONDecodeError):
            return {}
        return identity if isinstance(identity, dict) else {}

    def _secret_path(self, page: str) -> Path:
        return self.state_dir / "clients" / f"{page}.secret"

    def check_secret(self, page: str, secret: str | None) -> bool:
        """Whether ``secret`` is the page's secret (False for a page never seen)."""
        path = self._secret_path(page)
        if not path.exists():
            return False
        return secret is not None and hmac.compare_digest(path.read_text().strip(), digest(secret))

    def _claim(self, page: str, secret: str | None) -> str | None:
        """Check the secret of a known page id, or bind a new one to a fresh secret
        (returned). :class:`PageRefused` for a wrong or missing secret."""
        if self._secret_path(page).exists():
            if not self.check_secret(page, secret):
                raise PageRefused(
                    f"page {page!r} is bound to another secret (a page reconnects with"
                    " the secret its first welcome gave it)",
                    field="secret",
                )
            return None
        issued = secrets.token_urlsafe(24)
        path = self._secret_path(page)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest(issued) + "\n")
        return issued

    async def page(
        self,
        page: str,
        secret: str | None,
        request_host: Callable[[str], Awaitable[None]],
        *,
        notify: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        runs: bool = True,
    ) -> tuple[ClientRunner, int, str | None]:
        """The page's runner, started (and registered) if it is not running, with the
        page connected first: a runner that restores running flows from its state dir
        asks the page for their hosts while it starts. Also returns the page secret
        when this connection is the page id's first (None otherwise).
        :class:`PageRefused` for a wrong secret, or a new page over ``max_pages``."""
        async with self._lock:
            client = self.pages.get(page)
            if client is None or client.ended.is_set():
                assert self._nursery is not None, "client runners are not being served"
                live = sum(1 for c in self.pages.values() if not c.ended.is_set())
                if live >= self.max_pages:
                    raise PageRefused(
                        f"this dispatcher serves {self.max_pages} pages already (its"
                        " maximum); try again later",
                        field="page",
                    )
                issued = self._claim(page, secret)
                client = ClientRunner(page, AttachedHosts())
                self.pages[page] = client
                client.takes_runs, client.notify = runs, notify
                generation = self.connected(client)
                client.hosts.page_connected(request_host)
                await self._nursery.start(self._serve, client)
            else:
                issued = self._claim(page, secret)
                client.takes_runs, client.notify = runs, notify
                generation = self.connected(client)
                client.hosts.page_connected(request_host)
                self.dispatcher.page_ready()
            return client, generation, issued

    def get(self, page: str) -> ClientRunner | None:
        client = self.pages.get(page)
        return client if client is not None and not client.ended.is_set() else None

    def connected(self, client: ClientRunner) -> int:
        client.connections += 1
        client.generation += 1
        return client.generation

    def disconnected(self, client: ClientRunner, generation: int) -> None:
        client.connections -= 1
        if client.generation == generation:
            client.hosts.page_gone()
            client.notify = None
        if client.connections == 0:
            # the browser parts of runs it held are given back (retried)
            self.dispatcher.page_gone(client.runner_id)
        if client.connections == 0 and self._nursery is not None:
            self._nursery.start_soon(self._expire, client, client.generation)

    async def _expire(self, client: ClientRunner, generation: int) -> None:
        await trio.sleep(self.grace)
        if client.connections == 0 and client.generation == generation:
            client.stop.set()

    async def _serve(self, client: ClientRunner, *, task_status: trio.TaskStatus[None]) -> None:
        state_dir = self.state_dir / "clients" / client.page
        config = RunnerConfig(
            state_dir=state_dir, attached=client.hosts, max_runs=PAGE_RUNS, warm_hosts=0
        )
        runtimes = {"browser": discover(attached=True)["browser"]}
        try:
            async with open_runner(config, runtimes) as runner:
                client.runner = runner
                if runner.executor is not None:
                    runner.executor.admit = client.admit
                # registered with this dispatcher at this URL (one restarted on another
                # port registers the page's runner anew)
                registered = self._identity(client.page).get("url") == self.url
                link = DispatcherLink(
                    self.url,
                    runner,
                    state_dir,
                    registration_token=None
                    if registered
                    else self.dispatcher.issue_token()["token"],
                    name=f"browser {client.page}",
                    labels={"client": client.page},
                    fingerprint=self.fingerprint,
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._tell_runs, client, runner)
                    client.runner_id = await nursery.start(link.run)
                    task_status.started()
                    self.dispatcher.page_ready()
                    await client.stop.wait()
                    with trio.move_on_after(5):
                        await link.sign_off()
                    # The page is gone for good: its modules' last states go to the
                    # dispatcher and its flows are placed again (or wait for a page).
                    for summary in runner.flows():
                        with contextlib.suppress(RunnerError):
                            self.dispatcher.snapshot(
                                client.runner_id,
                                summary["id"],
                                runner.flow(summary["id"]).snapshot(),
                            )
                    self.dispatcher.displace(client.runner_id)
                    nursery.cancel_scope.cancel()
        finally:
            client.ended.set()
            if self.pages.get(client.page) is client:
                del self.pages[client.page]
            self._gone[client.page] = client
            if self._nursery is not None:
                self._nursery.start_soon(self._prune, client)

    async def _tell_runs(self, client: ClientRunner, runner: Any) -> None:
        """The page hears of the browser parts of runs its runner takes and ends:
        ``{"op": "run", "event": "started"|"ended", "run", "attempt", "side", ...}``."""
        sub = runner.subscribe(kinds=[EventKind.RUN], capacity=1000)
        try:
            async for event in sub:
                notify = client.notify
                if notify is None or event.get("kind") != EventKind.RUN:
                    continue
                message = {"op": "run", **{k: v for k, v in event.items() if k != "kind"}}
                try:
                    await notify(message)
                except Exception as exc:  # the page's socket is gone: it is told nothing
                    log.debug("page %s not told of run %s: %r", client.page, event.get("run"), exc)
        finally:
            sub.close()

    async def _prune(self, client: ClientRunner) -> None:
        """Forget a page gone ``prune_after`` seconds ago: its runner row, state dir
        and secret (unless it came back meanwhile)."""
        await trio.sleep(self.prune_after)
        async with self._lock:
            if client.page in self.pages or self._gone.get(client.page) is not client:
                return
            del self._gone[client.page]
            if client.runner_id is not None:
                self.dispatcher.forget_runner(client.runner_id)
            shutil.rmtree(self.state_dir / "clients" / client.page, ignore_errors=True)
            self._secret_path(client.page).unlink(missing_ok=True)
