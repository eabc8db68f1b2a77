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
    )

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    say = out if args.verbose else (lambda line: None if line.startswith("  ") else out(line))
    started = time.monotonic()
    try:
        base = args.base or DEFAULT_BASE
        if args.base is None:
            build_base(base, cache_dir=cache, rebuild=args.rebuild_base, say=say)
        wheels = build_wheelhouse(cache / "wheelhouse", say=say)
        tag = build_runner(args.tag, base=base, wheel_dir=wheels, say=say)
        size = image_size(tag)
    except BuildError as exc:
        err(f"fifoflow images build: {exc}")
        return EXIT_FAILED
    out(f"built {tag} ({size / 2**20:.0f} MiB) in {time.monotonic() - started:.0f} s")
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
    build.add_argument("--cache-dir", help="root filesystem and wheelhouse cache")
    build.add_argument("--verbose", "-v", action="store_true", help="show the tools' output")
    build.set_defaults(func=cmd_build)
