"""spamjob.processes: every job's process group gets the collective timeout (NCCL's 10 minutes
are too short after an uneven resume)."""

from __future__ import annotations

from datetime import timedelta

import accelerate
import pytest

from spamjob import processes
from spamjob.errors import SpamjobError


class Recorder:
    calls: list = []

    def __init__(self, *args, **kwargs):
        Recorder.calls.append(kwargs)


def test_accelerator_and_partial_state_pass_the_timeout(monkeypatch):
    monkeypatch.setattr(accelerate, "Accelerator", Recorder)
    monkeypatch.setattr(accelerate, "PartialState", Recorder)
    monkeypatch.delenv(processes.TIMEOUT_ENV, raising=False)
    Recorder.calls = []
    processes.accelerator(cpu=True, mixed_precision="no")
    (handler,) = Recorder.calls[0]["kwargs_handlers"]
    assert handler.to_kwargs() == {"timeout": timedelta(minutes=60)} and Recorder.calls[0]["cpu"] is True
    monkeypatch.setenv(processes.TIMEOUT_ENV, "90")
    processes.partial_state()
    assert Recorder.calls[1] == {"timeout": timedelta(minutes=90)}


def test_train_and_score_start_their_processes_through_it(monkeypatch, data_dir, classifier_dir, tmp_path):
    from spamjob.config import TrainConfig
    from spamjob.scoring.config import ScoreConfig
    from spamjob.scoring.job import main as score
    from spamjob.training.job import main as train

    made = []
    real = processes.accelerator
    monkeypatch.setattr(processes, "accelerator", lambda **options: made.append(options) or real(**options))
    train(
        TrainConfig(
            data=str(data_dir),
            out=str(tmp_path / "run"),
            weights="random",
            n_layers=1,
            emb_dim=32,
            n_heads=2,
            epochs=1,
            eval_freq=1000,
        )
    )
    score(
        ScoreConfig(
            inputs=(str(data_dir / "test.csv"),), model=str(classifier_dir), out=str(tmp_path / "s"), progress=False
        )
    )
    assert len(made) == 2 and all("cpu" in options for options in made)


@pytest.mark.parametrize("raw", ["0", "-5", "ten"])
def test_a_bad_timeout_is_one_line(monkeypatch, raw):
    monkeypatch.setenv(processes.TIMEOUT_ENV, raw)
    with pytest.raises(SpamjobError, match="SPAMJOB_COLLECTIVE_TIMEOUT_MIN must be a positive number"):
        processes.collective_timeout()
