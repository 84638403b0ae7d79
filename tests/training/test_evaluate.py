"""spamjob.training.evaluate: loss and accuracy sums over a loader (any number of processes sum to
the same figures), and the operating point chosen on validation and applied to test."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from spamjob.training.evaluate import evaluate_sums, operating_point
from spamjob.training.loaders import RankSlice, make_loader

IDS = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15], [16, 17, 18, 19], [20], [21, 22, 23], [24, 25]]


def _shard() -> RankSlice:
    return RankSlice("train", IDS, torch.tensor([i % 2 for i in range(len(IDS))]), n_total=len(IDS), truncated_total=0)


class _Fixed(torch.nn.Module):
    """Logits that depend only on the first token: known losses and predictions."""

    def forward(self, input_ids, lengths):
        return torch.stack([input_ids[:, 0].float() % 3, torch.ones(len(input_ids))], dim=1)


def test_evaluate_sums_counts_examples_and_batches():
    loader = make_loader(_shard(), 3, "dynamic", 8, train=False)
    sums = evaluate_sums(_Fixed(), loader, "cpu", contextlib.nullcontext)
    first = torch.tensor([s[0] for s in IDS])
    logits = torch.stack([first.float() % 3, torch.ones(8)], dim=1)
    labels = _shard().labels
    losses = F.cross_entropy(logits, labels, reduction="none")
    batch_means = sum(losses[i : i + 3].mean() for i in range(0, 8, 3))
    expected = [batch_means.item(), 3, losses.sum().item(), (logits.argmax(-1) == labels).sum().item(), 8]
    torch.testing.assert_close(sums, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert evaluate_sums(_Fixed(), loader, "cpu", contextlib.nullcontext, num_batches=2)[[1, 4]].tolist() == [2, 6]


def test_the_operating_point_is_chosen_on_validation_and_applied_to_test():
    rng = np.random.default_rng(0)
    val_y, test_y = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    val_p = np.clip(0.2 + 0.1 * val_y + rng.normal(0, 0.05, 200), 0, 1)  # separable at ~0.25, not at 0.5
    test_p = np.clip(0.2 + 0.1 * test_y + rng.normal(0, 0.05, 200), 0, 1)
    op = operating_point({"validation": (val_p, val_y), "test": (test_p, test_y)}, "f1")
    assert 0.15 < op["threshold"] < 0.35 and op["rule_met"]
    at = op["threshold"]
    assert op["test"]["accuracy"] == ((test_p > at) == test_y).mean()
    assert op["test_at_0.5"]["accuracy"] == ((test_p > 0.5) == test_y).mean() < op["test"]["accuracy"]
    assert op["validation_curve"] is not None
