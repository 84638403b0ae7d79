"""Calibrated probabilities: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
Networks") and the figures that say how well probabilities mean what they say.

One scalar T, fitted on the validation split by minimising the negative log-likelihood of
P(spam) = sigmoid(z / T), z the difference of the two logits (the classifier's softmax over two
classes is exactly sigmoid(z)). Dividing both logits by T is dividing the head's weights and bias
by it: `spamjob.artifact` does that when it loads a classifier whose config.json records T, so
every runtime, engine and export computes calibrated probabilities, and the argmax (T > 0) is
unchanged. Expected calibration error over 15 equal-width bins, the Brier score, and the
reliability diagram's points come from probabilities and labels here, or from binned counts
(`binned`: a scoring report's).
"""

from __future__ import annotations

import numpy as np

BINS = 15  # ECE and reliability bins, equal width in probability


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # (no overflow warnings)


def fit_temperature(z: np.ndarray, y: np.ndarray, steps: int = 50) -> float:
    """The T > 0 minimising the mean NLL of sigmoid(z / T) against labels y (0/1): Newton's method
    on s = 1/T, where the NLL is convex; 1.0 where it cannot be fitted (one class, no signal)."""
    z, sign = np.asarray(z, dtype=np.float64), 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    if len(z) == 0 or len(np.unique(sign)) < 2 or not np.any(z):
        return 1.0
    margin = sign * z
    s = 1.0
    for _ in range(steps):
        p_wrong = sigmoid(-margin * s)  # d/ds of log(1 + exp(-margin s)) is -margin p_wrong
        grad = -np.mean(margin * p_wrong)
        hess = np.mean(margin**2 * p_wrong * (1 - p_wrong))
        if hess <= 1e-12:
            break
        step = grad / hess
        s = float(np.clip(s - step, 1e-3, 1e3))
        if abs(step) < 1e-10 * max(s, 1.0):
            break
    return 1.0 / s


def reliability(p: np.ndarray, y: np.ndarray) -> dict:
    """Per equal-width bin: rows, mean predicted P(spam), observed spam share."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
    rows = np.bincount(bins, minlength=BINS)
    return _points(rows, np.bincount(bins, p, BINS), np.bincount(bins, y, BINS))


def binned(by_label: list[list[int]], edges: np.ndarray) -> dict:
    """`reliability` from counts of rows per label and fine probability bin (a report's `by_label`:
    bin b holds edges[b-1] < P <= edges[b]), each bin's rows taken at its centre."""
    bounds = np.concatenate([[0.0], edges, [1.0]])
    centres = (bounds[:-1] + bounds[1:]) / 2
    ham, spam = (np.asarray(c, dtype=np.float64) for c in by_label)
    target = np.minimum((centres * BINS).astype(np.int64), BINS - 1)
    rows = np.bincount(target, ham + spam, BINS)
    return _points(rows, np.bincount(target, (ham + spam) * centres, BINS), np.bincount(target, spam, BINS))


def _points(rows, predicted_sum, spam_sum) -> dict:
    rows = np.asarray(rows, dtype=np.float64)
    seen = rows > 0
    mean_p = np.where(seen, predicted_sum / np.maximum(rows, 1), np.nan)
    observed = np.where(seen, spam_sum / np.maximum(rows, 1), np.nan)
    total = rows.sum()
    ece = float(np.nansum(rows / max(total, 1) * np.abs(mean_p - observed))) if total else None
    return {
        "bin_edges": [i / BINS for i in range(BINS + 1)],
        "rows": [int(r) for r in rows],
        "mean_predicted": [None if np.isnan(v) else round(float(v), 6) for v in mean_p],
        "observed": [None if np.isnan(v) else round(float(v), 6) for v in observed],
        "ece": None if ece is None else round(ece, 6),
    }


def brier(p: np.ndarray, y: np.ndarray) -> float | None:
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return round(float(np.mean((p - y) ** 2)), 6) if len(p) else None


def figures(z: np.ndarray, y: np.ndarray, temperature: float) -> dict:
    """ECE and Brier score of a split before and after the temperature, and its reliability after."""
    before, after = sigmoid(z), sigmoid(np.asarray(z) / temperature)
    return {
        "ece_before": reliability(before, y)["ece"],
        "ece_after": reliability(after, y)["ece"],
        "brier_before": brier(before, y),
        "brier_after": brier(after, y),
        "reliability_before": reliability(before, y),
        "reliability_after": reliability(after, y),
    }
