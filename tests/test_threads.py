"""spamjob.threads: CPU threads from what the process may really use."""

from __future__ import annotations

import os

import torch

from spamjob import threads


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(v1) is None
    assert threads.cgroup_cpu_quota(tmp_path / "nothing") is None


def test_threads_follow_affinity_quota_and_local_ranks(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda root=None: None)
    assert threads.usable_cpus() == 8
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda root=None: 2.5)  # a pod limited to 2.5 CPUs
    assert threads.usable_cpus() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(threads, "free_cpus", lambda since=None: None)
    assert threads.choose_threads()["threads"] == 1 and threads.choose_threads(6)["threads"] == 6  # --threads wins
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda root=None: 0.5)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.choose_threads()["threads"] == 1  # never 0


def test_apply_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1)["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_busy_cpus_lower_the_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda root=None: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    for free, expected in ((4.0, 4), (2.4, 2), (1.6, 2), (0.2, 1), (None, 4)):
        monkeypatch.setattr(threads, "free_cpus", lambda since=None, f=free: f)
        assert threads.choose_threads()["threads"] == expected, free


def test_independent_workers_keep_the_share_under_load(monkeypatch):
    """Model workers wait for nobody, so busy CPUs do not lower their number (OpenMP threads do)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda root=None: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(threads, "free_cpus", lambda since=None: 0.3)
    assert threads.choose_threads()["threads"] == 1
    assert threads.choose_threads(independent=True)["threads"] == 2  # 4 CPUs / 2 local ranks
    before = torch.get_num_threads()
    try:
        choice = threads.apply_threads(workers=True)
        assert choice["workers"] == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_free_cpus_sees_a_busy_process():
    """A process burning the one CPU this test may use leaves it (almost) no idle time. Other load
    on the machine can only lower the reading, so the check holds on a busy CI machine too."""
    import subprocess
    import sys
    import time

    mine = os.sched_getaffinity(0)
    cpu = min(mine)
    burn = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    os.sched_setaffinity(0, {cpu})
    try:
        time.sleep(0.5)
        start = threads._snapshot()
        time.sleep(0.5)
        busy = threads.free_cpus(start)
    finally:
        os.sched_setaffinity(0, mine)
        burn.kill()
    assert busy is not None and busy < 0.5


def test_free_cpus_from_proc_stat_ticks(tmp_path, monkeypatch):
    """Idle share per allowed CPU between two readings, plus this process's own CPU time."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads, "PROC_STAT", stat)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0\n")
    first = threads._snapshot()
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 200 0 0 100 0 0 0 0\ncpu1 0 0 50 250 0 0 0 0\n")
    first = (first[0] - 1.0, first[1], first[2])  # one second ago, so no extra wait
    free = threads.free_cpus(first)
    assert 0.5 <= free < 0.6  # cpu0 fully busy (0 idle), cpu1 half idle; plus a little of our own time


def test_a_registered_child_counts_as_own_cpu_time():
    """The plotting child's import runs while train measures other processes' load: its CPU time
    is the job's own (spamjob.training.plots registers it), an unregistered child's is not."""
    import subprocess
    import sys

    code = "import time\nwhile time.process_time() < 0.4: pass\nprint(1, flush=True)\ninput()"
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    children = [subprocess.Popen([sys.executable, "-c", code], **pipes) for _ in "ab"]
    before = threads._own_cpu()
    threads.count_as_own(children[0].pid)
    try:
        for c in children:
            assert c.stdout.readline().strip() == b"1"  # each has burnt its 0.4 s
        gained = threads._own_cpu() - before
    finally:
        for c in children:
            c.kill()
            c.wait()
        threads._OWN_CHILDREN.discard(children[0].pid)
    assert 0.3 <= gained < 0.7  # the registered child (and a little of ours), not the other one
