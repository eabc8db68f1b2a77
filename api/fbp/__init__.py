"""The FBP network protocol (runtime, graph, network, component) over a runner.

``graph.py`` maps graph edits to flow documents (no I/O), ``session.py`` maps the
protocol onto a :class:`~fifoflow.runner.Runner`, ``server.py`` is the WebSocket
endpoint. See ``api/fbp/README.md``.
"""

from .graph import Graph, GraphError, Graphs
from .server import SUBPROTOCOL, create_fbp_app, serve_fbp
from .session import CAPABILITIES, PROTOCOL_VERSION, FbpRuntime

__all__ = [
    "CAPABILITIES",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "FbpRuntime",
    "Graph",
    "GraphError",
    "Graphs",
    "create_fbp_app",
    "serve_fbp",
]
