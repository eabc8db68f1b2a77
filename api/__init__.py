"""fifoflow.api."""
