"""A dispatcher: ``fifoflow dispatcher serve`` runs one; ``token``, ``client-token``,
``runners``, ``drain``, ``flows``, ``deploy``, ``events``, ``containers`` and
``update-image`` ask one over its operator API (with :class:`DispatcherClient`).
Those take ``--url`` (``$FIFOFLOW_DISPATCHER_URL``) and ``--token-file``
(``$FIFOFLOW_DISPATCHER_TOKEN_FILE``, default: the default state dir's ``token``).

Exit status: 0 done, 1 the dispatcher refused or cannot be reached (the message says
which), 2 bad usage or input (a token file, a flow file).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import orjson
import trio

from fifoflow.api.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_log_format_option,
    add_tls_options,
    err,
    flow_problems,
    out,
    print_json,
    print_table,
    serve_logging,
    tls_files,
)
from fifoflow.api.client import ApiError, ConnectError, DispatcherClient
from fifoflow.api.common.auth import TokenError, read_token
from fifoflow.api.common.places import DEFAULT_DISPATCHER_PORT, default_dispatcher_state_dir
from fifoflow.api.common.serving import TlsConfigError
from fifoflow.dispatcher.clients import DEFAULT_GRACE, DEFAULT_MAX_PAGES, DEFAULT_PRUNE_AFTER
from fifoflow.dispatcher.docker_backend import PULL_POLICIES
from fifoflow.dispatcher.errors import StoreVersionError
from fifoflow.dispatcher.service import DEFAULT_CALL_TIMEOUT
from fifoflow.flows import FlowError, bundle_files, dump_flow, load_flow
from fifoflow.flows.resources import human_size, parse_size
from fifoflow.runner.tls import TlsSettingsError
from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["add_dispatcher_parser"]

T = TypeVar("T")


def cmd_serve(args: argparse.Namespace) -> int:
    from fifoflow.api.dispatcher.server import DispatcherServeOptions, serve_dispatcher

    serve_logging(args.log_format)
    tls = tls_files(args)
    if tls is None:
        return EXIT_USAGE
    options = DispatcherServeOptions(
        state_dir=Path(args.state_dir) if args.state_dir else default_dispatcher_state_dir(),
        host=args.host,
        port=args.port,
        heartbeat=args.heartbeat,
        ttl=args.ttl,
        call_timeout=args.call_timeout,
        local_runners=args.local_runners,
        docker_image=args.docker,
        docker_runners=args.docker_runners,
        pull=args.pull,
        docker_cpus=args.docker_cpus,
        docker_memory=args.docker_memory,
        docker_network=args.docker_network,
        public_url=args.public_url,
        swarm=args.swarm,
        page_grace=args.page_grace,
        max_pages=args.max_pages,
        page_prune_after=args.page_prune_after,
        certfile=tls[0],
        keyfile=tls[1],
        fbp_port=args.fbp_port,
        fbp_secret_file=Path(args.fbp_secret_file) if args.fbp_secret_file else None,
    )
    try:
        trio.run(serve_dispatcher, options)
    except (TokenError, StoreVersionError, TlsConfigError) as exc:
        err(f"fifoflow: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        err(f"fifoflow: cannot serve on {args.host}:{args.port}: {exc}")
        return EXIT_USAGE
    return EXIT_OK


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"write a positive number of seconds, got {text!r}")
    return seconds


def _positive_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"write a whole number above 0, got {text!r}")
    return count


def _ask(args: argparse.Namespace, call: Callable[[DispatcherClient], T]) -> T:
    """One call to the dispatcher that ``--url`` and ``--token-file`` name."""
    token_file = (
        Path(args.token_file) if args.token_file else default_dispatcher_state_dir() / "token"
    )
    token = read_token(token_file, server="dispatcher")
    ca = Path(args.ca) if args.ca else None
    with DispatcherClient(args.url, token, ca=ca) as client:
        return call(client)


def _token(args: argparse.Namespace) -> int:
    answer = _ask(args, lambda client: client.create_token(args.ttl))
    out(answer["token"])
    if not args.quiet:
        expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(answer["expires"]))
        err(
            f"(works once, until {expires}; give it to: FIFOFLOW_REGISTRATION_TOKEN=TOKEN fifoflow runner serve"
            " --dispatcher URL, or --registration-token-file PATH)"
        )
    return EXIT_OK


def _client_token(args: argparse.Namespace) -> int:
    out(_ask(args, DispatcherClient.client_token))
    return EXIT_OK


def _runners(args: argparse.Namespace) -> int:
    runners = _ask(args, DispatcherClient.list_runners)
    if args.json:
        print_json(runners)
        return EXIT_OK
    rows = [("RUNNER", "NAME", "STATUS", "SEEN", "CPUS", "MEMORY", "RUNTIMES", "LABELS")]
    now = time.time()
    for r in runners:
        hw = r["hardware"]
        offered = hw.get("capacity") or {}
        seen = f"{now - r['lastSeen']:.0f}s ago" if r["lastSeen"] else "-"
        rows.append(
            (
                r["id"],
                r["name"],
                r["status"],
                seen,
                f"{offered['cpus']:g}" if "cpus" in offered else str(hw.get("cpus", "-")),
                human_size(offered["memory"])
                if "memory" in offered
                else f"{hw.get('memoryGiB', '-')}GiB",
                ",".join(hw.get("runtimes", [])),
                ",".join(f"{k}={v}" for k, v in sorted((hw.get("labels") or {}).items())),
            )
        )
    print_table(rows)
    return EXIT_OK


def _drain(args: argparse.Namespace) -> int:
    moved = _ask(args, lambda client: client.drain_runner(args.runner))
    listed = ": " + ", ".join(moved) if moved else ""
    out(f"drained {args.runner}: moved {len(moved)} flow(s){listed}")
    return EXIT_OK


def _flows(args: argparse.Namespace) -> int:
    flows = _ask(args, DispatcherClient.list_flows)
    if args.json:
        print_json(flows)
        return EXIT_OK
    rows = [("FLOW", "STATUS", "RUNNER", "MODULES", "REASON")]
    rows += [
        (f["id"], f["status"], f["runner"] or "-", ",".join(f["modules"]), f["reason"] or "")
        for f in flows
    ]
    print_table(rows)
    return EXIT_OK


def _deploy(args: argparse.Namespace) -> int:
    try:
        flow = bundle_files(load_flow(Path(args.flow), runtimes=discover(attached=True).keys()))
    except FlowError as exc:
        err(flow_problems(args.flow, exc))
        return EXIT_USAGE
    document = orjson.loads(dump_flow(flow, inline=True))
    answer = _ask(args, lambda client: client.deploy_flow(document))
    if answer["status"] == "placed":
        where = answer["runner"] or ", ".join(
            f"{m} on {r}" for m, r in sorted(answer["placement"].items())
        )
        out(f"flow {answer['id']!r} placed: {where}")
    else:
        out(
            f"flow {answer['id']!r} is pending: {answer['reason']} (placed when a runner can take it)"
        )
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    events = _ask(args, lambda client: client.list_events(args.since))
    for event in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.pop("time")))
        kind, runner, eid = event.pop("kind"), event.pop("runner"), event.pop("id")
        extra = orjson.dumps(event).decode() if event else ""
        out(f"{eid:>5} {stamp} {kind:<11} {runner or '-':<15} {extra}")
    return EXIT_OK


def _containers(args: argparse.Namespace) -> int:
    info = _ask(args, DispatcherClient.backend)
    if args.json or info.get("backend") is None:
        print_json(info)
        return EXIT_OK
    out(f"image {info['image']} (pull: {info['pull']}, keeps {info['runners']})")
    if info.get("problem"):
        out(f"problem: {info['problem']}")
    rows = [("CONTAINER", "ID", "STATUS", "IMAGE", "CPUS", "MEMORY", "RUNNER", "RUNNER STATUS")]
    rows += [
        (
            c["name"],
            c["container"],
            c["status"],
            c["image"],
            f"{c['cpus']:g}",
            human_size(c["memory"]),
            c["runner"] or "-",
            c["runnerStatus"] or "-",
        )
        for c in info["containers"]
    ]
    print_table(rows)
    return EXIT_OK


def _update_image(args: argparse.Namespace) -> int:
    err(f"updating to {args.image} (follow with: fifoflow dispatcher events)")
    done = _ask(args, lambda client: client.update_image(args.image, args.pull))
    out(
        f"runners now on {done['image']}: moved {len(done['moved'])} flow(s) in"
        f" {done['seconds']:.1f} s"
    )
    return EXIT_OK


#: the client commands: name, help, what runs it
ACTIONS: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
    ("token", "a one-time registration token for a new runner", _token),
    ("runners", "every runner, its status and hardware", _runners),
    ("events", "what happened, oldest first", _events),
    ("flows", "deployed flows and where they run", _flows),
    ("deploy", "deploy a flow file: the dispatcher places it on a runner", _deploy),
    ("drain", "move every flow off a runner (state and queued messages too)", _drain),
    ("containers", "the container backend's image and containers", _containers),
    ("client-token", "the token web pages connect their client runner with", _client_token),
    ("update-image", "move every runner container to a new image, flows and all", _update_image),
]


def cmd_client(args: argparse.Namespace) -> int:
    """Run one client command: the dispatcher's refusals and an unreachable dispatcher
    exit 1, a token file that cannot be used exits 2."""
    action = next(run for name, _, run in ACTIONS if name == args.action)
    try:
        return action(args)
    except ApiError as exc:
        err(f"fifoflow: {exc.message} (HTTP {exc.status})")
        return EXIT_FAILED
    except ConnectError as exc:
        err(f"fifoflow: {exc}")
        return EXIT_FAILED
    except (TokenError, TlsSettingsError) as exc:
        err(f"fifoflow: {exc}")
        return EXIT_USAGE


def add_dispatcher_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dispatcher", help="serve or ask a dispatcher (runners, tokens, events)")
    d_sub = d.add_subparsers(dest="action", required=True)
    serve = d_sub.add_parser("serve", help="run a dispatcher until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_DISPATCHER_PORT,
        help="0 picks a free port (default: %(default)s)",
    )
    serve.add_argument(
        "--state-dir",
        help=f"SQLite state and the operator token (default: {default_dispatcher_state_dir()})",
    )
    serve.add_argument(
        "--heartbeat",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="runners' heartbeat interval (default: 5)",
    )
    serve.add_argument(
        "--ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="lost after this silence (default: 3 heartbeats)",
    )
    serve.add_argument(
        "--call-timeout",
        type=_positive_seconds,
        default=DEFAULT_CALL_TIMEOUT,
        metavar="SECONDS",
        help="a runner that does not answer a call this long is taken as refusing a"
        " deploy, and a forwarded call answers 504 (default: %(default)g)",
    )
    serve.add_argument(
        "--page-grace",
        type=_positive_seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="a web page away this long has its runner signed off (default: %(default)g)",
    )
    serve.add_argument(
        "--max-pages",
        type=_positive_count,
        default=DEFAULT_MAX_PAGES,
        metavar="N",
        help="web pages (client runners) served at once; one more is refused"
        " (default: %(default)s)",
    )
    serve.add_argument(
        "--page-prune-after",
        type=_positive_seconds,
        default=DEFAULT_PRUNE_AFTER,
        metavar="SECONDS",
        help="a page gone this long is forgotten: its runner row, state and page secret"
        " (default: %(default)g)",
    )
    serve.add_argument(
        "--fbp-port",
        type=int,
        metavar="N",
        help="also speak the FBP network protocol (noflo-ui/Flowhub, fbp-test) at"
        " ws://HOST:N/ (subprotocol noflo) for the flows this dispatcher deploys;"
        " 0 picks a free port",
    )
    serve.add_argument(
        "--fbp-secret-file",
        metavar="FILE",
        help="the FBP clients' secret, read from FILE (default: the dispatcher's token)",
    )
    serve.add_argument(
        "--local-runners",
        type=int,
        default=0,
        metavar="N",
        help="start N runner processes on this machine (the local backend)",
    )
    serve.add_argument(
        "--docker",
        metavar="IMAGE",
        help="run runners as containers from IMAGE (the Docker backend)",
    )
    serve.add_argument(
        "--swarm",
        action="store_true",
        help="with --docker: run each runner as a Docker Swarm service (on a manager node)",
    )
    serve.add_argument(
        "--docker-runners", type=int, default=1, metavar="N", help="containers kept running"
    )
    serve.add_argument(
        "--pull",
        choices=PULL_POLICIES,
        default="if-not-present",
        help="when to pull the image (default: %(default)s)",
    )
    serve.add_argument(
        "--docker-cpus", type=float, default=1.0, metavar="N", help="CPUs per container"
    )
    serve.add_argument(
        "--docker-memory",
        type=parse_size,
        default=1024**3,
        metavar="SIZE",
        help="memory per container (default: 1GiB)",
    )
    serve.add_argument(
        "--docker-network",
        default="host",
        help="host (default), or a Docker network the dispatcher is reachable on",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="the dispatcher's URL as runners in containers reach it (default: where it listens)",
    )
    add_tls_options(serve)
    add_log_format_option(serve)
    serve.set_defaults(func=cmd_serve)
    for action, help_text, _ in ACTIONS:
        p = d_sub.add_parser(action, help=help_text)
        p.add_argument(
            "--url",
            default=os.environ.get(
                "FIFOFLOW_DISPATCHER_URL", f"http://127.0.0.1:{DEFAULT_DISPATCHER_PORT}"
            ),
        )
        p.add_argument("--token-file", default=os.environ.get("FIFOFLOW_DISPATCHER_TOKEN_FILE"))
        p.add_argument(
            "--ca",
            metavar="PEM",
            default=os.environ.get("FIFOFLOW_DISPATCHER_CA"),
            help="verify an https:// dispatcher with this CA or self-signed certificate"
            " ($FIFOFLOW_DISPATCHER_CA)",
        )
        if action == "token":
            p.add_argument(
                "--ttl", type=float, help="seconds the token stays valid (default: 1 hour)"
            )
            p.add_argument("--quiet", "-q", action="store_true", help="print only the token")
        if action in ("runners", "flows"):
            p.add_argument("--json", action="store_true")
        if action == "deploy":
            p.add_argument("flow", metavar="FLOW_FILE")
        if action == "drain":
            p.add_argument("runner", metavar="RUNNER_ID")
        if action == "update-image":
            p.add_argument("image", metavar="IMAGE")
            p.add_argument("--pull", choices=PULL_POLICIES, help="pull policy for this image")
        if action == "containers":
            p.add_argument("--json", action="store_true")
        if action == "events":
            p.add_argument("--since", type=int, default=0, help="only events after this id")
        p.set_defaults(func=cmd_client)
