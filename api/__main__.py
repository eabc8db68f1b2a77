"""``python -m fifoflow.api`` is the ``fifoflow`` command."""

from fifoflow.api.cli import main

main()
