"""The statuses the dispatcher records for runners and flows, and how they change.

Their values are the strings stored in SQLite and sent in API answers. A ``StrEnum``
member is that string (``RunnerStatus.READY == "ready"``; orjson writes ``"ready"``),
so the plain strings of records read from the store compare equal to the members.

A runner (:class:`RunnerStatus`)::

    registered --hello--> starting --ready--> ready --(no heartbeat for ttl, --> lost
                                                |      or its process ended)      |
                                                |                                 |
                                                +<------------heartbeat-----------+
                                                +--signoff--> signed-off
                                                +--drain--> draining --> drained

    and from any status, hello (the runner connects again) --> starting

A flow (:class:`FlowStatus`)::

    pending --a runner for every module--> placed --a runner of it lost--> pending
                                             |
                                             +--deployed again--> updating --> placed | pending
                                             +--its runner drains--> moving --> pending

Only ``ready`` runners with a live link get new modules; ``moving`` flows are placed by
the drain that moves them, once their state is handed over.
"""

from __future__ import annotations

import enum

__all__ = ["WATCHED", "FlowStatus", "RunnerStatus"]


class RunnerStatus(enum.StrEnum):
    #: has an id and a secret; has not connected yet
    REGISTERED = "registered"
    #: connected and proved who it is; reporting hardware
    STARTING = "starting"
    #: takes flows; heartbeats keep it so
    READY = "ready"
    #: silent longer than the TTL, or its process or container ended
    LOST = "lost"
    #: said goodbye (it stopped on purpose)
    SIGNED_OFF = "signed-off"
    #: its flows are moving elsewhere; it gets no new ones
    DRAINING = "draining"
    #: holds no flows and gets none
    DRAINED = "drained"


class FlowStatus(enum.StrEnum):
    #: waits for runners (the record's ``reason`` says why)
    PENDING = "pending"
    #: every module runs on a runner
    PLACED = "placed"
    #: placed, and a new version is being deployed where it runs
    UPDATING = "updating"
    #: leaving a draining runner with its state: nobody else places it meanwhile
    MOVING = "moving"


#: runners whose heartbeats are watched: one silent for the TTL is lost
WATCHED = (RunnerStatus.READY, RunnerStatus.STARTING)
