"""`spamjob run`: fetch -> prepare -> fine-tune -> score the test split -> report, resumable by stage."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from spamjob import __version__
from spamjob.config import TrainConfig
from spamjob.console import say
from spamjob.data import default_source, prepare, resolve_source
from spamjob.engines import run as run_score
from spamjob.fsutil import write_json
from spamjob.processes import partial_state
from spamjob.scoring.config import ScoreConfig
from spamjob.text import load_tokenizer
from spamjob.training.checkpoints import checkpoint_dirs
from spamjob.training.job import main as run_train
from spamjob.training.job import trained_line
from spamjob.weights import resolve_weights


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

    paths, state, t0 = JobPaths(Path(out)), partial_state(), time.perf_counter()
    src = source or default_source()
    stages = {"fetch": _fetch(src, train_cfg, state)}
    stages["prepare"] = _prepare(src, paths, train_cfg.seed, state)
    stages["train"] = _train(paths, train_cfg, state)
    stages["score"], report = _score(paths, replace(score_cfg, label_column=score_cfg.label_column or "Label"))
    summary = {
        "spamjob_version": __version__,
        "stages": stages,
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "data": str(paths.data),
        "model": str(paths.model),
        "scored": str(paths.scored),
        "report": str(paths.scored / "report.md"),
        "test_accuracy": report.get("accuracy"),
        "threshold": (report.get("threshold") or {}).get("value"),
    }
    if state.is_main_process:
        write_json(paths.root / "run.json", summary)
    return summary


def _fetch(source: str, train_cfg: TrainConfig, state) -> str:
    """Fetch (or find offline) everything before any work: no half-done job for want of a file,
    and never a silent fall-back to random weights."""

    with state.main_process_first():
        weights_dir = resolve_weights(train_cfg.weights, train_cfg.model, cache=train_cfg.weights_cache)
        load_tokenizer(train_cfg.tokenizer, search=[weights_dir] if weights_dir else [])
        resolve_source(source, progress=state.is_main_process)
    return "done"


def _prepare(source: str, paths: JobPaths, seed: int, state) -> str:

    if (paths.data / "prepare.json").is_file():
        return "skipped (done before)"
    if state.is_main_process:
        say(prepare(source, paths.data, seed=seed).summary())
    state.wait_for_everyone()
    return "done"


def _train(paths: JobPaths, train_cfg: TrainConfig, state) -> str:
    """Fine-tune, or resume a killed training from its last epoch."""

    if (paths.model / "metrics.json").is_file():
        return "skipped (done before)"
    resume = bool(checkpoint_dirs(paths.model))
    metrics = run_train(replace(train_cfg, resume=resume))
    say(trained_line(metrics, str(paths.model)))
    return "resumed" if resume else "done"


def _score(paths: JobPaths, score_cfg: ScoreConfig) -> tuple[str, dict]:
    """Score the test split with its labels: the test-accuracy report."""

    if (paths.scored / "_SUCCESS").is_file():
        return "skipped (done before)", json.loads((paths.scored / "report.json").read_text())
    return "done", run_score(score_cfg)
