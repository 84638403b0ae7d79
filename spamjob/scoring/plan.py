"""A scoring job's plan: everything that decides its output files, written first into --out
(spamjob.scoring.output). A rerun with the same plan resumes; any other value is another job."""

from __future__ import annotations

from pathlib import Path

from spamjob import __version__
from spamjob.scoring.config import ScoreConfig
from spamjob.stores import is_uri


def build(
    cfg: ScoreConfig, model_sha256: str | None, inputs: list[dict], predictions: dict, engine: str | None = None
) -> dict:
    """The plan of scoring `inputs` (their fingerprints) with the classifier in cfg.model;
    `predictions`: the resolved settings that change a prediction (precision, int8, threshold).
    An --incremental output's plan names no inputs: every run of it has the same plan."""
    plan = {"engine": engine} if engine else {}
    return {
        **plan,
        "spamjob_version": __version__,
        "model": model_record(cfg.model, model_sha256),
        **({"incremental": True} if cfg.incremental else {"inputs": inputs}),
        "options": {**cfg.plan_options(), **predictions},
    }


def prediction_settings(mixed_precision: str, quantize: str | None, threshold: float, runtime) -> dict:
    """The settings that change a prediction, as a plan holds them (`build`'s `predictions`): spamjob's
    processes give them resolved, Ray as asked (`auto` resolves once the cluster's GPUs are known)."""
    return {"mixed_precision": mixed_precision, "quantize": quantize, "threshold": threshold, "runtime": runtime}


def model_record(model: str, sha256: str | None) -> dict:
    """The classifier as plans and reports name it: its folder and its weights' hash."""
    return {"path": model if is_uri(model) else str(Path(model).resolve()), "sha256": sha256}
