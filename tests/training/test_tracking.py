"""--report-to: accelerate's trackers get the options, every evaluation of history.jsonl at its step,
the final figures and (MLflow) the classifier folder; a tracker that is not installed is one line
before any work; two ranks log once. Read back with the trackers' own readers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import TINY_RUN, TWO_CPU_RANKS, run_in_repo

from spamjob.cli import cli


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under `folder`, read by TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def expected(out: Path) -> dict[str, list[tuple[int, float]]]:
    rows = history(out)
    keys = {
        "train_loss": "train/loss",
        "val_loss": "validation/loss",
        "train_acc": "train/accuracy",
        "val_acc": "validation/accuracy",
    }
    return {name: [(h["step"], h[k]) for h in rows if k in h] for k, name in keys.items()}


def same_series(got: dict, want: dict) -> None:
    for name, points in want.items():
        assert [s for s, _ in got[name]] == [s for s, _ in points], name
        assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (_, a), (_, b) in zip(got[name], points)), name


def test_tensorboard_events_equal_history(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    r = CliRunner().invoke(
        cli, ["train", "--data", str(data_dir), "--out", str(out), *TINY_RUN, "--report-to", "tensorboard"]
    )
    assert r.exit_code == 0, r.output
    scalars = tensorboard_scalars(out / "tracking")
    same_series(scalars, expected(out))
    m = json.loads((out / "metrics.json").read_text())
    assert scalars["final/test/accuracy"][0][1] == pytest.approx(m["test"]["accuracy"], abs=1e-6)
    assert list((out / "tracking").rglob("hparams.yml"))  # the options, as TensorBoard's hyperparameters


def test_a_tracker_that_is_not_installed_is_one_line_before_any_work(data_dir, tmp_path, monkeypatch):
    from spamjob import extras

    real = extras.is_available
    monkeypatch.setattr(extras, "is_available", lambda name: name != "wandb" and real(name))
    out = tmp_path / "r"
    r = CliRunner().invoke(
        cli, ["train", "--data", str(data_dir), "--out", str(out), *TINY_RUN, "--report-to", "wandb"]
    )
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        "Error: --report-to wandb needs Weights & Biases (wandb): pip install 'spamjob[wandb]'"
    ]
    assert not out.exists()


def mlflow_run(uri: str) -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments()
    (run,) = client.search_runs([e.experiment_id for e in experiments])
    return client, run


def check_mlflow(uri: str, out: Path) -> None:
    client, run = mlflow_run(uri)
    assert run.data.params["epochs"] == "1" and run.data.params["report_to"] == "mlflow"
    for name, points in expected(out).items():
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        same_series({name: got}, {name: points})
    names = {a.path for a in client.list_artifacts(run.info.run_id, "classifier")}
    assert {"classifier/model.safetensors", "classifier/config.json", "classifier/tokenizer"} <= names


@pytest.mark.slow
def test_mlflow_local_store_and_a_real_tracking_server(data_dir, tmp_path):
    pytest.importorskip("mlflow")
    local = tmp_path / "local"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cmd = [sys.executable, "-m", "spamjob.cli", "train", "--data", str(data_dir), *TINY_RUN, "--report-to", "mlflow"]
    r = subprocess.run([*cmd, "--out", str(local)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    check_mlflow(f"sqlite:///{local / 'tracking' / 'mlflow.db'}", local)
    files = tmp_path / "file-store"  # a `file:` store, where MLflow still takes one (3.x: when allowed)
    store = {"MLFLOW_TRACKING_URI": files.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    r = subprocess.run(
        [*cmd, "--out", str(tmp_path / "filed")], env={**env, **store}, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        check_mlflow(files.as_uri(), tmp_path / "filed")
    finally:
        del os.environ["MLFLOW_ALLOW_FILE_STORE"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        remote = tmp_path / "remote"
        r = subprocess.run(
            [*cmd, "--out", str(remote)],
            env={**env, "MLFLOW_TRACKING_URI": uri},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        check_mlflow(uri, remote)
        assert not (remote / "tracking" / "mlflow.db").exists()  # the server's store, not a local one
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_two_cpu_ranks_log_once(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "two"
    r = run_in_repo(
        [
            *TWO_CPU_RANKS,
            "jobs/finetune.py",
            "--data",
            str(data_dir),
            "--out",
            str(out),
            *TINY_RUN,
            "--report-to",
            "tensorboard",
        ],
        env={"ACCELERATE_USE_CPU": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 2
    same_series(tensorboard_scalars(out / "tracking"), expected(out))  # each step once: no second rank's copy


@pytest.mark.slow
def test_weights_and_biases_offline(data_dir, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "r"
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "spamjob.cli", "train", "--data", str(data_dir), "--out", str(out), *TINY_RUN]
    r = run_in_repo([*cmd, "--report-to", "wandb"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")  # one run, kept on disk
    data = run_file.read_bytes()
    assert all(name.encode() in data for name in ("train/loss", "validation/accuracy", "final/test/accuracy"))
