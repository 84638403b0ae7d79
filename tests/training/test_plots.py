"""spamjob.training.plots: the training plots, drawn in a child process started early in a run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spamjob.errors import SpamjobError
from spamjob.training.plots import PlotProcess, early_plot_process, plot_process

HISTORY = [
    {"kind": "eval", "epoch": 1, "step": 0, "examples_seen": 8, "train_loss": 0.7, "val_loss": 0.69},
    {"kind": "eval", "epoch": 1, "step": 50, "examples_seen": 408, "train_loss": 0.5, "val_loss": 0.6},
    {"kind": "epoch", "epoch": 1, "step": 129, "examples_seen": 1040, "train_acc": 0.8, "val_acc": 0.75},
    {"kind": "epoch", "epoch": 2, "step": 259, "examples_seen": 2080, "train_acc": 0.9, "val_acc": 0.85},
]


def test_plot_process_writes_both_pngs(tmp_path):
    p = PlotProcess()
    p.render(tmp_path, HISTORY, 2, 1040)
    p.wait()
    for name in ("loss.png", "accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporaries left
    p.cancel()  # after wait: nothing to stop


def test_plot_process_failure_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    p = PlotProcess()
    p.render(tmp_path / "a-file", HISTORY, 2, 1040)  # a file where the run folder should be
    with pytest.raises(SpamjobError, match="writing the training plots failed: ") as e:
        p.wait()
    assert "\n" not in str(e.value)


def test_cancelled_plot_process_is_gone(tmp_path):
    p = PlotProcess()
    pid = p._proc.pid
    p.cancel()
    assert p._proc.poll() is not None
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_child_exits_quietly_when_the_parent_sends_nothing():
    r = subprocess.run([sys.executable, "-m", "spamjob.training.plots"], input=b"", capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stderr == b""


@pytest.mark.slow
def test_without_matplotlib_train_and_score_complete_and_say_so(data_dir, tmp_path):
    """Plots are optional: with `import matplotlib` failing, a run still writes its classifier,
    metrics and report (and _SUCCESS), and says which pictures are missing."""
    import os

    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib is broken here (test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}

    def spamjob(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "spamjob.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )

    run, scored = tmp_path / "run", tmp_path / "scored"
    r = spamjob(
        "train",
        "--data",
        str(data_dir),
        "--out",
        str(run),
        "--weights",
        "random",
        "--n-layers",
        "1",
        "--emb-dim",
        "32",
        "--n-heads",
        "2",
        "--epochs",
        "1",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: no loss.png / accuracy.png: matplotlib cannot be imported" in r.stdout + r.stderr
    assert (run / "metrics.json").is_file() and (run / "README.md").is_file() and not (run / "loss.png").exists()
    r = spamjob(
        "score",
        str(data_dir / "test.csv"),
        "--model",
        str(run),
        "--out",
        str(scored),
        "--label-column",
        "Label",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: no report.png: matplotlib cannot be imported" in r.stdout + r.stderr
    assert (scored / "_SUCCESS").is_file() and (scored / "report.md").is_file() and not (scored / "report.png").exists()


def test_early_plot_process_only_where_this_is_likely_the_main_process(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with early_plot_process() as p:
        assert p is None
    monkeypatch.delenv("RANK")
    with early_plot_process() as p:
        assert isinstance(p, PlotProcess)
    assert p._proc.poll() is not None  # stopped with the block


def test_a_started_plot_process_is_stopped_where_this_is_not_the_main_process():
    started = PlotProcess()
    with plot_process(False, started=started) as p:
        assert p is None and started._proc.poll() is not None
    with plot_process(True, started=(started := PlotProcess())) as p:
        assert p is started
