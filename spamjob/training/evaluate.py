"""Evaluation during and after fine-tuning: loss and accuracy as integer counts summed over every
process (each example counted once whatever their number), the logits of the full splits, their
temperature (spamjob.calibration) and the operating point chosen on validation's calibrated
probabilities (spamjob.operating)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from spamjob.calibration import figures, fit_temperature, sigmoid
from spamjob.console import say
from spamjob.data import SPLITS
from spamjob.operating import ARGMAX, choose, counts_at, curve, parse_rule, thin
from spamjob.training.accelerated import unwrap
from spamjob.training.loaders import make_loader, to_device
from spamjob.training.setup import Run


def eval_pair(run: Run, num_batches: int, what: str) -> list[float]:
    """[train, validation] mean batch loss (`loss`) or accuracy over `num_batches` batches of each,
    summed over processes (a sync point)."""
    accelerator = run.accelerator
    model = unwrap(run.classifier)
    sums = torch.stack(
        [
            evaluate_sums(model, loader, accelerator.device, accelerator.autocast, num_batches)
            for loader in (run.train_loader, run.val_loader)
        ]
    )
    s = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    return (s[:, 0] / s[:, 1] if what == "loss" else s[:, 3] / s[:, 4]).tolist()


def _logits(model: torch.nn.Module, loader: DataLoader, device, autocast, num_batches: int | None = None):
    """(fp32 logits, labels) of (at most num_batches) batches, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            labels = batch.pop("labels").to(device)
            with torch.no_grad(), autocast():
                logits = model(**to_device(batch, device)).float()
            yield logits, labels
    finally:
        model.train(was_training)


def evaluate_sums(
    model: torch.nn.Module,
    loader: DataLoader,
    device,
    autocast,
    num_batches: int | None = None,
    probs: list | None = None,
) -> torch.Tensor:
    """Sums over (at most num_batches) batches: [batch-mean loss, batches, example loss, correct, examples];
    with `probs`, (z, label) tensors of every batch are appended to it: z the spam logit less the ham
    logit (P(spam) = sigmoid(z))."""
    out = torch.zeros(5, dtype=torch.float64, device=device)  # summed on the device: one transfer at the end
    one = torch.ones((), dtype=torch.float64, device=device)
    for logits, labels in _logits(model, loader, device, autocast, num_batches):
        losses = F.cross_entropy(logits, labels, reduction="none").double()
        out += torch.stack(
            [losses.mean(), one, losses.sum(), (logits.argmax(-1) == labels).sum().double(), one * len(labels)]
        )
        if probs is not None:
            probs.append((logits[:, 1] - logits[:, 0], labels))
    return out.cpu()


def evaluate(run: Run) -> dict:
    """Accuracy and loss on the full splits (every row of every slice once, sums over processes), and
    the operating point: the threshold run.cfg.threshold_rule picks on validation, applied to test."""
    accelerator = run.accelerator
    model = unwrap(run.classifier)
    final, probs = {}, {}
    for name in SPLITS:
        rank_slice = run.slices[name]
        # Counts and example-loss sums do not depend on batching; on cached activations the
        # pooled last block is cheap, so larger batches only save per-batch overhead.
        batch_size = run.cfg.batch_size if rank_slice.cache is None else max(run.cfg.batch_size, 64)
        loader = make_loader(rank_slice, batch_size, run.cfg.padding, run.max_length, train=False)
        pairs = [] if name != "train" else None
        s = accelerator.reduce(
            evaluate_sums(model, loader, accelerator.device, accelerator.autocast, probs=pairs).to(accelerator.device),
            "sum",
        ).cpu()
        final[name] = {
            "accuracy": s[3].item() / s[4].item(),
            "loss": s[2].item() / s[4].item(),
            "examples": int(s[4].item()),
            "truncated": rank_slice.truncated_total,
        }
        if pairs is not None:
            probs[name] = _gather_probs(pairs, accelerator)
    final["calibration"] = calibrate(probs, run.cfg.calibration)
    temperature = final["calibration"]["temperature"]
    calibrated = {name: (sigmoid(z / temperature), y) for name, (z, y) in probs.items()}
    final["operating_point"] = operating_point(calibrated, run.cfg.threshold_rule)
    return final


def calibrate(logits: dict[str, tuple[np.ndarray, np.ndarray]], method: str) -> dict:
    """The temperature fitted on validation (1.0 for `none`, or without validation rows), and ECE and
    Brier score before and after it on validation and test (spamjob.calibration)."""
    val_z, val_y = logits["validation"]
    temperature = fit_temperature(val_z, val_y) if method == "temperature" else 1.0
    return {
        "method": method,
        "temperature": round(temperature, 6),
        **{name: figures(z, y, round(temperature, 6)) for name, (z, y) in logits.items()},
    }


def _gather_probs(pairs: list, accelerator) -> tuple[np.ndarray, np.ndarray]:
    """(z, label) of every row of a split, from all processes (each row once)."""
    from accelerate.utils import gather_object

    p = torch.cat([a for a, _ in pairs]).double().cpu().numpy() if pairs else np.empty(0)
    y = torch.cat([b for _, b in pairs]).cpu().numpy() if pairs else np.empty(0, dtype=np.int64)
    if accelerator.num_processes > 1:
        parts = gather_object([(p, y)])
        p, y = np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    return p, y


def operating_point(probs: dict[str, tuple[np.ndarray, np.ndarray]], rule: str) -> dict:
    """The threshold `rule` picks on validation, its figures on validation and test (and test at
    0.5, the argmax), and the validation precision/recall curve (thinned for metrics.json)."""
    val_p, val_y = probs["validation"]
    chosen = choose(val_p, val_y, parse_rule(rule))
    if not chosen["rule_met"]:
        say(f"operating point: no threshold meets {chosen['rule']} on the validation split; using 0.5 (argmax)")
    test_p, test_y = probs["test"]
    return {
        **chosen,
        "test": counts_at(test_p, test_y, chosen["threshold"]),
        "test_at_0.5": counts_at(test_p, test_y, ARGMAX),
        "validation_curve": thin(curve(val_p, val_y)) if (val_y == 1).any() else None,
    }
