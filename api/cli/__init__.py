"""The ``fifoflow`` command: one module per command group (the list is in :mod:`.main`)."""

from fifoflow.api.cli.main import main

__all__ = ["main"]
