"""``python -m fifoflow.api`` is the ``fifoflow`` command."""

from .cli import main

main()
