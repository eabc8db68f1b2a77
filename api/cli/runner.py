"""``fifoflow runner serve`` (run a runner and serve the Runner API until Ctrl-C or
SIGTERM), ``runner health`` (ask one, for container health checks), and the runner's
``install-service`` / ``uninstall-service`` (in :mod:`.service`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson
import trio

from fifoflow.api.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_log_format_option,
    add_tls_options,
    err,
    out,
    run_client,
    serve_logging,
    tls_files,
)
from fifoflow.api.cli.service import add_service_parsers
from fifoflow.api.client import RunnerClient
from fifoflow.api.client.errors import leaves
from fifoflow.api.common.auth import TokenError, read_token
from fifoflow.api.common.places import DEFAULT_PORT, default_state_dir
from fifoflow.api.common.serving import TlsConfigError
from fifoflow.flows.limits import MAX_BODY
from fifoflow.flows.resources import parse_size
from fifoflow.runner import RunnerError
from fifoflow.runner.tls import normalize_fingerprint

__all__ = ["add_runner_parser"]


def _label(text: str) -> str:
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"write labels as KEY=VALUE, got {text!r}")
    return text


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"write CPUs as a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"write a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"write seconds as a number >= 0, got {text!r}")
    return value


def _fingerprint(text: str) -> str:
    try:
        return normalize_fingerprint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _registration_token(args: argparse.Namespace) -> str | None:
    """The one-time registration token: ``--registration-token`` (visible to every
    user in the process list), ``--registration-token-file`` or
    ``$FIFOFLOW_REGISTRATION_TOKEN``. The variable is taken out of this process's
    environment, so the runtimes it starts (user code) never inherit it."""
    from_env = os.environ.pop("FIFOFLOW_REGISTRATION_TOKEN", None)
    if args.registration_token:
        return str(args.registration_token)
    if args.registration_token_file:
        path = Path(args.registration_token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--registration-token-file {path}: cannot read it: {exc}") from None
        if not token:
            raise ValueError(f"--registration-token-file {path}: the file is empty")
        return token
    return from_env or None


def cmd_serve(args: argparse.Namespace) -> int:
    from fifoflow.api.runner.server import ServeOptions, serve  # the server only to serve

    serve_logging(args.log_format)
    tls = tls_files(args)
    if tls is None:
        return EXIT_USAGE
    try:
        registration_token = _registration_token(args)
    except ValueError as exc:
        err(f"fifoflow: {exc}")
        return EXIT_USAGE
    options = ServeOptions(
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        host=args.host,
        port=args.port,
        token_file=Path(args.token_file) if args.token_file else None,
        max_body=args.max_body,
        dispatcher=args.dispatcher,
        registration_token=registration_token,
        labels=dict(label.split("=", 1) for label in args.label),
        cpus=args.cpus,
        memory=args.memory,
        name=args.name,
        certfile=tls[0],
        keyfile=tls[1],
        dispatcher_ca=Path(args.dispatcher_ca) if args.dispatcher_ca else None,
        dispatcher_fingerprint=args.dispatcher_fingerprint,
        max_runs=args.max_runs,
        run_retention=args.run_retention,
        run_grace=args.run_grace,
        fbp_port=args.fbp_port,
        fbp_secret_file=Path(args.fbp_secret_file) if args.fbp_secret_file else None,
        durability=args.durability,
        direct=not args.no_direct,
        journal_fsync=args.journal_fsync,
        journal_max_bytes=args.journal_max_size,
        journal_reserve_bytes=args.journal_reserve,
        peer_host=None if args.no_peer_relay else (args.peer_host or args.host),
        peer_port=args.peer_port,
        peer_url=args.peer_url,
    )
    try:
        trio.run(serve, options)
    except (TokenError, RunnerError, TlsConfigError) as exc:
        err(f"fifoflow: {exc}")
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        refused = [
            e for e in leaves(group) if isinstance(e, (TokenError, RunnerError, TlsConfigError))
        ]
        if not refused:
            raise
        err(f"fifoflow: {refused[0]}")
        return EXIT_USAGE
    except OSError as exc:
        err(f"fifoflow: cannot serve on {args.host}:{args.port}: {exc}")
        return EXIT_USAGE
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the runner answers, 1 otherwise (what container health checks want)."""
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        url = args.url or (state_dir / "url").read_text().strip()
    except OSError:
        err(f"fifoflow: no runner URL in {state_dir / 'url'} (pass --url)")
        return 1

    async def main() -> int:
        ca = Path(args.ca) if args.ca else None
        async with RunnerClient(url, read_token(state_dir / "token"), ca=ca) as client:
            out(orjson.dumps(await client.health()).decode())
        return EXIT_OK

    return 0 if run_client(main) == EXIT_OK else 1


