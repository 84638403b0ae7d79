"""The scheduler templates in jobs/: they parse, and the command each runs works (tiny model, CPU).

Here Slurm is simulated: the test sets SLURM_* variables and puts a stand-in `srun` on PATH
that runs its command once, as one task on this node would (multi-node variables included);
tests/test_slurm.py submits the templates to a real one-node Slurm.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import run_in_repo, tiny_hf_model, write_hf_dir

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
SHELL = sorted(
    [
        *JOBS.glob("*.sh"),
        *JOBS.glob("slurm/*"),
        *REPO.glob("benchmarks/*.sh"),
        REPO / ".ci" / "run",
        *REPO.glob("tests/slurm/*.sh"),
    ]
)
TINY = ["--weights", "random", "--n-layers", "2", "--emb-dim", "32", "--n-heads", "2", "--epochs", "1"]


@pytest.mark.parametrize("script", SHELL, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_scripts_pass_bash_n_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout


def test_launcher_never_falls_back_to_the_cpu_silently(tmp_path):
    """Counting GPUs must work or stop the launch: a missing interpreter or one without torch is one
    line and exit 1, not a CPU run on a GPU machine."""
    broken = tmp_path / "python-without-torch"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    broken.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "SPAMJOB_GPUS"}
    for python, message in (
        (str(tmp_path / "nowhere"), "not found; set PYTHON"),
        (str(broken), "cannot import torch; set PYTHON, or SPAMJOB_GPUS"),
    ):
        r = subprocess.run(
            ["bash", str(JOBS / "launch.sh"), "jobs/finetune.py"],
            capture_output=True,
            text=True,
            env={**base, "PYTHON": python, "SPAMJOB_DRY_RUN": "1"},
        )
        assert r.returncode == 1 and message in r.stderr and "accelerate launch" not in r.stderr
    r = subprocess.run(
        ["bash", str(JOBS / "launch.sh"), "jobs/finetune.py"],
        capture_output=True,
        text=True,
        env={**base, "PYTHON": str(broken), "SPAMJOB_GPUS": "2", "SPAMJOB_DRY_RUN": "1"},
    )
    assert r.returncode == 0 and "--multi_gpu --num_processes 2" in r.stderr


def test_yaml_templates_parse():
    job = yaml.safe_load((JOBS / "k8s" / "finetune-job.yaml").read_text())
    cron = yaml.safe_load((JOBS / "k8s" / "score-cronjob.yaml").read_text())
    growing = yaml.safe_load((JOBS / "k8s" / "score-cronjob-incremental.yaml").read_text())
    assert job["kind"] == "Job" and cron["kind"] == "CronJob" and len(cron["spec"]["schedule"].split()) == 5
    assert growing["kind"] == "CronJob" and growing["spec"]["concurrencyPolicy"] == "Forbid"
    for c in (_container(job), _container(cron), _container(growing)):
        assert c["resources"]["requests"]["nvidia.com/gpu"] >= 1 and c["volumeMounts"]
    assert yaml.safe_load((REPO / "accelerate_config.yaml").read_text())["distributed_type"] == "NO"


def _container(doc: dict) -> dict:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]["containers"][0]


@pytest.fixture
def fake_slurm(tmp_path):
    """PATH with an `srun` that drops its options and runs the command once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/usr/bin/env bash\nwhile [[ "${1:-}" == --* ]]; do shift; done\nexec "$@"\n')
    srun.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO), "SPAMJOB_GPUS": "0"}


