"""fifoflow.dispatcher."""
