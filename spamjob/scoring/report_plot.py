"""report.png: the scoring report's figures (spamjob.scoring.report builds the report): with
labels, the confusion matrix and the precision/recall curve; the spam-probability histogram; with
a drift reference, both score distributions. Drawn with matplotlib's object API (no pyplot). The
figures' formatting (`pct`, `threshold_name`) serves report.md too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spamjob.console import say
from spamjob.fsutil import atomic_path


def pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def threshold_name(r: dict) -> str:
    return f"{r['threshold']['value']:.4g} (used)" if r.get("threshold") else "as predicted"


def plot(path: Path, r: dict) -> Path | None:
    """Confusion matrix and precision/recall curve (when labels exist) and spam-probability histogram;
    None, with a warning, where matplotlib cannot be imported (the figures are in report.json)."""
    try:
        from matplotlib.figure import Figure  # not pyplot: no GUI state, and 0.2 s less to import
    except ImportError as e:
        say(f"warning: no {path.name}: matplotlib cannot be imported ({e}); report.json and report.md are complete")
        return None

    with_labels, with_drift = r["accuracy"] is not None, r.get("drift") is not None
    panels = 1 + 3 * with_labels + with_drift
    fig = Figure(figsize=(4.3 * panels + 0.7, 3.5))
    axes = fig.subplots(1, panels)
    axes = list(axes) if panels > 1 else [axes]
    if with_labels:
        _confusion_panel(axes.pop(0), r)
        _pr_panel(axes.pop(0), r)
        reliability_panel(axes.pop(0), {"these rows": r["labels"]["reliability"]})
    if with_drift:
        _drift_panel(axes.pop(), r)
    ax = axes[0]
    h = r["spam_probability_histogram"]
    edges = h["bin_edges"]
    ax.bar(edges[:-1], h["counts"], width=edges[1] - edges[0], align="edge")
    ax.set_xlabel("spam probability")
    ax.set_ylabel("rows")
    ax.set_title("predicted spam probability")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _drift_panel(ax, r: dict) -> None:
    """The scores' distribution against the reference's (fine bins, by logit), with the PSI."""
    logits = np.linspace(-10, 10, len(r["drift"]["reference_scores"]) - 1)
    centres = np.concatenate([[-10.5], (logits[:-1] + logits[1:]) / 2, [10.5]])
    ref = r["drift"]["reference"]
    ax.plot(centres, r["drift"]["reference_scores"], "-", lw=1.2, label="reference")
    ax.plot(centres, r["profile"]["scores"], "-", lw=1.2, label="these rows")
    ax.set_xlabel("spam probability, as its logit")
    ax.set_ylabel("share of rows")
    psi = r["drift"]["score_psi"]
    ax.set_title(f"drift: PSI of scores {'n/a' if psi is None else f'{psi:.3f}'}")
    ax.legend(fontsize=7, title=ref[:40], title_fontsize=6)


def _confusion_panel(ax, r: dict) -> None:
    counts = r["labels"]["confusion_matrix"]["counts"]
    ax.imshow(counts, cmap="Blues")
    top = max(max(row) for row in counts) or 1
    for t in range(2):
        for p in range(2):
            ax.text(
                p,
                t,
                f"{counts[t][p]:,}",
                ha="center",
                va="center",
                color="white" if counts[t][p] > top / 2 else "black",
            )
    ax.set_xticks([0, 1], ["ham", "spam"])
    ax.set_yticks([0, 1], ["ham", "spam"])
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(f"accuracy {pct(r['accuracy'])}")


def _pr_panel(ax, r: dict) -> None:
    """Precision against recall over thresholds, the threshold used and 0.5 marked."""
    m = r["labels"]
    ax.plot(m["pr_curve"]["recall"], m["pr_curve"]["precision"], "-", lw=1.2)
    ax.plot([m["recall"]], [m["precision"]], "o", label=f"threshold {threshold_name(r)}")
    ax.plot([m["at_0.5"]["recall"]], [m["at_0.5"]["precision"]], "x", label="0.5 (argmax)")
    ax.set_xlabel("recall (spam)")
    ax.set_ylabel("precision (spam)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("precision / recall")


def reliability_panel(ax, curves: dict[str, dict]) -> None:
    """Reliability diagram: observed spam share against mean predicted P(spam) per bin
    (spamjob.calibration.reliability's points), one curve per label, the diagonal for reference."""
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    for label, r in curves.items():
        points = [(p, o) for p, o in zip(r["mean_predicted"], r["observed"]) if p is not None]
        ece = f" (ECE {r['ece']:.3f})" if r.get("ece") is not None else ""
        ax.plot([p for p, _ in points], [o for _, o in points], "o-", ms=3, lw=1.2, label=f"{label}{ece}")
    ax.set_xlabel("mean predicted P(spam)")
    ax.set_ylabel("observed spam share")
    ax.set_title("reliability")
    ax.legend(fontsize=7)
