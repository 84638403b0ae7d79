"""Drift against the classifier's training profile or an earlier output: PSI and rates, report,
metrics, and --fail-on-drift's exit status 3 after the output is committed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import metric_values, report, score

from spamjob.scoring import drift
from spamjob.scoring.report import Counts


def counts(scores: list[int], lengths: list[int], spam: int = 0) -> Counts:
    c = Counts(rows_read=sum(scores), rows_scored=sum(scores), predicted_spam=spam)
    c.scores = scores + [0] * (202 - len(scores))
    c.lengths = lengths + [0] * (22 - len(lengths))
    return c


def test_psi_is_zero_for_the_same_rows_and_grows_with_the_shift():
    ref = drift.profile(counts([10] * 202, [5, 5, 5]), "ref")
    assert drift.compare(ref, ref)["score_psi"] == 0 and drift.compare(ref, ref)["token_length_psi"] == 0
    moved = drift.profile(counts([0] * 101 + [20] * 101, [0, 5, 10]), "now")
    d = drift.compare(ref, moved)
    assert d["score_psi"] > 0.25 and d["token_length_psi"] > 0.25
    assert drift.decile_groups(ref["scores"]).max() == drift.QUANTILES - 1  # ten groups of equal mass


def test_the_natural_mix_and_the_exit_rule():
    ham, spam = (drift.profile(counts(s, [1], p), n) for s, p, n in (([10, 0], 0, "ham"), ([0, 10], 10, "spam")))
    mix = drift.mixed(ham, spam, 0.25, "mix")
    assert mix["scores"][:2] == [0.75, 0.25] and mix["spam_rate"] == 0.25
    assert drift.drifted({"drift": {"score_psi": 0.3, "reference": "r"}}, 0.25).startswith("drift: the PSI")
    assert drift.drifted({"drift": {"score_psi": 0.2, "reference": "r"}}, 0.25) is None
    assert drift.drifted({"drift": None}, 0.25) is None and drift.drifted({"drift": {"score_psi": 9}}, None) is None


def test_training_writes_a_profile_and_fail_on_drift_needs_one(classifier_dir, data_dir, tmp_path):
    prof = json.loads((classifier_dir / drift.PROFILE).read_text())
    assert prof["share_from"].startswith("prepare.json") and 0.13 < prof["spam_share"] < 0.14
    assert prof["profile"]["rows"] == 300 and abs(sum(prof["profile"]["scores"]) - 1) < 1e-9
    old = tmp_path / "old-classifier"
    shutil.copytree(classifier_dir, old)
    (old / drift.PROFILE).unlink()
    r = score(str(data_dir / "test.csv"), "--model", str(old), "--out", str(tmp_path / "o"), "--fail-on-drift", "0.25")
    assert r.exit_code == 1 and "--fail-on-drift needs a drift reference" in r.output
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def sharp_classifier(data_dir, tmp_path_factory) -> Path:
    """A tiny classifier trained long enough to tell spam from ham (~89% on test)."""
    from spamjob.config import TrainConfig
    from spamjob.training.job import main

    out = tmp_path_factory.mktemp("sharp") / "run"
    cfg = TrainConfig(
        data=str(data_dir),
        out=str(out),
        weights="random",
        n_layers=2,
        emb_dim=32,
        n_heads=2,
        epochs=6,
        lr=1e-3,
        trainable="all",
    )
    main(cfg)
    return out


def held_out(sms_path: Path, data_dir: Path, folder: Path) -> tuple[Path, Path]:
    """SMS rows no training step saw, at the corpus's own spam share; and its spam alone."""
    sms = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])
    seen = set(pd.concat([pd.read_csv(data_dir / f"{n}.csv") for n in ("train", "validation")]).Text)
    rows = sms[~sms.Text.isin(seen)]
    spam, ham = rows[rows.Label == "spam"], rows[rows.Label == "ham"]
    share = (sms.Label == "spam").mean()
    natural = pd.concat([spam, ham.sample(int(len(spam) * (1 - share) / share), random_state=0)])
    natural.to_csv(folder / "natural.csv", index=False)
    spam.to_csv(folder / "spam.csv", index=False)
    return folder / "natural.csv", folder / "spam.csv"


@pytest.mark.slow
def test_drift_on_natural_traffic_shifted_traffic_and_an_earlier_run(sms_path, data_dir, sharp_classifier, tmp_path):
    natural, spam_only = held_out(sms_path, data_dir, tmp_path)
    common = ["--model", str(sharp_classifier), "--fail-on-drift", "0.25"]
    r = score(str(natural), *common, "--out", str(tmp_path / "natural"))
    assert r.exit_code == 0, r.output
    calm = report(tmp_path / "natural")["drift"]
    assert calm["score_psi"] < 0.1 and abs(calm["spam_rate"]["change"]) < 0.05

    r = score(str(spam_only), *common, "--out", str(tmp_path / "shifted"))
    assert r.exit_code == 3 and "above --fail-on-drift 0.25" in r.output and "committed" in r.output
    shifted = tmp_path / "shifted"
    assert (shifted / "_SUCCESS").exists() and len(pd.read_parquet(shifted / "predictions")) == len(
        pd.read_csv(spam_only)
    )
    d = report(shifted)["drift"]
    assert d["score_psi"] > 0.25 and d["token_length_psi"] > 0.1 and d["spam_rate"]["now"] > 0.5
    assert "- drift from the held-out test split" in (shifted / "report.md").read_text()
    psi = metric_values((shifted / "metrics.prom").read_text())["spamjob_score_drift_psi"]
    assert psi[(str(shifted.resolve()), "scores")] == d["score_psi"]

    again = tmp_path / "again"  # the same input against the earlier run's output: no drift at all
    r = score(str(spam_only), *common, "--out", str(again), "--drift-reference", str(shifted))
    assert r.exit_code == 0, r.output
    same = report(again)["drift"]
    assert (same["score_psi"], same["token_length_psi"], same["spam_rate"]["change"]) == (0, 0, 0)
    assert same["reference"] == f"{shifted} (report.json)"
    assert np.isclose(sum(report(again)["profile"]["lengths"]), 1)
