"""``fifoflow dispatcher serve``: a dispatcher, its API and its backends in one process.

Resource handling: :func:`serve_dispatcher` owns the dispatcher, hypercorn, the client
runners of web pages and the backends (local runner processes, Docker or Swarm
containers), in one nursery. SIGINT or SIGTERM stops the local runners first (they sign
off while the dispatcher still listens), then the pages' runners, then the server.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import attrs
import hypercorn.config
import hypercorn.trio
import trio
import trio.lowlevel

from fifoflow.api.common.auth import load_or_create_token
from fifoflow.api.common.places import DEFAULT_DISPATCHER_PORT
from fifoflow.api.common.serving import configure_tls, exposure_warning
from fifoflow.api.common.ui import ui_url
from fifoflow.api.dispatcher.app import create_dispatcher_app
from fifoflow.api.runner.server import load_secret
from fifoflow.dispatcher.backends import LocalBackend
from fifoflow.dispatcher.clients import (
    DEFAULT_GRACE,
    DEFAULT_MAX_PAGES,
    DEFAULT_PRUNE_AFTER,
    ClientRunners,
)
from fifoflow.dispatcher.docker_backend import DockerBackend, DockerOptions
from fifoflow.dispatcher.service import DEFAULT_CALL_TIMEOUT, Dispatcher, DispatcherConfig
from fifoflow.dispatcher.swarm_backend import SwarmBackend

__all__ = ["DispatcherServeOptions", "serve_dispatcher"]


@attrs.frozen
class DispatcherServeOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_DISPATCHER_PORT
    heartbeat: float = 5.0
    ttl: float | None = None
    #: seconds a runner has to answer the dispatcher's calls (DispatcherConfig.call_timeout)
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    #: runner processes the dispatcher starts on this machine (the local backend)
    local_runners: int = 0
    #: the Docker backend: runner containers from this image (None: no Docker backend)
    docker_image: str | None = None
    docker_runners: int = 1
    pull: str = "if-not-present"
    docker_cpus: float = 1.0
    docker_memory: int = 1024**3
    docker_network: str = "host"
    #: run the runner containers as Docker Swarm services (one per runner)
    swarm: bool = False
    #: the dispatcher's URL as containers reach it (default: the one it listens on)
    public_url: str | None = None
    #: web pages (client runners): seconds a page may stay away before its runner signs
    #: off, pages served at once, seconds a gone page is kept before it is pruned
    page_grace: float = DEFAULT_GRACE
    max_pages: int = DEFAULT_MAX_PAGES
    page_prune_after: float = DEFAULT_PRUNE_AFTER
    #: serve HTTPS/WSS with this certificate and key (None: plain HTTP)
    certfile: Path | None = None
    keyfile: Path | None = None
    #: also speak the FBP network protocol on this port (0: any free one; None: not)
    fbp_port: int | None = None
    #: the FBP clients' secret from this file (None: the dispatcher's token)
    fbp_secret_file: Path | None = None


#: the largest FBP protocol message taken (a graph edit, a component's code)
FBP_MAX_MESSAGE = 16 * 1024 * 1024


async def _serve_fbp(
    dispatcher: Dispatcher,
    options: DispatcherServeOptions,
    secret: str,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The FBP protocol endpoint (``api/fbp``) for the flows this dispatcher deploys."""
    from fifoflow.api.fbp import FbpRuntime, serve_fbp
    from fifoflow.api.fbp.backends import DispatcherBackend
    from fifoflow.flows.library import ComponentLibrary

    fbp = FbpRuntime(
        DispatcherBackend(dispatcher),
        secret,
        ComponentLibrary(options.state_dir / "components"),
        label=f"fifoflow dispatcher {dispatcher.version}",
        graph_dir=options.state_dir / "fbp-graphs",
    )
    for problem in fbp.restore():
        _say(f"warning: {problem}")
    await serve_fbp(
        fbp,
        f"{options.host}:{options.fbp_port}",
        shutdown=stop,
        max_message=FBP_MAX_MESSAGE,
        certfile=str(options.certfile) if options.certfile else None,
        keyfile=str(options.keyfile) if options.keyfile else None,
        task_status=task_status,
    )


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def serve_dispatcher(
    options: DispatcherServeOptions,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    token_path = options.state_dir / "token"
    token, created = load_or_create_token(token_path)
    _say(f"token: {token_path}" + (" (created)" if created else ""))
    fbp_secret = token
    if options.fbp_secret_file is not None:
        fbp_secret = load_secret(options.fbp_secret_file)
    config = DispatcherConfig(
        state_dir=options.state_dir,
        heartbeat=options.heartbeat,
        ttl=options.ttl,
        call_timeout=options.call_timeout,
    )
    # Opened here, not in the nursery: a state dir it cannot use (StoreVersionError) is
    # one plain error for the command to report.
    opened = Dispatcher(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            dispatcher: Dispatcher = await nursery.start(opened.run)
            client_token, _ = load_or_create_token(options.state_dir / "client-token")
            app = create_dispatcher_app(dispatcher, token, client_token)
            hc = hypercorn.config.Config()
            hc.bind = [f"{options.host}:{options.port}"]
            hc.graceful_timeout = 1.0
            hc.accesslog = None
            hc.errorlog = None
            tls = options.certfile is not None and options.keyfile is not None
            fingerprint = None
            if tls:
                fingerprint = configure_tls(hc, options.certfile, options.keyfile)
                _say(f"TLS certificate sha256: {fingerprint}")
            warning = exposure_warning(options.host, tls=tls, what="dispatcher")
            if warning:
                _say(warning)
            stop = trio.Event()
            urls = await nursery.start(
                lambda task_status: hypercorn.trio.serve(
                    app, hc, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            _say(f"fifoflow dispatcher {dispatcher.version} listening on {' '.join(urls)}")
            _say(f"UI: {ui_url(urls[0])}")
            _say(f"state dir: {options.state_dir}")
            if options.fbp_port is not None:
                fbp_urls = await nursery.start(_serve_fbp, dispatcher, options, fbp_secret, stop)
                _say(f"FBP protocol: {' '.join(fbp_urls)} (subprotocol noflo)")
            dispatcher.clients = await nursery.start(
                ClientRunners(
                    dispatcher,
                    urls[0],
                    options.state_dir,
                    grace=options.page_grace,
                    max_pages=options.max_pages,
                    prune_after=options.page_prune_after,
                    fingerprint=fingerprint,
                ).run
            )
            _say(
                f"client runners: {urls[0]}/client/ (client token: {options.state_dir / 'client-token'})"
            )
            backend = None
            if options.local_runners:
                root = options.state_dir / "local-runners"
                backend = await nursery.start(
                    LocalBackend(
                        root,
                        urls[0],
                        dispatcher=dispatcher,
                        say=_say,
                        dispatcher_fingerprint=fingerprint,
                    ).run
                )
                for i in range(options.local_runners):
                    name = f"local-{i + 1}"
                    token = None if backend.registered(name) else dispatcher.issue_token()["token"]
                    await backend.start_runner(name, token)
                _say(f"started {options.local_runners} local runner(s) in {root}")
            if options.docker_image:
                kind = SwarmBackend if options.swarm else DockerBackend
                docker_backend = kind(
                    dispatcher,
                    DockerOptions(
                        image=options.docker_image,
                        dispatcher_url=options.public_url or urls[0],
                        dispatcher_fingerprint=fingerprint,
                        pull=options.pull,
                        runners=options.docker_runners,
                        cpus=options.docker_cpus,
                        memory=options.docker_memory,
                        network=options.docker_network,
                        interval=min(1.0, options.heartbeat),
                    ),
                    say=_say,
                )
                dispatcher.backend = docker_backend
                await nursery.start(docker_backend.run)
                _say(
                    f"{docker_backend.name} backend: {options.docker_runners} runner"
                    f" container(s) from {docker_backend.image} (pull: {options.pull})"
                )
            task_status.started(urls)
            async for signum in signals:
                _say(f"{signal.Signals(signum).name}: stopping")
                if backend is not None:
                    await backend.stop_all()  # they sign off while the dispatcher still listens
                await dispatcher.clients.stop_all()
                stop.set()
                break
            with trio.move_on_after(3):
                await trio.lowlevel.checkpoint()  # let hypercorn finish its graceful shutdown
            nursery.cancel_scope.cancel()
    _say("stopped")
