"""``fifoflow images build``: the runner image (and its base, offline) — images/build.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from fifoflow.api.cli.common import EXIT_FAILED, EXIT_OK, err, out

if TYPE_CHECKING:
    import argparse

__all__ = ["add_images_parser"]


def cmd_build(args: argparse.Namespace) -> int:
    from fifoflow.images.build import (
        DEFAULT_BASE,
        BuildError,
        build_base,
        build_runner,
        build_wheelhouse,
        default_cache_dir,
        image_size,
        packages_for,
        runner_tag,
        with_options,
    )

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    say = out if args.verbose else (lambda line: None if line.startswith("  ") else out(line))
    started = time.monotonic()
    options = tuple(sorted(set(args.with_runtimes or ())))
    runtimes = ",".join(["python", "node", "exec", *options])
    try:
        base = args.base or with_options(DEFAULT_BASE, options)
        if args.base is None:
            packages = packages_for(options)
            build_base(base, cache_dir=cache, rebuild=args.rebuild_base, packages=packages, say=say)
        wheels = build_wheelhouse(cache / "wheelhouse", say=say)
        tag = args.tag or with_options(runner_tag(), options)
        tag = build_runner(tag, base=base, wheel_dir=wheels, runtimes=runtimes, say=say)
        size = image_size(tag)
    except BuildError as exc:
        err(f"fifoflow images build: {exc}")
        return EXIT_FAILED
    out(f"built {tag} ({size / 2**20:.0f} MiB) in {time.monotonic() - started:.0f} s")
    if options:
        # the price of the options: the same image without them, if it was built
        from docker.errors import DockerException

        try:
            plain = image_size(runner_tag())
        except DockerException:
            plain = None
        if plain is not None:
            out(
                f"  without {', '.join(options)}: {runner_tag()} {plain / 2**20:.0f} MiB"
                f" (+{(size - plain) / 2**20:.0f} MiB)"
            )
    return EXIT_OK


def add_images_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    images = sub.add_parser("images", help="build the runner image (no registry needed)")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    build = images_sub.add_parser(
        "build",
        help="build the runner image; the base too, offline, when --base is not given",
        description="Build fifoflow-runner:<version>. Without --base, the base image is "
        "made from Debian's packages with debootstrap and docker import (cached); with "
        "--base, any image with python3 >= 3.11, its venv module and node is used.",
    )
    build.add_argument("--tag", help="the runner image's tag (default: fifoflow-runner:<version>)")
    build.add_argument("--base", help="an existing base image to build on (online path)")
    build.add_argument(
        "--rebuild-base", action="store_true", help="debootstrap the base again, ignoring caches"
    )
    build.add_argument(
        "--with",
        dest="with_runtimes",
        action="append",
        choices=["go"],
        help="add an optional runtime's tools (go: Debian's golang-go; tag suffix -go)",
    )
    build.add_argument("--cache-dir", help="root filesystem and wheelhouse cache")
    build.add_argument("--verbose", "-v", action="store_true", help="show the tools' output")
    build.set_defaults(func=cmd_build)
