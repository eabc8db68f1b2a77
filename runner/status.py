"""The lifecycle states of a flow (:class:`FlowStatus`) and of a runtime instance
(:class:`InstanceStatus`).

They are ``StrEnum``: a member is its value (``FlowStatus.RUNNING == "running"``, and
orjson writes ``"running"``), so the API, events and state files carry the same strings
as before. One exception: orjson refuses an enum member as a dict *key*; key by
``.value`` there.

Who sets them: :class:`~.flowrun.FlowRun` its own status, :class:`~.instance.RuntimeInstance`
its own. Everything else only reads them.
"""

from __future__ import annotations

import enum

__all__ = ["FlowStatus", "InstanceStatus"]


class FlowStatus(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    #: a runtime of the flow crash-looped, or the flow could not start
    FAILED = "failed"


class InstanceStatus(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    #: the host ended; a new one starts after the backoff
    RESTARTING = "restarting"
    #: the host could not start, or crash-looped
    FAILED = "failed"
