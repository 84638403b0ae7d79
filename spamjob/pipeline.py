"""`spamjob run`: fetch -> prepare -> fine-tune -> score the test split -> report, resumable by stage."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from spamjob import __version__
from spamjob.config import ScoreConfig, TrainConfig
from spamjob.console import say
from spamjob.fsutil import write_json

@dataclass(frozen=True)
class JobPaths:
    """Where `spamjob run` puts each stage's output inside its job folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def scored(self) -> Path:
        return self.root / "scored"

    @property
    def test_split(self) -> Path:
        return self.data / "test.csv"


def run(out: str | os.PathLike, source: str | None, train_cfg: TrainConfig, score_cfg: ScoreConfig) -> dict:
    """The main job. Every stage that finished before is skipped; a killed training resumes.

    The stage configs come with the paths of `JobPaths(out)` (data, model, scored, the test split).
    """
    from accelerate import PartialState

    from spamjob.data import default_source, prepare, resolve_source
    from spamjob.score import main as run_score
    from spamjob.text import load_tokenizer
    from spamjob.checkpoints import checkpoint_dirs
    from spamjob.train import main as run_train
    from spamjob.weights import resolve_weights

    paths = JobPaths(Path(out))
    data_dir, model_dir, scored_dir = paths.data, paths.model, paths.scored
    state = PartialState()
    t0 = time.perf_counter()
    score_cfg = replace(score_cfg, label_column=score_cfg.label_column or "Label")

    # 1. Fetch (or find offline) everything before any work: no half-done job for want of a file,
    #    and never a silent fall-back to random weights.
    with state.main_process_first():
        weights_dir = resolve_weights(train_cfg.weights, train_cfg.model, cache=train_cfg.weights_cache)
        load_tokenizer(train_cfg.tokenizer, search=[weights_dir] if weights_dir else [])
        src = source or default_source()
        resolve_source(src, progress=state.is_main_process)
    stages = {"fetch": "done"}

    # 2. Prepare the splits.
    if (data_dir / "prepare.json").is_file():
        stages["prepare"] = "skipped (done before)"
    else:
        if state.is_main_process:
            result = prepare(src, data_dir, seed=train_cfg.seed)
            say(result.summary())
        state.wait_for_everyone()
        stages["prepare"] = "done"

    # 3. Fine-tune (resume a killed run).
    if (model_dir / "metrics.json").is_file():
        stages["train"] = "skipped (done before)"
    else:
        resume = bool(checkpoint_dirs(model_dir))
        metrics = run_train(replace(train_cfg, resume=resume))
        stages["train"] = "resumed" if resume else "done"
        if state.is_main_process:
            from spamjob.train import summary

            say(summary(metrics, str(model_dir)))

    # 4. Score the test split with its labels: the test-accuracy report.
    if (scored_dir / "_SUCCESS").is_file():
        stages["score"] = "skipped (done before)"
        report = json.loads((scored_dir / "report.json").read_text())
    else:
        report = run_score(score_cfg)
        stages["score"] = "done"

    summary = {
        "spamjob_version": __version__, "stages": stages, "wall_time_s": round(time.perf_counter() - t0, 3),
        "data": str(data_dir), "model": str(model_dir), "scored": str(scored_dir),
        "report": str(scored_dir / "report.md"), "test_accuracy": report.get("accuracy"),
    }
    if state.is_main_process:
        write_json(paths.root / "run.json", summary)
    return summary
