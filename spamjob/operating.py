"""The operating point: the P(spam) threshold a classifier flags spam above, chosen on the
validation split by a rule (`f1`, `precision>=X`, `recall>=X`, `argmax`).

A message is spam when P(spam) > threshold; at 0.5 that is the argmax of the two logits (a
tie is ham), as training's accuracy counts it. Candidate thresholds lie halfway between
consecutive distinct validation probabilities, so a probability that moves by float
rounding between training and scoring does not change sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from spamjob.errors import SpamjobError

ARGMAX = 0.5
RULE_HELP = "f1 | precision>=X | recall>=X | argmax (X in (0, 1])"


@dataclass(frozen=True)
class Rule:
    """`f1`, `argmax`, or a floor on `precision` / `recall`."""

    kind: str
    floor: float | None = None

    def __str__(self) -> str:
        return self.kind if self.floor is None else f"{self.kind}>={self.floor:g}"


def parse_rule(text: str) -> Rule:
    """`precision>=0.99` -> Rule("precision", 0.99); a one-line error for anything else."""
    t = text.strip().lower().replace(" ", "")
    if t in ("f1", "argmax"):
        return Rule(t)
    m = re.fullmatch(r"(precision|recall)>=([0-9]*\.?[0-9]+)", t)
    if not m or not 0 < float(m[2]) <= 1:
        raise SpamjobError(f"threshold rule must be {RULE_HELP}, got {text!r}")
    return Rule(m[1], float(m[2]))


def counts_at(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Accuracy, precision, recall and F1 of the spam class with spam = P(spam) > threshold."""
    predicted = probs > threshold
    tp = int((predicted & (labels == 1)).sum())
    fp, fn = int(predicted.sum()) - tp, int((labels == 1).sum()) - tp
    tn = len(labels) - tp - fp - fn
    return summarize(tn, fp, fn, tp)


def summarize(tn: int, fp: int, fn: int, tp: int) -> dict:
    """The spam class's figures from confusion counts (precision 0 when nothing is flagged)."""
    n = tn + fp + fn + tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flagged": tp + fp,
        "examples": n,
    }


def curve(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at every candidate threshold (descending thresholds: the k-th
    flags the rows with the k highest distinct probabilities)."""
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], labels[order].astype(np.int64)
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # last row of each run of equal probabilities
    below = np.r_[p[last[:-1] + 1], 0.0]  # the next smaller probability (0 after the smallest)
    threshold = (p[last] + below) / 2
    tp = np.cumsum(y)[last]
    flagged = last + 1
    positives = max(int(y.sum()), 1)
    precision, recall = tp / flagged, tp / positives
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    keep = p[last] > threshold  # a probability of exactly 0 cannot be flagged by `>`
    return {"threshold": threshold[keep], "precision": precision[keep], "recall": recall[keep], "f1": f1[keep]}


def choose(probs: np.ndarray, labels: np.ndarray, rule: Rule) -> dict:
    """The threshold `rule` picks on (probs, labels); 0.5 with `rule_met` false when none meets it.

    f1: the highest F1; precision>=X: the highest recall among thresholds meeting the floor;
    recall>=X: the highest precision among those meeting it. Ties go to the higher threshold
    (fewer messages flagged)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    threshold, met = ARGMAX, True
    if rule.kind != "argmax":
        c = curve(probs, labels) if (labels == 1).any() else None
        ok = (
            None
            if c is None
            else {
                "f1": c["f1"] > 0,
                "precision": c["precision"] >= (rule.floor or 0),
                "recall": c["recall"] >= (rule.floor or 0),
            }[rule.kind]
        )
        met = ok is not None and bool(ok.any())
        if met:
            goal = {"f1": c["f1"], "precision": c["recall"], "recall": c["precision"]}[rule.kind]
            best = np.lexsort((c["threshold"], np.where(ok, goal, -1.0)))[-1]
            threshold = float(c["threshold"][best])
    return {
        "rule": str(rule),
        "threshold": threshold,
        "rule_met": met,
        "validation": counts_at(probs, labels, threshold),
    }


def thin(c: dict[str, np.ndarray], points: int = 200) -> dict[str, list[float]]:
    """At most `points` evenly spaced points of a curve, as lists (for JSON)."""
    n = len(c["threshold"])
    idx = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int)) if n else np.array([], dtype=int)
    return {k: [round(float(x), 6) for x in v[idx]] for k, v in c.items()}


def threshold_of(config: dict) -> float:
    """The classifier's threshold (config.json's operating_point; artifacts written before it: 0.5)."""
    return float((config.get("operating_point") or {}).get("threshold", ARGMAX))


def threshold_record(config: dict, given: float | None) -> dict:
    """The threshold predictions use and where it came from, for a report: `given` (--threshold)
    or the classifier's (`config`: its config.json)."""
    if given is not None:
        return {"value": float(given), "source": "--threshold"}
    op = config.get("operating_point")
    return {
        "value": threshold_of(config),
        "source": f"the classifier's, rule {op['rule']} on validation" if op else "argmax (no operating point)",
    }
