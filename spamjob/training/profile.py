"""The classifier's reference profile for drift (spamjob.scoring.drift): its held-out test split
scored by spamjob's own scorer, each class on its own, mixed at the natural spam share (from
prepare.json's counts before balancing; else the test split's own share), into profile.json."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from spamjob.data import load_split
from spamjob.fsutil import read_json
from spamjob.scoring import drift
from spamjob.scoring.core import BatchScorer
from spamjob.scoring.report import Counts, count_rows


def write_profile(folder: Path, data_dir: Path, device) -> dict:
    """profile.json in the classifier folder `folder`; returns what metrics.json records of it."""
    t0 = time.perf_counter()
    test = load_split(data_dir, "test")
    share, share_from = natural_share(data_dir, test)
    scorer = BatchScorer(folder, device=device, runtime="torch", workers=1)
    try:
        ham, spam = (_counts(scorer, test.Text[test.Label == label]) for label in (0, 1))
    finally:
        scorer.close()
    record = drift.write_reference(folder, ham, spam, share, share_from)
    return {"spam_share": share, "rows": record["profile"]["rows"], "seconds": round(time.perf_counter() - t0, 3)}


def natural_share(data_dir: Path, test) -> tuple[float, str]:
    """The share of spam in real traffic: the dataset's before balancing (prepare.json), else the test split's."""
    prep = data_dir / "prepare.json"
    before = read_json(prep).get("counts_before") if prep.is_file() else None
    if before and sum(before.values()):
        return before["spam"] / sum(before.values()), "prepare.json: the dataset before balancing"
    return float((test.Label == 1).mean()) if len(test) else 0.0, "the test split's own share"


def _counts(scorer: BatchScorer, texts) -> Counts:
    """A class's held-out rows (at most drift.REFERENCE_ROWS, sampled with a fixed seed), scored and counted."""
    texts = texts.astype(str).tolist()
    if len(texts) > drift.REFERENCE_ROWS:
        keep = np.random.default_rng(0).choice(len(texts), drift.REFERENCE_ROWS, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    window = scorer.prepare(pa.array(texts, pa.large_string()))
    columns = scorer.output_columns(window, scorer.predict(window) if window.ok else np.empty(0))
    return count_rows(columns, None, window.token_lengths())
