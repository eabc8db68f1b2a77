"""Module environments on a runner: ``fifoflow env list|install|remove|rebuild|gc``.
Options, client and exit status: :mod:`.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fifoflow.api.cli.common import (
    EXIT_OK,
    add_client_options,
    out,
    print_json,
    run_client,
    runner_client,
)

if TYPE_CHECKING:
    import argparse

__all__ = ["add_env_parser"]


def cmd_env(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with runner_client(args) as client:
            if args.action == "list":
                envs = await client.list_environments(args.runtime)
                if args.json:
                    print_json(envs)
                    return EXIT_OK
                if not envs:
                    out("(no environments)")
                for env in envs:
                    used = ", ".join(env["usedBy"]) or "no flow"
                    out(f"{env['id']}  ({env['runtime']}; used by {used})")
                    out(f"  requires: {' '.join(env['requirements'])}")
                    out(f"  installed: {' '.join(env['packages']) or '-'}")
            elif args.action in ("install", "remove"):
                kwargs = {args.action: args.packages}
                env = await client.change_environment(args.env, **kwargs)
                out(f"{args.env}: {' '.join(env['packages']) or '-'}")
            elif args.action == "rebuild":
                env = await client.rebuild_environment(args.env)
                out(f"rebuilt {args.env}: {' '.join(env['packages']) or '-'}")
            else:
                removed = await client.gc_environments(args.max_idle)
                out(
                    f"removed {len(removed)} environment(s)"
                    + (": " + ", ".join(removed) if removed else "")
                )
        return EXIT_OK

    return run_client(main)


def add_env_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = sub.add_parser("env", help="list, change, rebuild and clean up module environments")
    env_sub = env.add_subparsers(dest="action", required=True)
    p = env_sub.add_parser("list", help="environments, their requirements and installed packages")
    p.add_argument("--runtime", help="only this runtime's environments")
    p.add_argument("--json", action="store_true")
    add_client_options(p)
    for action, help_text in (
        ("install", "install packages into an environment"),
        ("remove", "remove packages from an environment"),
    ):
        p = env_sub.add_parser(action, help=help_text)
        p.add_argument("env", metavar="ENV_ID")
        p.add_argument("packages", nargs="+", metavar="SPEC")
        add_client_options(p)
    p = env_sub.add_parser("rebuild", help="build an environment again from its requirements")
    p.add_argument("env", metavar="ENV_ID")
    add_client_options(p)
    p = env_sub.add_parser("gc", help="remove environments no flow has used for a while")
    p.add_argument(
        "--max-idle", type=int, metavar="SECONDS", help="default: the runner's setting (7 days)"
    )
    add_client_options(p)
    env.set_defaults(func=cmd_env)
