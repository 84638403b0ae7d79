"""The reference's training plots: loss and accuracy against examples seen, with an epoch axis."""

from __future__ import annotations

import os
from pathlib import Path

from spamjob.fsutil import atomic_path


def plot_values(path: str | os.PathLike, examples: list[int], series: dict[str, list[float]], epochs: int,
                examples_per_epoch: int, ylabel: str) -> Path:
    """One PNG: each series against examples seen (bottom axis) and epochs (top axis)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    styles = ["-", "-."]
    for (label, values), style in zip(series.items(), styles * 4):
        ax.plot(examples, values, style, label=label)
    ax.set_xlabel("Examples seen")
    ax.set_ylabel(ylabel)
    ax.legend()
    if examples_per_epoch > 0:
        top = ax.secondary_xaxis("top", functions=(lambda x: x / examples_per_epoch, lambda e: e * examples_per_epoch))
        top.set_xlabel("Epochs")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def training_plots(run_dir: str | os.PathLike, history: list[dict], epochs: int, examples_per_epoch: int) -> list[Path]:
    """loss.png (every evaluation) and accuracy.png (every epoch) from history records."""
    run_dir = Path(run_dir)
    evals = [h for h in history if h["kind"] == "eval"]
    ends = [h for h in history if h["kind"] == "epoch"]
    out = []
    if evals:
        out.append(plot_values(
            run_dir / "loss.png", [h["examples_seen"] for h in evals],
            {"Training loss": [h["train_loss"] for h in evals], "Validation loss": [h["val_loss"] for h in evals]},
            epochs, examples_per_epoch, "Loss"))
    if ends:
        out.append(plot_values(
            run_dir / "accuracy.png", [h["examples_seen"] for h in ends],
            {"Training accuracy": [h["train_acc"] for h in ends], "Validation accuracy": [h["val_acc"] for h in ends]},
            epochs, examples_per_epoch, "Accuracy"))
    return out
