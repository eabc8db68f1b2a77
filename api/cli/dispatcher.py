"""CLI of the dispatcher: ``fifoflow dispatcher serve|token|runners|events|flows|deploy|drain``."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import trio

from fifoflow.api.common.auth import TokenError, read_token
from fifoflow.api.dispatcher.server import (
    DEFAULT_DISPATCHER_PORT,
    DispatcherServeOptions,
    default_dispatcher_state_dir,
    serve_dispatcher,
)
from fifoflow.dispatcher.docker_backend import PULL_POLICIES
from fifoflow.flows.resources import human_size, parse_size

if TYPE_CHECKING:
    import argparse

__all__ = ["add_dispatcher_commands"]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = DispatcherServeOptions(
        state_dir=Path(args.state_dir) if args.state_dir else default_dispatcher_state_dir(),
        host=args.host,
        port=args.port,
        heartbeat=args.heartbeat,
        ttl=args.ttl,
        local_runners=args.local_runners,
        docker_image=args.docker,
        docker_runners=args.docker_runners,
        pull=args.pull,
        docker_cpus=args.docker_cpus,
        docker_memory=args.docker_memory,
        docker_network=args.docker_network,
        public_url=args.public_url,
        swarm=args.swarm,
    )
    try:
        trio.run(serve_dispatcher, options)
    except TokenError as exc:
        _err(f"fifoflow: {exc}")
        return 2
    except OSError as exc:
        _err(f"fifoflow: cannot serve on {args.host}:{args.port}: {exc}")
        return 2
    return 0


def _request(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    token_file = (
        Path(args.token_file) if args.token_file else default_dispatcher_state_dir() / "token"
    )
    token = read_token(token_file, server="dispatcher")
    try:
        response = httpx.request(
            method,
            args.url.rstrip("/") + path,
            headers={"Authorization": f"Bearer {token}"},
            **{"timeout": 30, **kw},
        )
    except httpx.TransportError as exc:
        raise SystemExit(f"fifoflow: cannot reach the dispatcher at {args.url}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise SystemExit(f"fifoflow: {message} (HTTP {response.status_code})")
    return orjson.loads(response.content)


def cmd_client(args: argparse.Namespace) -> int:
    try:
        if args.action == "token":
            body = {"ttl": args.ttl} if args.ttl else None
            answer = _request(args, "POST", "/tokens", json=body)
            if args.quiet:
                _out(answer["token"])
            else:
                expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(answer["expires"]))
                _out(answer["token"])
                _err(
                    f"(works once, until {expires}; give it to: fifoflow runner serve --dispatcher URL --registration-token TOKEN)"
                )
        elif args.action == "runners":
            runners = _request(args, "GET", "/runners")
            if args.json:
                _out(orjson.dumps(runners, option=orjson.OPT_INDENT_2).decode())
                return 0
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
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                _out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        elif args.action == "flows":
            flows = _request(args, "GET", "/flows")
            if args.json:
                _out(orjson.dumps(flows, option=orjson.OPT_INDENT_2).decode())
                return 0
            rows = [("FLOW", "STATUS", "RUNNER", "MODULES", "REASON")]
            rows += [
                (
                    f["id"],
                    f["status"],
                    f["runner"] or "-",
                    ",".join(f["modules"]),
                    f["reason"] or "",
                )
                for f in flows
            ]
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                _out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        elif args.action == "deploy":
            from fifoflow.flows import FlowError, dump_flow, load_flow
            from fifoflow.runtimes.registry import discover

            try:
                flow = load_flow(Path(args.flow), runtimes=discover(attached=True).keys())
            except FlowError as exc:
                _err(
                    f"{args.flow}: invalid flow\n"
                    + "\n".join(f"  {line}" for line in str(exc).splitlines())
                )
                return 2
            answer = _request(
                args, "POST", "/flows", json=orjson.loads(dump_flow(flow, inline=True))
            )
            if answer["status"] == "placed":
                where = answer["runner"] or ", ".join(
                    f"{m} on {r}" for m, r in sorted(answer["placement"].items())
                )
                _out(f"flow {answer['id']!r} placed: {where}")
            else:
                _out(
                    f"flow {answer['id']!r} is pending: {answer['reason']} (placed when a runner can take it)"
                )
        elif args.action == "client-token":
            _out(_request(args, "GET", "/client-token")["token"])
        elif args.action == "containers":
            info = _request(args, "GET", "/backend")
            if args.json or info.get("backend") is None:
                _out(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
                return 0
            _out(f"image {info['image']} (pull: {info['pull']}, keeps {info['runners']})")
            if info.get("problem"):
                _out(f"problem: {info['problem']}")
            rows = [
                ("CONTAINER", "ID", "STATUS", "IMAGE", "CPUS", "MEMORY", "RUNNER", "RUNNER STATUS")
            ]
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
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                _out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        elif args.action == "update-image":
            body = {"image": args.image, **({"pull": args.pull} if args.pull else {})}
            _err(f"updating to {args.image} (follow with: fifoflow dispatcher events)")
            done = _request(args, "POST", "/backend/image", json=body, timeout=None)
            _out(
                f"runners now on {done['image']}: moved {len(done['moved'])} flow(s) in"
                f" {done['seconds']:.1f} s"
            )
        elif args.action == "drain":
            moved = _request(args, "POST", f"/runners/{args.runner}/drain")["moved"]
            _out(
                f"drained {args.runner}: moved {len(moved)} flow(s)"
                + (": " + ", ".join(moved) if moved else "")
            )
        else:  # events
            for event in _request(args, "GET", "/events", params={"since": args.since}):
                stamp = time.strftime("%H:%M:%S", time.localtime(event.pop("time")))
                kind, runner, eid = event.pop("kind"), event.pop("runner"), event.pop("id")
                extra = orjson.dumps(event).decode() if event else ""
                _out(f"{eid:>5} {stamp} {kind:<11} {runner or '-':<15} {extra}")
    except TokenError as exc:
        _err(f"fifoflow: {exc}")
        return 2
    return 0


def add_dispatcher_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    serve.set_defaults(func=cmd_serve)
    for action, help_text in (
        ("token", "a one-time registration token for a new runner"),
        ("runners", "every runner, its status and hardware"),
        ("events", "what happened, oldest first"),
        ("flows", "deployed flows and where they run"),
        ("deploy", "deploy a flow file: the dispatcher places it on a runner"),
        ("drain", "move every flow off a runner (state and queued messages too)"),
        ("containers", "the container backend's image and containers"),
        ("client-token", "the token web pages connect their client runner with"),
        ("update-image", "move every runner container to a new image, flows and all"),
    ):
        p = d_sub.add_parser(action, help=help_text)
        p.add_argument(
            "--url",
            default=os.environ.get(
                "FIFOFLOW_DISPATCHER_URL", f"http://127.0.0.1:{DEFAULT_DISPATCHER_PORT}"
            ),
        )
        p.add_argument("--token-file", default=os.environ.get("FIFOFLOW_DISPATCHER_TOKEN_FILE"))
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
