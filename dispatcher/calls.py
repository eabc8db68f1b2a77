"""Calls from the dispatcher to one runner over its control link, each with a deadline.

A runner that accepts a call and never answers must cost the caller at most the
dispatcher's call timeout (``DispatcherConfig.call_timeout``), never the dispatcher:
:func:`call_runner` gives up on the answer then, and raises
:class:`~.errors.RunnerTimeout` naming the runner, the call and the deadline. Callers
decide what a silent runner means: placement takes it as a refusal of the flow
(``deploy.py``), a forwarded call answers it (a 504 in the API; ``parts.py``), a call
whose failure changes nothing ignores it (``parts.suppress_remote``).

Only the relay (messages from one part of a flow to another) waits without a deadline:
it is the data path, and a slow target slows the sender (backpressure), never others;
each relayed batch is its own task on the sender's link.

Error handling: the call's own errors (:class:`~fifoflow.runner.rpc.RemoteError`,
:class:`~fifoflow.runner.rpc.LinkClosed`) pass through :func:`call_runner`;
:func:`forward_call`, for a user's request, answers a link that closed before the
answer as :class:`~.errors.FlowPending` (send the call again), not as a bad request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ..runner.rpc import LinkClosed
from .errors import FlowPending, RunnerTimeout

if TYPE_CHECKING:
    from ..runner.rpc import RpcPeer

__all__ = ["SECONDS", "call_runner", "forward_call"]

SECONDS = 1.0


async def call_runner(
    peer: RpcPeer, runner_id: str, seconds: float | None, method: str, /, **params: Any
) -> Any:
    """``peer.call(method, **params)``, given up after ``seconds`` (None: no deadline):
    :class:`RunnerTimeout` then. Positional-only, so that no param name is taken."""
    if seconds is None:
        return await peer.call(method, **params)
    try:
        with trio.fail_after(seconds):
            return await peer.call(method, **params)
    except trio.TooSlowError:
        raise RunnerTimeout.unanswered(runner_id, method, seconds) from None


async def forward_call(
    peer: RpcPeer, runner_id: str, seconds: float | None, method: str, /, **params: Any
) -> Any:
    """:func:`call_runner` on behalf of a user's request: a runner that went away before
    it answered is :class:`FlowPending` (its flows are placed again; send the call
    again), naming it."""
    try:
        return await call_runner(peer, runner_id, seconds, method, **params)
    except LinkClosed:
        raise FlowPending(
            f"runner {runner_id} went away before it answered {method}; send the call again"
        ) from None
