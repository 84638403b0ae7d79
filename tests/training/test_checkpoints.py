"""spamjob.training.checkpoints: which epoch checkpoints count, and when a run may resume (the end-to-end
kill-and-resume runs are in test_train.py)."""

from __future__ import annotations

import json

import pytest

from spamjob.config import TrainConfig
from spamjob.errors import SpamjobError
from spamjob.training.checkpoints import CHECKPOINTS, check_resume, checkpoint_dirs


def _epoch(out, n: int, complete: bool = True):
    folder = out / CHECKPOINTS / f"epoch-{n}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def test_completed_epochs_in_numeric_order(tmp_path):
    for n in (10, 2, 1):
        _epoch(tmp_path, n)
    _epoch(tmp_path, 11, complete=False)  # killed while it was written
    (tmp_path / CHECKPOINTS / ".epoch-12.tmp").mkdir()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["epoch-1", "epoch-2", "epoch-10"]
    assert checkpoint_dirs(tmp_path / "nothing-here") == []


def test_a_fresh_run_never_trains_over_checkpoints(tmp_path):
    check_resume(TrainConfig(out=str(tmp_path)), tmp_path)  # nothing there: fine
    _epoch(tmp_path, 1)
    with pytest.raises(SpamjobError, match="already holds a run with checkpoints; pass --resume"):
        check_resume(TrainConfig(out=str(tmp_path)), tmp_path)


def test_resume_needs_a_checkpoint_and_the_same_options(tmp_path):
    with pytest.raises(SpamjobError, match="--resume: no completed epoch checkpoint"):
        check_resume(TrainConfig(out=str(tmp_path), resume=True), tmp_path)
    _epoch(tmp_path, 1)
    saved = TrainConfig(out=str(tmp_path), lr=1e-4).to_dict()
    (tmp_path / CHECKPOINTS / "options.json").write_text(json.dumps(saved))
    check_resume(TrainConfig(out=str(tmp_path), lr=1e-4, resume=True, epochs=9), tmp_path)  # epochs may change
    with pytest.raises(SpamjobError, match="differ from the checkpointed run: lr, seed"):
        check_resume(TrainConfig(out=str(tmp_path), lr=2e-4, seed=7, resume=True), tmp_path)
