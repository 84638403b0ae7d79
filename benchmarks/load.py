"""Competing CPU load for the benchmarks: N processes that burn a core each while the measured
runs go on, as on a shared node (other jobs, a noisy neighbour, the rest of a pipeline)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def background_load(n: int) -> Iterator[None]:
    """Run `n` busy-looping processes for the duration of the block (none when n is 0)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
