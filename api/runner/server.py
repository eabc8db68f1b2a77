"""``fifoflow runner serve``: a runner and its API in one process.

Resource handling: :func:`serve` owns the runner (and so every runtime process) and the
hypercorn server, in one nursery. SIGINT or SIGTERM stops accepting requests, stops
every flow gracefully (their state is written to the state dir, and they stay marked
running), then returns.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from fifoflow.api.common.auth import TokenError, load_or_create_token
from fifoflow.api.common.places import DEFAULT_PORT
from fifoflow.api.common.serving import configure_tls, exposure_warning
from fifoflow.api.common.ui import ui_url
from fifoflow.api.runner.app import ApiSettings, create_app
from fifoflow.flows.limits import MAX_BODY
from fifoflow.runner import FlowStatus, RunnerConfig, open_runner
from fifoflow.runner.link import REPORT_SECONDS, DispatcherLink
from fifoflow.runner.runs.local import LocalRuns
from fifoflow.runner.store import atomic_write

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fifoflow.runner import Runner

__all__ = ["ServeOptions", "serve"]


@attrs.frozen
class ServeOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token_file: Path | None = None
    max_body: int = MAX_BODY
    graceful_timeout: float = 2.0
    #: a dispatcher to register with and report to (None: a standalone runner)
    dispatcher: str | None = None
    registration_token: str | None = None
    #: placement labels reported to the dispatcher (modules may require them)
    labels: dict[str, str] = attrs.field(factory=dict)
    #: what the runner offers to a dispatcher's flows (None: the machine's CPUs/memory)
    cpus: float | None = None
    memory: int | None = None
    #: the name the dispatcher shows (None: the hostname)
    name: str | None = None
    #: serve HTTPS/WSS with this certificate and key (None: plain HTTP)
    certfile: Path | None = None
    keyfile: Path | None = None
    #: how to trust an https:// dispatcher: a CA file (or its self-signed certificate),
    #: or its certificate's pinned SHA-256 fingerprint (None, None: the system's CAs)
    dispatcher_ca: Path | None = None
    dispatcher_fingerprint: str | None = None
    #: runs at once (None: the machine's CPUs), how long delivered runs' files are kept,
    #: and how long running runs get to finish on SIGTERM before they are given back
    max_runs: int | None = None
    run_retention: float = 7 * 24 * 3600.0
    run_grace: float = 30.0
    #: also serve the FBP network protocol on this port (None: not; 0: a free one), its
    #: clients' secret read from this file (None: the runner's token)
    fbp_port: int | None = None
    fbp_secret_file: Path | None = None
    #: flows without ``durability``: "checkpoint" or "journal" (runner/JOURNAL.md), the
    #: journal's fsync policy, its size bound and the disk space it keeps in reserve
    #: direct host-to-host channels (runtimes/PROTOCOL.md section 11); False: ``--no-direct``
    direct: bool = True
    durability: str = "checkpoint"
    journal_fsync: str = "always"
    journal_max_bytes: int = 1 << 30
    journal_reserve_bytes: int = 4 << 20
    #: runner-to-runner relay (runner/peers.py): the listener's address and port, and
    #: the endpoint others are told (None host: no listener, all through the dispatcher)
    peer_host: str | None = "127.0.0.1"
    peer_port: int = 0
    peer_url: str | None = None

    @property
    def token_path(self) -> Path:
        return self.token_file or self.state_dir / "token"


async def _drain_runs(
    runner: object, link: DispatcherLink | None, grace: float, signum: int
) -> None:
    """SIGTERM with runs: take no new ones, let the running ones finish within
    ``grace`` seconds (their results go out over the link), give the rest back."""
    executor = getattr(runner, "executor", None)
    if executor is None:
        return
    if not executor.statistics().get("running"):
        await executor.drain(0)  # takes no new runs from here on
        return
    _say(f"{signal.Signals(signum).name}: no new runs; running ones get {grace:g} s to finish")
    running = {(h["runId"], h["attempt"]) for h in executor.held() if not h["finished"]}
    if link is not None:
        await link.stop_taking_runs()
    rest = await executor.drain(grace)
    if link is not None:
        # drain returns when the attempts ended; their results go out just after
        with trio.move_on_after(REPORT_SECONDS):
            await link.reporter.wait_delivered(running - set(rest))
    if rest:
        _say(f"giving back {len(rest)} run(s) not finished within {grace:g} s")
        if link is not None:
            await link.give_back(
                list(rest), f"the runner stopped (SIGTERM; grace {grace:g} s over)"
            )


async def _serve_fbp(
    runner: Runner,
    options: ServeOptions,
    secret: str,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The FBP protocol endpoint (``api/fbp``) beside the Runner API, until ``stop``."""
    from fifoflow.api.fbp import FbpRuntime, serve_fbp
    from fifoflow.flows.library import ComponentLibrary

    library = ComponentLibrary(options.state_dir / "components")
    fbp = FbpRuntime(
        runner,
        secret,
        library,
        label=f"fifoflow runner {runner.version}",
        graph_dir=options.state_dir / "fbp-graphs",
    )
    for problem in fbp.restore():
        _say(f"warning: {problem}")
    await serve_fbp(
        fbp,
        f"{options.host}:{options.fbp_port}",
        shutdown=stop,
        max_message=options.max_body,
        certfile=str(options.certfile) if options.certfile else None,
        keyfile=str(options.keyfile) if options.keyfile else None,
        task_status=task_status,
    )


