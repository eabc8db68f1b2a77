"""fifoflow.runner."""
