"""What the runner decides when a runtime host fails, sans I/O (PROTOCOL.md sections 5, 6).

- :class:`CrashWindow`: restarts back off (0, 0.1 s, 0.2 s, ... up to a maximum), and
  ``limit`` crashes within ``period`` are a crash loop: the instance gives up.
- :func:`hang_errors`: the ``Timeout`` errors a ``hung`` frame leads to, given what the
  window gave up for it (:meth:`~.queues.DeliveryQueues.hung`).
- :func:`deadline`: the runner's own limit for hosts that cannot say ``hung``.

:class:`~.instance.RuntimeInstance` acts on these answers: it sleeps, records the errors,
kills the host. Nothing here knows trio, processes or the clock; callers pass the time.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .queues import Delivery

__all__ = ["CrashWindow", "TimedOut", "deadline", "hang_errors"]


@attrs.define
class CrashWindow:
    """The recent crashes of one runtime instance."""

    #: this many crashes within ``period`` are a crash loop (None: never, e.g. a web
    #: page's host that goes away and comes back)
    limit: int | None
    period: float
    backoff_max: float
    _times: deque[float] = attrs.field(factory=deque, init=False)

    @property
    def count(self) -> int:
        """Crashes within ``period`` of the last one."""
        return len(self._times)

    def crashed(self, now: float) -> float | None:
        """Count a crash at ``now``: the delay before the next start, or None for a crash
        loop."""
        times = self._times
        times.append(now)
        while times and now - times[0] > self.period:
            times.popleft()
        if self.limit is not None and len(times) >= self.limit:
            return None
        return min(self.backoff_max, 0.0 if len(times) <= 1 else 0.1 * 2 ** (len(times) - 2))


@attrs.frozen
class TimedOut:
    """One ``Timeout`` error to record on a module."""

    module: str
    port: str | None
    msg: Any
    error: dict[str, Any]


def hang_errors(frame: dict[str, Any], timeout: Any, removed: Delivery | None) -> list[TimedOut]:
    """The errors for a ``hung`` frame (or the runner's own deadline, which makes one).

    ``timeout`` is the hung module's; ``removed`` what left the window for it: None (the
    frame goes again: the error names the frame's message), one message named by its
    index, or a whole frame that hung twice (each of its messages is an error)."""
    detail = (
        f"handler ran past its timeout of {timeout:g} s"
        if isinstance(timeout, (int, float))
        else "handler hung"
    )
    elapsed = frame.get("elapsed")
    if isinstance(elapsed, (int, float)) and math.isfinite(elapsed):
        detail += f" (running for {elapsed:.3g} s); runtime restarted"
    module, port = frame["module"], frame.get("port")
    if removed is None:
        return [TimedOut(module, port, frame.get("msg"), {"type": "Timeout", "message": detail})]
    if removed.hangs < 2:
        return [TimedOut(module, port, removed.msgs[0], {"type": "Timeout", "message": detail})]
    detail += "; frame hung twice, not delivered again"
    return [
        TimedOut(removed.module, removed.port, msg, {"type": "Timeout", "message": detail})
        for msg in removed.msgs
    ]


def deadline(timeouts: Iterable[Any], default: float) -> float:
    """How long a host without a watchdog may stay silent with deliveries pending: twice
    the largest module timeout (``default`` for modules without one), plus one second."""
    return 2 * max((float(t or default) for t in timeouts), default=default) + 1.0
