"""Runs: flows executed as jobs (submit, lease, retry, cancel, result). See ``RUNS.md``."""

from .errors import LeaseLost, RunError, RunNotFound, RunRefused, RunStateError
from .model import (
    ACTIVE,
    TERMINAL,
    FailOn,
    RunInput,
    RunOffer,
    RunPart,
    RunProgress,
    RunResult,
    RunState,
    RunSubmission,
    Target,
)

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "FailOn",
    "LeaseLost",
    "RunError",
    "RunInput",
    "RunNotFound",
    "RunOffer",
    "RunPart",
    "RunProgress",
    "RunRefused",
    "RunResult",
    "RunState",
    "RunStateError",
    "RunSubmission",
    "Target",
]
