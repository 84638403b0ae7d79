"""Fault injection for the crash tests: a real SIGKILL at a named point, so resume is tested against
what a preempted node or an OOM killer does, not against a polite exception."""

from __future__ import annotations

import os
import signal
import time


def kill_point(variable: str, count: int) -> None:
    """SIGKILL this process when the environment variable `variable` equals `count`."""
    if os.environ.get(variable) == str(count):
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(variable: str, count: int) -> None:
    """Sleep when the environment variable `variable` is `count:seconds` (a process caught mid-work)."""
    at, _, seconds = os.environ.get(variable, "").partition(":")
    if at == str(count):
        time.sleep(float(seconds or 5))
