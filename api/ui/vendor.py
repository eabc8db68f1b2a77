"""Re-fetch the page's vendored JavaScript: pinned versions, by npm, into static/vendor/.

The files under ``api/ui/static/vendor/`` are committed: nothing fetches them at test, build
or run time, and the page loads them only from the server it came from. Run this by hand
to move to another version (edit ``PINS``), then review the diff and commit::

    python -m fifoflow.api.ui.vendor            # or: python api/ui/vendor.py

    python -m fifoflow.api.ui.vendor codemirror # only one step (elkjs, codemirror)

Two kinds of step:

- a :class:`Pin` (elkjs) names the npm package and version, the files to copy out of the
  packed tarball (``package/<path>`` -> ``<dest>/<name>``) and the package's licence file,
  which must be in the tarball: a package that ships no licence file is refused;
- :data:`CODEMIRROR` (CodeMirror 6, the module panel's code editor) ships as many small ES
  modules, so it is bundled once, here: ``npm install`` of the pinned packages and esbuild
  into a temporary directory, then esbuild bundles :data:`CODEMIRROR_ENTRY` into one ES
  module, ``vendor/codemirror/codemirror.mjs``, with ``LICENSE`` (the licence texts of
  every package that went into the bundle, all MIT) and ``README.md`` (the versions that
  went in). The page imports that file; nothing is bundled or fetched at run time.

Resources: one temporary directory per step, removed on exit.
Errors: ``SystemExit`` with a message when npm is missing, ``npm pack``/``npm install``/
esbuild fails, a listed file or a licence is not there, or a bundled package is not MIT.
"""

from __future__ import annotations

import datetime
import json
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


#: what the module panel's editor needs; the direct packages are pinned, their own
#: dependencies (@codemirror/view, @lezer/*...) resolve as npm resolves them and the
#: README written next to the bundle lists the versions that went in
CODEMIRROR_PINS = {
    "codemirror": "6.0.2",
    "@codemirror/lang-python": "6.2.1",
    "@codemirror/lang-javascript": "6.2.5",
    "esbuild": "0.28.2",
}

#: the bundle's entry: exactly what api/ui/static/panel.js imports
CODEMIRROR_ENTRY = """\
export { EditorView, basicSetup } from "codemirror";
export { EditorState } from "@codemirror/state";
export { keymap } from "@codemirror/view";
export { indentWithTab } from "@codemirror/commands";
export { python } from "@codemirror/lang-python";
export { javascript, json } from "./json-entry.mjs";
"""
# @codemirror/lang-json is not pinned: JSON config is edited in the javascript mode
_JSON_ENTRY = """\
import { javascript } from "@codemirror/lang-javascript";
export { javascript };
export const json = () => javascript({ jsx: false, typescript: false });
"""


def _run(args: list[str], cwd: str, what: str) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"vendor: {what} failed:\n{(done.stderr or done.stdout).strip()}")
    return done.stdout


