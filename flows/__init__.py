"""fifoflow.flows."""