def load_secret(path: Path) -> str:
    """The first line of ``path`` (TokenError: missing, unreadable or empty)."""
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"--fbp-secret-file {path}: cannot read it: {exc}") from None
    if not secret:
        raise TokenError(f"--fbp-secret-file {path}: it is empty")
    return secret


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@asynccontextmanager
async def _local_runs(runner: Runner, options: ServeOptions) -> AsyncIterator[None]:
    """A runner served alone takes runs itself (``runner/runs/local.py``); one linked to a
    dispatcher takes them from there (its ``/runs`` answer 409 naming it)."""
    async with trio.open_nursery() as nursery:
        if not options.dispatcher:
            await nursery.start(LocalRuns(runner, options.state_dir).run)
        yield
        nursery.cancel_scope.cancel()


async def serve(
    options: ServeOptions, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation); ``task_status`` gets the bound URLs."""
    token, created = load_or_create_token(options.token_path)
    _say(f"token: {options.token_path}" + (" (created)" if created else ""))
    fbp_secret = token
    if options.fbp_secret_file is not None:
        fbp_secret = load_secret(options.fbp_secret_file)
    config = RunnerConfig(
        state_dir=options.state_dir,
        max_runs=options.max_runs if options.max_runs is not None else os.cpu_count() or 1,
        run_retention=options.run_retention,
        durability=options.durability,
        direct=options.direct,
        journal_fsync=options.journal_fsync,
        journal_max_bytes=options.journal_max_bytes,
        journal_reserve_bytes=options.journal_reserve_bytes,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_runner(config) as runner, _local_runs(runner, options):
            for problem in runner.restore_problems:
                _say(f"warning: {problem}")
            restored = runner.flows()
            if restored:
                running = sum(1 for f in restored if f["status"] == FlowStatus.RUNNING)
                _say(
                    f"restored {len(restored)} flow(s) from {options.state_dir}, {running} running"
                )
            for flow_id, n in sorted(runner.recovered.items()):
                _say(f"flow {flow_id}: {n} message(s) from its journal handled again")
            settings = ApiSettings(
                token=token, max_body=options.max_body, dispatcher=options.dispatcher
            )
            app = create_app(runner, settings)
            hc = hypercorn.config.Config()
            hc.bind = [f"{options.host}:{options.port}"]
            hc.websocket_max_message_size = options.max_body
            hc.graceful_timeout = options.graceful_timeout
            hc.accesslog = None
            hc.errorlog = None
            tls = options.certfile is not None and options.keyfile is not None
            if tls:
                fingerprint = configure_tls(hc, options.certfile, options.keyfile)
                _say(f"TLS certificate sha256: {fingerprint}")
            warning = exposure_warning(options.host, tls=tls, what="runner")
            if warning:
                _say(warning)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(
                    lambda task_status: hypercorn.trio.serve(
                        app, hc, shutdown_trigger=stop.wait, task_status=task_status
                    )
                )
                _say(f"fifoflow runner {runner.version} listening on {' '.join(urls)}")
                _say(f"UI: {ui_url(urls[0])}")
                # Where it listens, for local tools (fifoflow runner health) when the
                # port was picked by the system.
                atomic_write(options.state_dir / "url", urls[0].encode() + b"\n", mode=0o600)
                _say(f"state dir: {options.state_dir}")
                if options.fbp_port is not None:
                    fbp_urls = await nursery.start(_serve_fbp, runner, options, fbp_secret, stop)
                    _say(f"FBP protocol: {' '.join(fbp_urls)} (subprotocol noflo)")
                async with trio.open_nursery() as link_nursery:
                    link = None
                    if options.dispatcher:
                        link = DispatcherLink(
                            options.dispatcher,
                            runner,
                            options.state_dir,
                            registration_token=options.registration_token,
                            labels=options.labels,
                            cpus=options.cpus,
                            memory=options.memory,
                            name=options.name,
                            ca=options.dispatcher_ca,
                            fingerprint=options.dispatcher_fingerprint,
                            peer_host=options.peer_host,
                            peer_port=options.peer_port,
                            peer_url=options.peer_url,
                        )
                        runner_id = await link_nursery.start(link.run)
                        _say(f"linked to the dispatcher at {options.dispatcher} as {runner_id}")
                        if link.peer_server is not None:
                            _say(f"runner-to-runner relay: {link.peer_url}")
                    task_status.started(urls)
                    async for signum in signals:
                        await _drain_runs(runner, link, options.run_grace, signum)
                        _say(f"{signal.Signals(signum).name}: stopping flows (state is saved)")
                        if link is not None:
                            await link.sign_off()
                        stop.set()
                        break
                    link_nursery.cancel_scope.cancel()
    _say("stopped")