def bundle_codemirror(vendor: Path = VENDOR) -> Path:
    """Install the pinned CodeMirror packages and esbuild into a temp dir and bundle
    :data:`CODEMIRROR_ENTRY` into ``vendor/codemirror/codemirror.mjs`` (+ LICENSE, README)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("vendor: npm not found (Debian: apt-get install npm)")
    dest = vendor / "codemirror"
    with tempfile.TemporaryDirectory(prefix="fifoflow-vendor-") as tmp:
        root = Path(tmp)
        (root / "package.json").write_text('{"private": true}\n', encoding="utf-8")
        specs = [f"{name}@{version}" for name, version in CODEMIRROR_PINS.items()]
        _run(
            [npm, "install", "--save-exact", "--no-audit", "--no-fund", *specs], tmp, "npm install"
        )
        (root / "entry.mjs").write_text(CODEMIRROR_ENTRY, encoding="utf-8")
        (root / "json-entry.mjs").write_text(_JSON_ENTRY, encoding="utf-8")
        esbuild = root / "node_modules" / ".bin" / "esbuild"
        out = root / "codemirror.mjs"
        _run(
            [
                str(esbuild),
                "entry.mjs",
                "--bundle",
                "--format=esm",
                "--minify",
                "--legal-comments=none",
                "--target=es2020",
                f"--outfile={out}",
                "--metafile=meta.json",
            ],
            tmp,
            "esbuild",
        )
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        packages = _bundled_packages(root, meta)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "codemirror.mjs").write_bytes(out.read_bytes())
        (dest / "LICENSE").write_text(_licences(root, packages), encoding="utf-8")
        size = out.stat().st_size
    (dest / "README.md").write_text(_codemirror_readme(packages, size), encoding="utf-8")
    return dest


def _bundled_packages(root: Path, meta: dict[str, object]) -> dict[str, str]:
    """``{package: version}`` of every package esbuild took an input from."""
    found: dict[str, str] = {}
    for name in meta["inputs"]:  # type: ignore[union-attr]
        parts = str(name).split("node_modules/")
        if len(parts) < 2:
            continue
        segs = parts[-1].split("/")
        package = "/".join(segs[:2]) if segs[0].startswith("@") else segs[0]
        info = json.loads(
            (root / "node_modules" / package / "package.json").read_text(encoding="utf-8")
        )
        if info.get("license") != "MIT":
            raise SystemExit(f"vendor: {package} is {info.get('license')!r}, not MIT")
        found[package] = info["version"]
    return dict(sorted(found.items()))


def _licences(root: Path, packages: dict[str, str]) -> str:
    parts = []
    for package, version in packages.items():
        folder = root / "node_modules" / package
        files = sorted(folder.glob("LICEN[SC]E*"))
        if not files:
            raise SystemExit(f"vendor: {package}@{version} ships no licence file")
        text = files[0].read_text(encoding="utf-8").strip()
        parts.append(f"== {package} {version} (MIT) ==\n\n{text}\n")
    return "\n".join(parts)


def _codemirror_readme(packages: dict[str, str], size: int) -> str:
    pinned = ", ".join(f"`{n}@{v}`" for n, v in CODEMIRROR_PINS.items())
    listed = "\n".join(f"- {n} {v}" for n, v in packages.items())
    return (
        "# CodeMirror 6, bundled\n\n"
        "The code editor of the module panel (api/ui/static/panel.js): syntax highlighting "
        "for python and javascript, JSON config in the javascript mode.\n\n"
        f"- `codemirror.mjs`: one ES module ({size:,} bytes, minified) exporting EditorView, "
        "basicSetup, EditorState, keymap, indentWithTab, python(), javascript(), json()\n"
        "- `LICENSE`: the licence of every package in the bundle (all MIT)\n\n"
        f"Made on {datetime.date.today().isoformat()} by "
        "`python api/ui/vendor.py codemirror`: `npm install` of "
        f"{pinned} into a temporary directory, then esbuild bundles an entry that "
        "re-exports those names (`--bundle --format=esm --minify --target=es2020`). "
        "Nothing bundles or fetches it at test, build or run time: it is committed. To "
        "move to other versions, change `CODEMIRROR_PINS` in api/ui/vendor.py, run it, "
        "review the diff and commit.\n\n"
        f"Packages in the bundle:\n\n{listed}\n"
    )


def main(argv: list[str] | None = None) -> None:
    steps = set(sys.argv[1:] if argv is None else argv) or {"elkjs", "codemirror"}
    unknown = steps - {"elkjs", "codemirror"}
    if unknown:
        raise SystemExit(f"vendor: unknown step {', '.join(sorted(unknown))} (elkjs, codemirror)")
    for pin in PINS:
        if pin.package in steps:
            print(f"{pin.package}@{pin.version} -> {fetch(pin)}", file=sys.stderr)
    if "codemirror" in steps:
        print(f"codemirror -> {bundle_codemirror()}", file=sys.stderr)


if __name__ == "__main__":
    main()
