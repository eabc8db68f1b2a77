"""The ``fifoflow`` command: one module per command group (see ``api/README.md``)."""

from fifoflow.api.cli.main import main

__all__ = ["main"]