def _run(cmd: list[str], env: dict, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`cmd` run as run_in_repo runs it, and succeeding."""
    r = run_in_repo(cmd, env, cwd)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r


@pytest.mark.slow
def test_slurm_finetune_single_node_and_multi_node(fake_slurm, data_dir, tmp_path):
    env = {**fake_slurm, "SLURM_JOB_ID": "42", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "node07"}
    out = tmp_path / "run"
    _run(["bash", "jobs/slurm/finetune.sbatch", "--data", str(data_dir), *TINY, "--out", str(out)], env)
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 1
    # Requeued after the run ended: --auto-resume picks the checkpoint up instead of failing.
    (out / "metrics.json").unlink()
    r = _run(["bash", "jobs/slurm/finetune.sbatch", "--data", str(data_dir), *TINY, "--out", str(out)], env)
    assert "resuming from" in r.stdout + r.stderr and (out / "metrics.json").exists()
    # Node 2 of 2: accelerate gets the machine rank and the first host as main process.
    multi = {
        **env,
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu[03-04],cpu1",
        "SPAMJOB_DRY_RUN": "1",
        "SPAMJOB_GPUS": "4",
    }
    r = _run(["bash", "jobs/slurm/finetune.sbatch", "--data", "d", "--out", "o"], multi)
    assert re.search(
        r"--num_machines 2 --machine_rank 1 --main_process_ip gpu03 --main_process_port 29500 "
        r"--multi_gpu --num_processes 8 \S+/jobs/finetune.py --auto-resume --data d --out o",
        r.stderr,
    )


@pytest.mark.slow
def test_slurm_score_job_array_shares_one_output(fake_slurm, classifier_dir, data_dir, tmp_path):
    inputs = [str(data_dir / "test.csv"), str(data_dir / "validation.csv")]
    args = [*inputs, "--model", str(classifier_dir), "--label-column", "Label", "--no-progress", "--block-mb", "1"]
    env = {
        **fake_slurm,
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "n1",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_ARRAY_TASK_MIN": "0",
    }
    out = tmp_path / "shared"
    first = _run(["bash", "jobs/slurm/score.sbatch", *args, "--out", str(out)], {**env, "SLURM_ARRAY_TASK_ID": "1"})
    assert "shard 1/2 done" in first.stdout and not (out / "_SUCCESS").exists()
    _run(["bash", "jobs/slurm/score.sbatch", *args, "--out", str(out)], {**env, "SLURM_ARRAY_TASK_ID": "0"})
    assert (out / "_SUCCESS").exists()
    single = tmp_path / "single"
    _run(["bash", "jobs/score.sh", *args, "--out", str(single)], {"SPAMJOB_GPUS": "0"})
    a, b = (json.loads((d / "report.json").read_text()) for d in (out, single))
    assert a["rows"] == b["rows"] and a["accuracy"] == b["accuracy"] and a["rows"]["read"] == 449
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions"), pd.read_parquet(single / "predictions"))


def _substitute(text: str, paths: dict[str, Path]) -> str:
    for old, new in paths.items():
        text = text.replace(old, str(new))
    return text


@pytest.fixture
def volumes(tmp_path, data_dir, classifier_dir):
    """The pods' /data and /models volumes, filled as the templates expect."""
    import shutil

    data, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(data_dir, data / "splits")
    (data / "inbox").mkdir()
    shutil.copy(data_dir / "test.csv", data / "inbox" / "batch-001.csv")
    shutil.copytree(classifier_dir, models / "current", ignore=shutil.ignore_patterns("checkpoints"))
    # The air-gapped bundle: tiny GPT-2 "pretrained" weights where `--weights hf` looks offline.
    write_hf_dir(
        tiny_hf_model(seed=5, n_layer=2, n_embd=32, n_head=2, n_positions=256),
        models / "spamjob-bundle" / "hf" / "gpt2-small",
    )
    return {"/opt/spamjob": REPO, "/data": data, "/models": models}


@pytest.mark.slow
def test_kubernetes_finetune_job_runs(volumes):
    doc = yaml.safe_load((JOBS / "k8s" / "finetune-job.yaml").read_text())
    c = _container(doc)
    cmd = [_substitute(x, volumes) for x in [*c["command"], *c["args"], "--epochs", "1"]]
    env = {e["name"]: _substitute(e["value"], volumes) for e in c.get("env", [])}
    _run(cmd, {**env, "SPAMJOB_GPUS": "0"}, cwd=Path(_substitute(c["workingDir"], volumes)))
    m = json.loads((volumes["/models"] / "run-1" / "metrics.json").read_text())
    assert m["test"]["examples"] == 300
    cfg = json.loads((volumes["/models"] / "run-1" / "config.json").read_text())
    assert cfg["base_weights"]["source"] == "hf" and cfg["architecture"]["emb_dim"] == 32  # the bundle's weights


@pytest.mark.slow
def test_kubernetes_cronjob_and_cron_line_run(volumes):
    doc = yaml.safe_load((JOBS / "k8s" / "score-cronjob.yaml").read_text())
    c = _container(doc)
    cmd = [_substitute(x, volumes) for x in [*c["command"], *c["args"]]]
    _run(cmd, {"SPAMJOB_GPUS": "0"}, cwd=Path(_substitute(c["workingDir"], volumes)))
    (day,) = list((volumes["/data"] / "scored").iterdir())
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day.name) and (day / "_SUCCESS").exists()

    # The incremental CronJob: a second night scores only the batch that came since.
    doc = yaml.safe_load((JOBS / "k8s" / "score-cronjob-incremental.yaml").read_text())
    c = _container(doc)
    cmd = [_substitute(x, volumes) for x in [*c["command"], *c["args"]]]
    _run(cmd, {"SPAMJOB_GPUS": "0"}, cwd=Path(_substitute(c["workingDir"], volumes)))
    import shutil

    shutil.copy(volumes["/data"] / "splits" / "validation.csv", volumes["/data"] / "inbox" / "batch-002.csv")
    _run(cmd, {"SPAMJOB_GPUS": "0"}, cwd=Path(_substitute(c["workingDir"], volumes)))
    night = json.loads((volumes["/data"] / "scored" / "inbox" / "report.json").read_text())
    every = json.loads((volumes["/data"] / "scored" / "inbox" / "cumulative.json").read_text())
    assert night["incremental"]["files_scored"] == 1 and every["rows"]["read"] == night["rows"]["read"] + 300
    (volumes["/data"] / "inbox" / "batch-002.csv").unlink()

    line = next(ln for ln in (JOBS / "spamjob.cron").read_text().splitlines() if ln and not ln.startswith("#"))
    fields = line.split(None, 5)
    assert len(fields) == 6 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5])
    log = volumes["/data"] / "cron.log"
    command = _substitute(fields[5].replace("\\%", "%"), {**volumes, "/var/log/spamjob-score.log": log})
    shutil.rmtree(volumes["/data"] / "scored")
    _run(["bash", "-c", command], {"SPAMJOB_GPUS": "0"})
    assert "incremental run 1: scored 300 of 300 rows" in log.read_text()
    assert shlex.split(command)[0] == "cd"
