"""Every size limit of fifoflow, in one place.

What a door accepts (an HTTP body, a JSON-RPC call, the runner link, a page's socket, a
runtime's pipe) must be something every later stage can encode, store and show, so the
limits are the same at every door and in ``fifoflow validate``: a flow the validator
passes is one the runner takes. Each limit is named in the error that enforces it.
"""

from __future__ import annotations

__all__ = [
    "MAX_BODY",
    "MAX_CONFIG",
    "MAX_DEPTH",
    "MAX_DISPATCHER_BODY",
    "MAX_DOCUMENT",
    "MAX_ID",
    "MAX_INJECT",
    "MAX_LOGS",
    "MAX_MODULES",
    "MAX_MODULE_FILES",
    "MAX_NAME",
    "MAX_TIMEOUT",
]

MiB = 1024 * 1024

#: nesting of any JSON value (messages, module state, config): deep enough for real
#: data, shallow enough that every stage (encoders, the debugger, checkpoints) can walk it
MAX_DEPTH = 100
#: characters in a flow, module or port id (state files are named after flow ids)
MAX_ID = 128
#: characters in a name a runner or page reports about itself
MAX_NAME = 256
#: bytes of one flow document, as sent over the API or read by validate
MAX_DOCUMENT = 8 * MiB
#: modules in one flow
MAX_MODULES = 1000
#: bytes of one module's config, as JSON
MAX_CONFIG = MiB

#: bytes (UTF-8) of the files one exec module carries with it (its ``files``), all together
MAX_MODULE_FILES = 4 * MiB
#: seconds a module's handler may run (its ``timeout``)
MAX_TIMEOUT = 24 * 3600.0
#: largest request body (and WebSocket message) a runner accepts by default
MAX_BODY = 16 * MiB
#: largest request body the dispatcher accepts (a flow document is its largest)
MAX_DISPATCHER_BODY = MAX_DOCUMENT
#: messages one inject call takes (split bigger batches)
MAX_INJECT = 100_000
#: log lines one call returns
MAX_LOGS = 10_000