def add_runner_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runner = sub.add_parser("runner", help="serve the Runner API (HTTP + WebSocket)")
    runner_sub = runner.add_subparsers(dest="runner_command", required=True)
    serve_p = runner_sub.add_parser("serve", help="run a runner and serve its API until Ctrl-C")
    serve_p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    serve_p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default: %(default)s)"
    )
    serve_p.add_argument(
        "--state-dir",
        help=f"flows, module state and the token live here (default: $FIFOFLOW_STATE_DIR or {default_state_dir()})",
    )
    serve_p.add_argument(
        "--token-file", help="use this token file instead of <state dir>/token (created if missing)"
    )
    serve_p.add_argument(
        "--max-body",
        type=int,
        default=MAX_BODY,
        metavar="BYTES",
        help="largest request body (default: 16 MiB)",
    )
    serve_p.add_argument(
        "--dispatcher",
        metavar="URL",
        default=os.environ.get("FIFOFLOW_DISPATCHER"),
        help="register with this dispatcher and report to it ($FIFOFLOW_DISPATCHER)",
    )
    serve_p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_label,
        help="a placement label reported to the dispatcher (repeatable)",
    )
    serve_p.add_argument(
        "--name", help="the name the dispatcher shows for this runner (default: the hostname)"
    )
    serve_p.add_argument(
        "--cpus",
        type=_cpus,
        metavar="N",
        help="CPUs this runner offers to a dispatcher's flows (default: the machine's)",
    )
    serve_p.add_argument(
        "--memory",
        type=_size,
        metavar="SIZE",
        help="memory it offers, e.g. 2GiB (default: the machine's)",
    )
    serve_p.add_argument(
        "--max-runs",
        type=_count,
        metavar="N",
        help="runs this runner runs at once (default: its CPUs)",
    )
    serve_p.add_argument(
        "--run-retention",
        type=_seconds,
        metavar="S",
        default=7 * 24 * 3600.0,
        help="keep delivered runs' files this long in the state dir (default: 7 days)",
    )
    serve_p.add_argument(
        "--run-grace",
        type=_seconds,
        metavar="S",
        default=30.0,
        help="on SIGTERM, running runs get this long to finish before they are given"
        " back (default: %(default)s)",
    )
    serve_p.add_argument(
        "--fbp-port",
        type=int,
        metavar="N",
        help="also speak the FBP network protocol (noflo-ui/Flowhub, fbp-test) at"
        " ws://HOST:N/ (subprotocol noflo); 0 picks a free port",
    )
    serve_p.add_argument(
        "--fbp-secret-file",
        metavar="FILE",
        help="the FBP clients' secret, read from FILE (default: the runner's token)",
    )
    serve_p.add_argument(
        "--no-direct",
        action="store_true",
        help="no direct host-to-host channels: every message between two runtime hosts"
        " passes through the runner (runtimes/PROTOCOL.md section 11)",
    )
    serve_p.add_argument(
        "--durability",
        choices=("checkpoint", "journal"),
        default="checkpoint",
        help="flows that do not say: 'checkpoint' (state written about once a second; a"
        " killed runner loses what it had accepted and not finished) or 'journal' (every"
        " accepted message survives a killed runner; slower) (default: %(default)s)",
    )
    serve_p.add_argument(
        "--journal-fsync",
        choices=("always", "never"),
        default="always",
        help="journaled flows: 'always' syncs each group of records to the disk before"
        " answering (survives a power cut); 'never' only hands them to the OS (faster;"
        " survives a killed runner, not a power cut) (default: %(default)s)",
    )
    serve_p.add_argument(
        "--journal-max-size",
        type=_size,
        metavar="SIZE",
        default=1 << 30,
        help="a flow's journal this large refuses messages (507) until the flow catches up"
        " (default: 1GiB)",
    )
    serve_p.add_argument(
        "--journal-reserve",
        type=_size,
        metavar="SIZE",
        default=4 << 20,
        help="journaled flows refuse messages (507) while the disk has less free space"
        " than this (default: 4MiB)",
    )
    add_tls_options(serve_p)
    add_log_format_option(serve_p)
    peer = serve_p.add_argument_group(
        "runner-to-runner relay",
        "wires between this runner's part of a flow and another runner's go straight to"
        " it; the dispatcher relays them when the runners cannot reach each other",
    )
    peer.add_argument(
        "--peer-host",
        metavar="HOST",
        help="address the peer listener binds (default: --host)",
    )
    peer.add_argument(
        "--peer-port", type=int, default=0, help="its port (default: 0, any free port)"
    )
    peer.add_argument(
        "--peer-url",
        metavar="URL",
        help="where other runners reach it (default: ws://HOST:PORT/peer; for a wildcard"
        " HOST this machine's address)",
    )
    peer.add_argument(
        "--no-peer-relay",
        action="store_true",
        help="no listener: every wire to another runner goes through the dispatcher",
    )
    trust = serve_p.add_mutually_exclusive_group()
    trust.add_argument(
        "--dispatcher-ca",
        metavar="PEM",
        default=os.environ.get("FIFOFLOW_DISPATCHER_CA"),
        help="verify an https:// dispatcher with this CA (or its self-signed certificate)"
        " ($FIFOFLOW_DISPATCHER_CA)",
    )
    trust.add_argument(
        "--dispatcher-fingerprint",
        metavar="SHA256",
        type=_fingerprint,
        default=os.environ.get("FIFOFLOW_DISPATCHER_FINGERPRINT"),
        help="trust the https:// dispatcher whose certificate has this SHA-256 (it prints it"
        " at start: TLS certificate sha256: AB:CD:...) ($FIFOFLOW_DISPATCHER_FINGERPRINT)",
    )
    registration = serve_p.add_mutually_exclusive_group()
    registration.add_argument(
        "--registration-token",
        metavar="TOKEN",
        help="one-time token for the first registration (other users can read it in the"
        " process list: prefer --registration-token-file or $FIFOFLOW_REGISTRATION_TOKEN)",
    )
    registration.add_argument(
        "--registration-token-file",
        metavar="PATH",
        help="read the one-time registration token from this file",
    )
    serve_p.set_defaults(func=cmd_serve)
    health_p = runner_sub.add_parser(
        "health",
        help="exit 0 when the runner answers (for container health checks)",
        description="Ask a runner for its health: exit 0 and print it when it answers, "
        "1 otherwise. Without --url, the URL the runner of the state dir wrote at start.",
    )
    health_p.add_argument("--url", help="the runner's URL (default: <state dir>/url)")
    health_p.add_argument("--state-dir", help="the runner's state dir (token and url)")
    health_p.add_argument(
        "--ca",
        metavar="PEM",
        default=os.environ.get("FIFOFLOW_CA"),
        help="verify an https:// runner with this CA or self-signed certificate ($FIFOFLOW_CA)",
    )
    health_p.set_defaults(func=cmd_health)
    add_service_parsers(runner_sub)
