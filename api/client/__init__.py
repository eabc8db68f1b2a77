"""Python clients of fifoflow's HTTP APIs (what the CLI uses; scripts can too):
:class:`RunnerClient` (async, with :class:`RpcSession` over its WebSocket) for a runner,
:class:`DispatcherClient` (sync) for a dispatcher's operator API. Both raise
:class:`ApiError` when the server refuses and :class:`ConnectError` when none answers."""

from fifoflow.api.client.dispatcher import DispatcherClient
from fifoflow.api.client.errors import ApiError, ConnectError
from fifoflow.api.client.runner import (
    FlowSummary,
    RpcSession,
    RunnerClient,
    Runtime,
    open_websocket,
)

__all__ = [
    "ApiError",
    "ConnectError",
    "DispatcherClient",
    "FlowSummary",
    "RpcSession",
    "RunnerClient",
    "Runtime",
    "open_websocket",
]
