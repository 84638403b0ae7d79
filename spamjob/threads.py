"""CPU threads that fit the machine the job really runs on.

torch sizes its intra-op pool from the machine's cores, not from what this process may use:
a Kubernetes pod's CPU limit, a Slurm step's cgroup, a CPU affinity mask, several ranks on
one node, or cores that other processes keep busy. Threads beyond that share cores, and
OpenMP threads that wait for a descheduled sibling spin instead of sleeping: several-fold
slowdowns on a shared machine (benchmarks/RESULTS.md, quiet and loaded side by side).
CPU scoring avoids the barriers altogether: one single-threaded model worker per CPU, each
on its own batches (`spamjob.scoring.runtimes.pytorch.TorchPredictor`).

The busy share is read from /proc/stat between `start_cpu_reading()` (the CLI calls it first
thing) and the choice, with the CPU time of this process (and of its helper children) added
back, so measuring costs no extra time.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")


def _snapshot() -> tuple[float, float, dict[int, tuple[int, int]]] | None:
    """(wall time, this job's CPU seconds, {cpu: (idle ticks, total ticks)}), or None off Linux."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    cpus = {}
    for line in lines:
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(t) for t in ticks]
            cpus[int(name[3:])] = (values[3] + values[4], sum(values[:8]))  # idle + iowait; user..steal
    return time.monotonic(), _own_cpu(), cpus


def _own_cpu() -> float:
    """CPU seconds of this process and of the live children registered by `count_as_own`."""
    t = os.times()
    own = t.user + t.system
    for pid in list(_OWN_CHILDREN):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # state, ppid, ...
        except (OSError, IndexError):
            continue  # reaped
        if int(fields[1]) == os.getpid():  # not a later process that reuses the number
            own += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return own


_OWN_CHILDREN: set[int] = set()


def count_as_own(pid: int) -> None:
    """The CPU time of child `pid` (the plotting child `spamjob train` starts before torch's import)
    is this job's own work, not another process's load, while it lives."""
    _OWN_CHILDREN.add(pid)


_START = None


def start_cpu_reading() -> None:
    """Start measuring other processes' CPU use (the CLI does it first thing, so that measuring is free)."""
    global _START
    if _START is None:
        _START = _snapshot()


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(n, math.floor(quota)) if quota is not None else n)


def cgroup_cpu_quota(root: Path = CGROUP) -> float | None:
    """The CPU limit of this process's cgroup in CPUs (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), if any."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def local_processes() -> int:
    """Processes of this job on this machine (torchrun / accelerate launch set LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def free_cpus(since=None) -> float | None:
    """CPUs of this process's affinity set that other processes left idle since `since` (default:
    `start_cpu_reading()`, else the next 0.1 s), counting this job's own CPU time as free;
    None where /proc/stat is missing."""
    first = since or _START or _snapshot()
    if first is None:
        return None
    if time.monotonic() - first[0] < 0.1:  # too short to measure: look for a moment
        time.sleep(0.1)
    second = _snapshot()
    wall = second[0] - first[0]
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(second[2])
    idle = 0.0
    for cpu in allowed:
        if cpu in first[2] and cpu in second[2]:
            total = second[2][cpu][1] - first[2][cpu][1]
            idle += (second[2][cpu][0] - first[2][cpu][0]) / total if total > 0 else 1.0
    return idle + (second[1] - first[1]) / wall


def choose_threads(requested: int | None = None, independent: bool = False) -> dict:
    """`requested` (--threads), else this process's share of the usable CPUs. Threads that share
    each operator wait for one another at its end (an OpenMP barrier), so they are lowered to
    the CPUs other processes leave free; `independent` threads (model workers that each run
    their own batches) wait for nobody and keep the whole share. Returns the choice and what
    it was made from."""
    if requested:
        return {"threads": requested, "reason": "--threads"}
    usable, local, free = usable_cpus(), local_processes(), free_cpus()
    share = max(1, usable // local)
    threads = share if free is None or independent else max(1, min(share, math.floor(free + 0.5)))
    return {
        "threads": threads,
        "usable_cpus": usable,
        "local_processes": local,
        "free_cpus": None if free is None else round(free, 2),
    }


def apply_threads(requested: int | None = None, workers: bool = False) -> dict:
    """Set torch's intra-op threads to the choice of `choose_threads`; returns that choice. With
    `workers` (CPU scoring), the threads are model workers of one intra-op thread each: the
    choice gains `workers` and torch keeps one thread per caller."""
    import torch

    choice = choose_threads(requested, independent=workers)
    if workers:
        choice["workers"] = choice["threads"]
    intra = 1 if workers else choice["threads"]
    if torch.get_num_threads() != intra:
        torch.set_num_threads(intra)
    return choice


def tokenizer_workers(gpu: bool) -> int:
    """Tokenizer processes for GPU scoring: this process's share of the usable CPUs (affinity mask,
    cgroup quota, local ranks) less the one running the model loop, at most 8; none on the CPU,
    where the CPUs run the model."""
    return min(8, max(usable_cpus() // local_processes() - 1, 0)) if gpu else 0
