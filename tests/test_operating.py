"""spamjob.operating: the threshold each rule picks, on synthetic scores and on a trained classifier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spamjob.errors import SpamjobError
from spamjob.operating import ARGMAX, Rule, choose, counts_at, curve, parse_rule
from spamjob.scoring.runtimes.pytorch import spam_probability


def brute_force(probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Figures at every threshold that can matter: each distinct probability and just below the smallest."""
    candidates = np.r_[np.unique(probs), probs.min() / 2]
    return [{"threshold": t, **counts_at(probs, labels, t)} for t in candidates]


def scores(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(0, 1.5, n) + 1.2 * (2 * labels - 1)
    return np.round(1 / (1 + np.exp(-logits)), 3), labels  # rounded: ties between rows too


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_rule_picks_the_best_threshold_that_meets_it(seed):
    probs, labels = scores(seed)
    table = brute_force(probs, labels)
    f1 = choose(probs, labels, parse_rule("f1"))
    assert f1["rule_met"] and f1["validation"]["f1"] == pytest.approx(max(r["f1"] for r in table), abs=1e-12)
    for kind, floor, goal in (("precision", 0.9, "recall"), ("recall", 0.95, "precision")):
        chosen = choose(probs, labels, Rule(kind, floor))
        at = counts_at(probs, labels, chosen["threshold"])
        assert chosen["rule_met"] and at[kind] >= floor and at == chosen["validation"]
        best = max(r[goal] for r in table if r[kind] >= floor and r["flagged"])
        assert at[goal] == pytest.approx(best, abs=1e-12)


def test_thresholds_sit_between_distinct_probabilities():
    probs, labels = np.array([0.9, 0.8, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0, 0])
    c = curve(probs, labels)
    np.testing.assert_allclose(c["threshold"], [0.85, 0.55, 0.2, 0.05])
    np.testing.assert_allclose(c["precision"], [1, 2 / 3, 0.5, 0.4])
    np.testing.assert_allclose(c["recall"], [0.5, 1, 1, 1])
    # a tie in F1 goes to the higher threshold: fewer messages flagged
    assert choose(np.array([0.9, 0.1]), np.array([1, 0]), parse_rule("f1"))["threshold"] == 0.5


def test_an_unmeetable_rule_keeps_the_argmax():
    probs, labels = np.array([0.9, 0.8, 0.2]), np.array([0, 1, 0])  # the top score is ham
    chosen = choose(probs, labels, parse_rule("precision>=0.99"))
    assert chosen["threshold"] == ARGMAX and chosen["rule_met"] is False
    no_spam = choose(probs, np.zeros(3, dtype=int), parse_rule("f1"))
    assert no_spam["threshold"] == ARGMAX and not no_spam["rule_met"]
    assert choose(probs, labels, parse_rule("argmax"))["threshold"] == ARGMAX


@pytest.mark.parametrize("text", ["f2", "precision>0.9", "recall>=0", "precision>=1.01", "recall>=x"])
def test_bad_rules_are_one_line_errors(text):
    with pytest.raises(SpamjobError, match="threshold rule must be f1 | precision>=X"):
        parse_rule(text)
    assert str(parse_rule(" Precision >= 0.990 ")) == "precision>=0.99"


def test_the_trained_threshold_is_the_best_f1_on_validation(classifier_dir, data_dir):
    """Recomputed with scoring's path on the validation split, the saved threshold meets its rule."""
    from spamjob.artifact import load_classifier

    clf = load_classifier(classifier_dir)
    config = json.loads((classifier_dir / "config.json").read_text())
    assert config["operating_point"]["rule"] == "f1" and clf.threshold == config["operating_point"]["threshold"]
    val = pd.read_csv(data_dir / "validation.csv")
    probs = np.array(spam_probability(clf, val["Text"].tolist())[0])
    labels = val["Label"].to_numpy()
    at = counts_at(probs, labels, clf.threshold)
    assert at["f1"] == pytest.approx(max(r["f1"] for r in brute_force(probs, labels)), abs=1e-12)
    metrics = json.loads((classifier_dir / "metrics.json").read_text())["operating_point"]
    assert at == metrics["validation"]


def test_reference_preset_keeps_the_argmax():
    from spamjob.config import TrainConfig

    assert TrainConfig(preset="reference").resolved().threshold_rule == "argmax"
    assert TrainConfig().resolved().threshold_rule == "f1"
    with pytest.raises(SpamjobError, match="threshold-rule must be"):
        TrainConfig(threshold_rule="best")
