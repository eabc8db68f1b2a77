"""Python clients of fifoflow's HTTP APIs (what the CLI uses; scripts can too)."""

from fifoflow.api.client.runner import (
    ApiError,
    ConnectError,
    FlowSummary,
    RpcSession,
    RunnerClient,
    Runtime,
    open_websocket,
)

__all__ = [
    "ApiError",
    "ConnectError",
    "FlowSummary",
    "RpcSession",
    "RunnerClient",
    "Runtime",
    "open_websocket",
]
