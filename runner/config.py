"""Runner configuration: one typed object with unit-bearing defaults."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["SECONDS", "RunnerConfig"]

SECONDS = 1.0


@attrs.frozen
class RunnerConfig:
    #: messages waiting per runtime instance before producers are slowed down
    queue_capacity: int = 10_000
    #: messages sent to a host and not yet acknowledged (the redelivery window)
    window: int = 10_000
    #: largest number of messages the runner puts in one ``deliver`` frame it makes
    frame_messages: int = 1000
    start_timeout: float = 10 * SECONDS
    stop_timeout: float = 5 * SECONDS
    #: direct host-to-host channels between hosts that offer them (runner/direct.py,
    #: PROTOCOL.md section 11); False: every message passes through the runner
    direct: bool = True
    #: used for modules that do not set ``timeout``
    default_module_timeout: float = 30 * SECONDS
    restart_backoff_max: float = 5 * SECONDS
    #: longest a hot swap waits for the flow's hosts to finish what they were sent
    swap_timeout: float = 10 * SECONDS
    #: this many crashes within ``crash_period`` mark the flow failed
    crash_limit: int = 5
    crash_period: float = 30 * SECONDS
    #: recent errors and log lines kept per module / runtime
    keep_errors: int = 100
    keep_logs: int = 1000
    #: where flows and module state are kept (None: nothing is persisted)
    state_dir: Path | None = None
    #: where each runtime's FIFO pair gets its folder (None: the system temp dir; with a
    #: ``state_dir``, the runner uses ``<state_dir>/fifos`` and clears what a killed
    #: runner left there)
    fifo_dir: Path | None = None
    #: where module environments are built and cached (None: ``<state_dir>/envs``, or
    #: ``$XDG_CACHE_HOME/fifoflow/envs`` without a state dir)
    env_dir: Path | None = None
    #: an environment no flow has used for this long is removed by ``gc``
    env_max_idle: float = 7 * 24 * 3600 * SECONDS
    #: how often the runner looks for such environments
    env_gc_interval: float = 3600 * SECONDS
    #: how often running flows' module state is written to ``state_dir``
    checkpoint_interval: float = 1 * SECONDS
    #: what a flow without ``durability`` gets: "checkpoint" or "journal" (JOURNAL.md)
    durability: str = "checkpoint"
    #: journaled flows: "always" (fdatasync per group commit before injects are
    #: answered) or "never" (written to the OS only: survives a killed runner, not a
    #: power cut)
    journal_fsync: str = "always"
    #: a journal this large refuses injects (507, journal_full) until it is compacted
    journal_max_bytes: int = 1 << 30
    #: a journal larger than this is compacted at the next checkpoint
    journal_compact_bytes: int = 16 << 20
    #: injects are refused while the disk has less free space than this (room for the
    #: records of the work already accepted)
    journal_reserve_bytes: int = 4 << 20
    #: where hosts of runtimes that attach themselves come from (``runner/attached.py``;
    #: a web page's client runner). None: this runner takes none.
    attached: Any = attrs.field(default=None, eq=False)
    #: runs (``runner/runs/``): attempts run at once; 0: this runner has no run executor
    #: (the CLI's ``--max-runs`` defaults to the CPU count)
    max_runs: int = 0
    #: finished runs' files (offer, result, outputs) are removed this long after the
    #: book has their result
    run_retention: float = 7 * 24 * 3600 * SECONDS
    #: idle runtime hosts kept ready per runtime for runs (``runner/runs/pool.py``)
    warm_hosts: int = 2

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RunnerConfig:
        fields = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"unknown runner setting(s): {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
            )
        values = dict(data)
        for key in ("state_dir", "env_dir", "fifo_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)
