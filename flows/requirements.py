"""Requirement specifiers of modules: pip's for python, npm's for node. Checked and
normalized here (so that the same set always names the same environment), installed by
``runner/environments.py``.

- python: PEP 508 (``requests>=2,<3``, ``numpy==1.26.*``, ``pkg[extra]``), via
  ``packaging``; the name is canonicalized (``Foo_Bar`` -> ``foo-bar``).
- node: ``name``, ``name@range``, ``@scope/name@range``, or a local package: an absolute
  path to a folder or a ``.tgz`` (``file:`` prefix allowed), for offline installs.
"""

from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["normalize"]

_NPM_NAME = re.compile(r"(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*\Z")


def normalize(runtime: str, spec: str) -> str:
    """The normalized form of ``spec``; ``ValueError`` saying what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("a requirement must be a non-empty string")
    spec = spec.strip()
    if runtime == "python":
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise ValueError(f"not a pip requirement {spec!r}: {exc}") from None
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out = f"{canonicalize_name(req.name)}{extras}"
        if req.url:
            out += f" @ {req.url}"
        elif req.specifier:
            out += str(req.specifier)
        if req.marker:
            out += f"; {req.marker}"
        return out
    if runtime == "node":
        local = spec.removeprefix("file:")
        if local.startswith("/"):
            return f"file:{local}"
        name, at, version = spec[1:].partition("@") if spec.startswith("@") else spec.partition("@")
        name = "@" + name if spec.startswith("@") else name
        if not _NPM_NAME.match(name):
            raise ValueError(
                f"not an npm package specifier {spec!r} (write name, name@range, @scope/name@range "
                "or an absolute path to a package folder or .tgz)"
            )
        if at and not version.strip():
            raise ValueError(f"not an npm package specifier {spec!r}: nothing after '@'")
        return f"{name}@{version.strip()}" if at else name
    raise ValueError(f"{runtime} modules take no requirements")
