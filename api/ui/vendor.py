"""Re-fetch the page's vendored JavaScript: pinned versions, by `npm pack`, into static/vendor/.

The files under ``api/ui/static/vendor/`` are committed: nothing fetches them at test, build
or run time, and the page loads them only from the server it came from. Run this by hand
to move to another version (edit ``PINS``), then review the diff and commit::

    python -m fifoflow.api.ui.vendor            # or: python api/ui/vendor.py

Each pin names the npm package and version, the files to copy out of the packed tarball
(``package/<path>`` -> ``<dest>/<name>``) and the package's licence file, which must be in
the tarball: a package that ships no licence file is refused, not vendored.

Resources: one temporary directory (``npm pack`` writes the tarball there), removed on exit.
Errors: ``SystemExit`` with a message when npm is missing, ``npm pack`` fails, or a listed
file or the licence is not in the tarball.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import attrs

VENDOR = Path(__file__).resolve().parent / "static" / "vendor"


@attrs.frozen
class Pin:
    package: str
    version: str
    dest: str
    files: tuple[str, ...]
    licence: str
    spdx: str
    why: str


PINS = (
    Pin(
        package="elkjs",
        version="0.12.1",
        dest="elk",
        files=("lib/elk.bundled.js",),
        licence="LICENSE.md",
        spdx="EPL-2.0 OR GPL-3.0-or-later",
        why=(
            "Eclipse Layout Kernel compiled to JavaScript: layered (Sugiyama) layout with "
            "ports, which is what a flow graph of named ports needs. Used by "
            "api/ui/static/graph.mjs (the page and `fifoflow graph`)."
        ),
    ),
)


def fetch(pin: Pin, vendor: Path = VENDOR) -> Path:
    """Pack ``pin`` with npm into a temp dir and copy its files and licence to ``vendor/dest``."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("vendor: npm not found (Debian: apt-get install npm)")
    dest = vendor / pin.dest
    with tempfile.TemporaryDirectory(prefix="fifoflow-vendor-") as tmp:
        spec = f"{pin.package}@{pin.version}"
        done = subprocess.run(
            [npm, "pack", spec, "--silent", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"vendor: npm pack {spec} failed:\n{done.stderr.strip()}")
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as tar:
            names = set(tar.getnames())
            missing = [f for f in (*pin.files, pin.licence) if f"package/{f}" not in names]
            if missing:
                raise SystemExit(f"vendor: {spec} has no {', '.join(missing)}")
            dest.mkdir(parents=True, exist_ok=True)
            for inner, out in [(f, Path(f).name) for f in pin.files] + [(pin.licence, "LICENSE")]:
                src = tar.extractfile(f"package/{inner}")
                assert src is not None, inner
                (dest / out).write_bytes(src.read())
    (dest / "README.md").write_text(_readme(pin), encoding="utf-8")
    return dest


def _readme(pin: Pin) -> str:
    files = "\n".join(f"- `{Path(f).name}` (from the package's `{f}`)" for f in pin.files)
    return (
        f"# {pin.package} {pin.version}\n\n"
        f"{pin.why}\n\n"
        f"{files}\n"
        f"- `LICENSE` (the package's `{pin.licence}`; licence: {pin.spdx}, "
        "shipped here under the EPL-2.0)\n\n"
        f"Fetched on {datetime.date.today().isoformat()} by `python api/ui/vendor.py`, "
        f"which runs `npm pack {pin.package}@{pin.version}` into a temporary directory and "
        "copies these files out of the tarball unchanged. Nothing fetches them at test, "
        "build or run time: they are committed. To move to another version, change the pin "
        "in api/ui/vendor.py, run it, review the diff and commit.\n"
    )


def main() -> None:
    for pin in PINS:
        print(f"{pin.package}@{pin.version} -> {fetch(pin)}", file=sys.stderr)


if __name__ == "__main__":
    main()
