"""fifoflow.runtimes."""
