"""The process group every job joins (accelerate's Accelerator / PartialState), with one timeout.

A collective (the final reduce of training, the barriers of scoring) waits at most
$SPAMJOB_COLLECTIVE_TIMEOUT_MIN minutes (default 60) for the slowest process. NCCL's own
default, 10 minutes, is too short after an uneven resume, where one rank may have far more
work left than the others that already wait in the reduce.
"""

from __future__ import annotations

import os
from datetime import timedelta

from spamjob.errors import SpamjobError

TIMEOUT_ENV = "SPAMJOB_COLLECTIVE_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60


def collective_timeout() -> timedelta:
    """How long a process waits at a collective: $SPAMJOB_COLLECTIVE_TIMEOUT_MIN minutes [60]."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip() or str(DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if minutes <= 0:
        raise SpamjobError(f"{TIMEOUT_ENV} must be a positive number of minutes, got {raw!r}")
    return timedelta(minutes=minutes)


def accelerator(**options):
    """accelerate.Accelerator(**options) whose process group (if it starts one) has the collective timeout."""
    from accelerate import Accelerator, InitProcessGroupKwargs

    return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=collective_timeout())], **options)


def partial_state():
    """accelerate.PartialState, started with the collective timeout when this is the first use."""
    from accelerate import PartialState

    return PartialState(timeout=collective_timeout())
