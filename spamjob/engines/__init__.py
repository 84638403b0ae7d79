"""What runs a scoring job (`spamjob score --engine`), above the scoring core: spamjob's own
processes (spamjob.scoring.job, `accelerate launch` or one process) or Ray Data
(`spamjob.engines.ray`, `pip install 'spamjob[ray]'`). Spark runs the core from its own entry
point (jobs/spark_score.py, `spamjob.engines.spark`, `pip install 'spamjob[spark]'`).

An engine is a function ScoreConfig -> report dict, one line of ENGINES (module, function, the
extra it needs). Only `run` imports an engine's module, when it is asked for: the core never
imports these modules or their libraries (tests/test_package.py).
"""

from __future__ import annotations

import importlib
from typing import Literal

from spamjob import extras

ENGINES = {
    "spamjob": ("spamjob.scoring.job", "main", None),
    "ray": ("spamjob.engines.ray", "run_job", "ray"),
}
EngineChoice = Literal[tuple(ENGINES)]  # the --engine option's values


def run(cfg) -> dict:
    """Score `cfg` (a ScoreConfig) on its engine; the report ({} on processes other than the main one)."""
    if cfg.dry_run:  # what the job would do and cost: spamjob.scoring.dry_run
        return importlib.import_module("spamjob.scoring.dry_run").main(cfg)
    module, function, extra = ENGINES[cfg.engine]
    if extra:
        extras.require(extra, f"--engine {cfg.engine}")
    return getattr(importlib.import_module(module), function)(cfg)
