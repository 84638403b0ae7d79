"""The sbatch templates under a real Slurm: a one-node cluster from Debian's packages (slurmctld,
slurmd, munge; `.ci/run` installs them), started for this module by tests/slurm/cluster.sh and
stopped after. A stand-in `srun` (tests/test_jobs.py) could not show what tasks that start
together do to one output folder; this can."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict:
    """Environment for sbatch/squeue/scontrol talking to a fresh one-node cluster."""
    missing = [d for d in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if shutil.which(d) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(
            f"a real Slurm needs Debian's slurmctld, slurmd, slurm-client and munge and root to run them "
            f"(missing: {', '.join(missing) or 'root'}); .ci/run installs them"
        )
    root = tmp_path_factory.mktemp("slurm")
    r = subprocess.run(["bash", str(CLUSTER), "start", str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the jobs' python3 and accelerate: this venv's
    try:
        yield {**os.environ, "SLURM_CONF": str(root / "slurm.conf"), "PATH": path, "SPAMJOB_LOGS": str(root)}
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(root)], timeout=120)


def _sbatch(env: dict, *args: str) -> str:
    r = subprocess.run(
        ["sbatch", "--parsable", f"--output={env['SPAMJOB_LOGS']}/%x-%A_%a.out", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def _wait(env: dict, job_ids: list[str], timeout: float = 900) -> None:
    """Until squeue lists none of the jobs (or their array tasks); then each ended COMPLETED, exit 0."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], env=env, capture_output=True, text=True)
        if r.returncode == 0 and not r.stdout.strip():
            break
        time.sleep(1)
    else:
        pytest.fail(f"jobs {job_ids} still queued or running after {timeout:.0f} s:\n{_logs(env)}")
    for job in job_ids:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True).stdout
        states = re.findall(r"JobState=(\S+).*?ExitCode=(\S+)", shown)
        assert states and all(s == ("COMPLETED", "0:0") for s in states), f"{shown}\n{_logs(env)}"


def _logs(env: dict) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(Path(env["SPAMJOB_LOGS"]).glob("*.out")))


def test_score_array_tasks_fill_one_output_exactly_once(slurm, sms_path, classifier_dir, tmp_path):
    """`sbatch --array=0-3 jobs/slurm/score.sbatch`, three submissions at once, each into an empty
    --out: every task completes, the last writes the report and _SUCCESS, every row once."""
    texts = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"]).head(400)
    pq.write_table(
        pa.table({"id": list(range(400)), "Text": texts["Text"], "Label": texts["Label"]}),
        tmp_path / "in.parquet",
        row_group_size=50,
    )  # 8 work units
    outs = [tmp_path / f"scored-{k}" for k in range(3)]
    jobs = [
        _sbatch(
            slurm,
            "--array=0-3",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "jobs/slurm/score.sbatch",
            str(tmp_path / "in.parquet"),
            "--model",
            str(classifier_dir),
            "--out",
            str(out),
            "--label-column",
            "Label",
            "--no-progress",
        )
        for out in outs
    ]
    _wait(slurm, jobs)
    for out in outs:
        assert (out / "_SUCCESS").is_file() and (out / "report.json").is_file()
        scored = pd.read_parquet(out / "predictions")
        assert sorted(scored["id"]) == list(range(400))  # each row exactly once
        assert len(list((out / "_parts").glob("*.json"))) == 8


def test_finetune_sbatch_trains_on_two_cpu_ranks(slurm, data_dir, tmp_path):
    job = _sbatch(
        slurm,
        "--gpus-per-node=0",
        "--cpus-per-task=2",
        "--export=ALL,SPAMJOB_CPU_PROCESSES=2",
        "jobs/slurm/finetune.sbatch",
        "--data",
        str(data_dir),
        "--weights",
        "random",
        "--n-layers",
        "2",
        "--emb-dim",
        "32",
        "--n-heads",
        "2",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    _wait(slurm, [job])
    metrics = pd.read_json(tmp_path / "run" / "metrics.json", typ="series")
    assert metrics["num_processes"] == 2 and (tmp_path / "run" / "model.safetensors").is_file()
