"""Every public name a package exports exists, and the core never imports the HTTP layer."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "package",
    [
        "fifoflow.flows",
        "fifoflow.runner",
        "fifoflow.dispatcher.deploy",
        "fifoflow.dispatcher.errors",
        "fifoflow.dispatcher.parts",
        "fifoflow.dispatcher.placement",
        "fifoflow.dispatcher.service",
        "fifoflow.dispatcher.status",
        "fifoflow.dispatcher.store",
        "fifoflow.runtimes.registry",
        "fifoflow.runtimes.conformance",
        "fifoflow.dispatcher.link",
        "fifoflow.api.client",
        "fifoflow.api.common.errors",
        "fifoflow.api.common.http",
        "fifoflow.api.common.openapi",
        "fifoflow.api.common.routes",
        "fifoflow.api.common.schema",
        "fifoflow.api.common.models",
        "fifoflow.api.runner.app",
        "fifoflow.api.runner.methods",
        "fifoflow.api.runner.routes",
        "fifoflow.api.runner.server",
        "fifoflow.api.dispatcher.app",
        "fifoflow.api.dispatcher.pages",
        "fifoflow.api.dispatcher.routes",
        "fifoflow.api.ui.picture",
        "fifoflow.api.dispatcher.server",
        "fifoflow.api.fbp",
        "fifoflow.api.fbp.graph",
        "fifoflow.api.fbp.session",
        "fifoflow.flows.library",
    ],
)
def test_all_names_exist(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


def test_cores_do_not_import_api_or_quart() -> None:
    """flows, runtimes, runner and every module of dispatcher load without the HTTP layer
    (nor msgspec: the cores read constraints by duck typing)."""
    code = (
        "import sys, pkgutil, importlib, fifoflow.flows, fifoflow.runner, "
        "fifoflow.runtimes.registry, fifoflow.dispatcher\n"
        "for m in pkgutil.iter_modules(fifoflow.dispatcher.__path__):\n"
        "    importlib.import_module('fifoflow.dispatcher.' + m.name)\n"
        "for m in pkgutil.iter_modules(fifoflow.runner.__path__):\n"
        "    importlib.import_module('fifoflow.runner.' + m.name)\n"
        "print([m for m in sys.modules if m.startswith(('fifoflow.api', 'quart', 'hypercorn', "
        "'httpx', 'werkzeug', 'msgspec'))])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_command_loads_the_servers_only_to_serve() -> None:
    """``fifoflow --help``, ``fifoflow flow list``...: no quart or hypercorn import (they
    cost half a second on every command)."""
    code = (
        "import sys, importlib\n"
        "importlib.import_module('fifoflow.api.cli.main').build_parser()\n"
        "print([m for m in sys.modules if m.startswith(('quart', 'hypercorn'))])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
