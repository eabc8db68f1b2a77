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
        "fifoflow.api.app",
        "fifoflow.api.client",
        "fifoflow.api.errors",
        "fifoflow.api.methods",
        "fifoflow.api.server",
    ],
)
def test_all_names_exist(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


def test_cores_do_not_import_api_or_quart() -> None:
    code = (
        "import sys, fifoflow.flows, fifoflow.runner, fifoflow.runtimes.registry\n"
        "import fifoflow.dispatcher.service, fifoflow.dispatcher.clients\n"
        "print([m for m in sys.modules if m.startswith(('fifoflow.api', 'quart', 'hypercorn', 'httpx'))])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
