"""Integer counts -> the scoring report (JSON, Markdown, PNG).

Every figure is derived from counts that are summed over work units (and so over
processes): a report is the same whether 1 or N processes scored the inputs, and the
same after a resumed run as after an uninterrupted one.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from spamjob import stores
from spamjob.calibration import binned
from spamjob.config import LABELS
from spamjob.fsutil import atomic_path, write_json
from spamjob.operating import summarize
from spamjob.scoring import drift
from spamjob.scoring.report_plot import pct, plot, threshold_name

BINS = 20  # spam-probability histogram bins of width 0.05
# Precision/recall curve thresholds: 0.1 apart in logit from -10 to 10 (P 4.5e-5 .. 0.99995), fine
# where a spam filter's operating points lie (near 0 and 1), as integer counts that add up.
CURVE_EDGES = 1 / (1 + np.exp(-np.linspace(-10, 10, 201)))
# Token counts in half-octaves: bin k holds 2**(k/2) <= n < 2**((k+1)/2); the last, every longer text.
LENGTH_BINS = 22


def length_bins(lengths: np.ndarray) -> np.ndarray:
    return np.minimum((2 * np.log2(np.maximum(lengths, 1))).astype(np.int64), LENGTH_BINS - 1)


@dataclass
class Counts:
    """Counts of one work unit, one input, or everything; `+=` adds them up."""

    rows_read: int = 0
    rows_scored: int = 0
    predicted_spam: int = 0
    truncated: int = 0
    flagged: Counter = field(default_factory=Counter)  # reason -> rows written with `error` set
    rejected: Counter = field(default_factory=Counter)  # reason -> lines that could not be parsed
    labeled: int = 0  # scored rows with a known label
    unknown_labels: int = 0  # rows whose label is neither ham/spam nor 0/1
    confusion: list = field(default_factory=lambda: [[0, 0], [0, 0]])  # [true][predicted], 0 = ham
    confusion_at_half: list = field(default_factory=lambda: [[0, 0], [0, 0]])  # the same with spam = P > 0.5
    histogram: list = field(default_factory=lambda: [0] * BINS)
    by_label: list = field(default_factory=lambda: [[0] * (len(CURVE_EDGES) + 1) for _ in range(2)])
    """[true label][curve bin]: bin b holds CURVE_EDGES[b-1] < P(spam) <= CURVE_EDGES[b]."""
    scores: list = field(default_factory=lambda: [0] * (len(CURVE_EDGES) + 1))  # every scored row, curve bins
    lengths: list = field(default_factory=lambda: [0] * LENGTH_BINS)  # scored rows' token counts (length_bins)

    def __iadd__(self, other: Counts) -> Counts:
        for name in ("rows_read", "rows_scored", "predicted_spam", "truncated", "labeled", "unknown_labels"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.flagged.update(other.flagged)
        self.rejected.update(other.rejected)
        for t in range(2):
            for p in range(2):
                self.confusion[t][p] += other.confusion[t][p]
                self.confusion_at_half[t][p] += other.confusion_at_half[t][p]
            self.by_label[t] = [a + b for a, b in zip(self.by_label[t], other.by_label[t])]
        for name in ("histogram", "scores", "lengths"):
            setattr(self, name, [a + b for a, b in zip(getattr(self, name), getattr(other, name))])
        return self

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "predicted_spam": self.predicted_spam,
            "truncated": self.truncated,
            "flagged": dict(sorted(self.flagged.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "labeled": self.labeled,
            "unknown_labels": self.unknown_labels,
            "confusion": self.confusion,
            "confusion_at_half": self.confusion_at_half,
            "histogram": self.histogram,
            "by_label": self.by_label,
            "scores": self.scores,
            "lengths": self.lengths,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Counts:
        c = cls(**{k: v for k, v in d.items() if k not in ("flagged", "rejected")})
        c.flagged, c.rejected = Counter(d["flagged"]), Counter(d["rejected"])
        return c


def count_rows(
    columns: Mapping[str, pa.Array], labels: list[int | None] | None, lengths: np.ndarray | None = None
) -> Counts:
    """Counts of scored rows as scoring writes them (`error`, `prediction`, `spam_probability`,
    `truncated`) and their labels (0 ham, 1 spam, None unknown): the one rule of `spamjob score`
    (per window) and `spamjob report` (per batch of any engine's predictions). Predicted spam is
    what the `prediction` column says (at the threshold the scorer used). `lengths`: each row's
    token count, where the scorer knows it (drift's length histogram)."""
    c = Counts()
    errors = columns["error"].cast(pa.string())
    scored = errors.is_null().to_numpy(zero_copy_only=False)
    probs = columns["spam_probability"].cast(pa.float64()).to_numpy(zero_copy_only=False)[scored]
    predicted = (columns["prediction"].cast(pa.string()).to_numpy(zero_copy_only=False) == LABELS[1])[scored]
    c.rows_read, c.rows_scored, c.predicted_spam = len(errors), int(scored.sum()), int(predicted.sum())
    c.truncated = columns["truncated"].cast(pa.bool_()).true_count
    c.flagged = Counter(e for e in errors.to_pylist() if e is not None)
    bins = np.minimum((probs * BINS).astype(np.int64), BINS - 1)
    c.histogram = np.bincount(bins, minlength=BINS).tolist()
    c.scores = np.bincount(np.searchsorted(CURVE_EDGES, probs, side="left"), minlength=len(CURVE_EDGES) + 1).tolist()
    if lengths is not None:
        c.lengths = np.bincount(length_bins(np.asarray(lengths)[scored]), minlength=LENGTH_BINS).tolist()
    if labels is None:
        return c
    c.unknown_labels = sum(label is None for label in labels)
    known = np.array([label is not None for label in labels], dtype=bool)[scored]
    truth = np.array([label or 0 for label in labels], dtype=np.int64)[scored][known]
    probs, predicted = probs[known], predicted[known]
    c.labeled = len(truth)
    for t in range(2):
        mine = truth == t
        c.confusion[t] = [int((mine & ~predicted).sum()), int((mine & predicted).sum())]
        c.confusion_at_half[t] = [int((mine & (probs <= 0.5)).sum()), int((mine & (probs > 0.5)).sum())]
        curve_bins = np.searchsorted(CURVE_EDGES, probs[mine], side="left")
        c.by_label[t] = np.bincount(curve_bins, minlength=len(CURVE_EDGES) + 1).tolist()
    return c


def pr_curve(c: Counts) -> dict[str, list[float]]:
    """Precision and recall of the spam class at each CURVE_EDGES threshold (spam = P > threshold)
    that flags at least one labeled row."""
    ham, spam = (np.asarray(h, dtype=np.int64) for h in c.by_label)
    tp, fp = np.cumsum(spam[::-1])[::-1][1:], np.cumsum(ham[::-1])[::-1][1:]  # rows in bins above edge k
    keep = tp + fp > 0
    positives = max(int(spam.sum()), 1)
    return {
        "threshold": [round(float(t), 6) for t in CURVE_EDGES[keep]],
        "precision": [round(float(x), 6) for x in (tp / np.maximum(tp + fp, 1))[keep]],
        "recall": [round(float(x), 6) for x in (tp / positives)[keep]],
    }


def metrics(confusion: list) -> dict:
    """Accuracy, precision, recall and F1 of the spam class from [true][predicted] counts."""
    (tn, fp), (fn, tp) = confusion
    figures = summarize(tn, fp, fn, tp)
    return {
        **{k: figures[k] for k in ("accuracy", "precision", "recall", "f1")},
        "confusion_matrix": {
            "labels": ["ham", "spam"],
            "rows": "true label",
            "columns": "prediction",
            "counts": confusion,
        },
        "examples": figures["examples"],
    }


def build(total: Counts, per_input: dict[str, Counts], extra: dict, reference: dict | None = None) -> dict:
    """The report dictionary (report.json); `extra` may name the `threshold` the predictions used;
    with a `reference` profile, the rows' drift from it (spamjob.scoring.drift)."""
    has_labels = total.labeled > 0
    if has_labels:
        labels = {
            **metrics(total.confusion),
            "unknown_labels": total.unknown_labels,
            "at_0.5": metrics(total.confusion_at_half),
            "pr_curve": pr_curve(total),
            "reliability": binned(total.by_label, CURVE_EDGES),  # ECE over 15 bins, from the curve's counts
        }
    else:
        labels = {"labeled_rows": 0, "unknown_labels": total.unknown_labels}
    return {
        "accuracy": labels["accuracy"] if has_labels else None,
        "rows": {
            "read": total.rows_read,
            "scored": total.rows_scored,
            "flagged": sum(total.flagged.values()),
            "rejected": sum(total.rejected.values()),
            "truncated": total.truncated,
        },
        "flagged_by_reason": dict(sorted(total.flagged.items())),
        "rejected_by_reason": dict(sorted(total.rejected.items())),
        "spam_rate": total.predicted_spam / total.rows_scored if total.rows_scored else None,
        "predicted": {"ham": total.rows_scored - total.predicted_spam, "spam": total.predicted_spam},
        "labels": labels,
        "spam_probability_histogram": {"bin_edges": [i / BINS for i in range(BINS + 1)], "counts": total.histogram},
        # (token lengths are the scorer's to know: a recount of the parts has none, so per input they are left out)
        "inputs": {path: {k: v for k, v in c.to_dict().items() if k != "lengths"} for path, c in per_input.items()},
        "profile": (now := drift.profile(total, "these rows")),
        "drift": drift.compare(reference, now) if reference is not None else None,
        **extra,
    }


def write(out: str | os.PathLike, report: dict, name: str = "report", png: bool = True) -> list[Path]:
    """report.json, report.md and report.png in `out` (`name`.json, ...; `png` off: no plot)."""
    out = Path(out)
    write_json(out / f"{name}.json", report)
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text(markdown(report))
    plotted = plot(out / f"{name}.png", report) if png else None
    return [out / f"{name}.json", out / f"{name}.md", *([plotted] if plotted else [])]


def markdown(r: dict) -> str:
    rows = r["rows"]
    lines = [
        "# spamjob scoring report",
        "",
        f"- rows read: {rows['read']:,}; scored: {rows['scored']:,}; flagged: {rows['flagged']:,}; "
        f"rejected: {rows['rejected']:,}; truncated: {rows['truncated']:,}",
        f"- spam rate: {pct(r['spam_rate'])} ({r['predicted']['spam']:,} spam, {r['predicted']['ham']:,} ham)",
    ]
    if "wall_time_s" in r:  # `spamjob score`'s own report (a recount knows no timing)
        steady = f" ({r['steady_rows_per_s']:,.1f} after the first window)" if r.get("steady_rows_per_s") else ""
        lines.append(f"- wall time: {r['wall_time_s']:.1f} s; {r['rows_per_s']:,.1f} rows/s{steady}; {workers(r)}")
    lines += _run_lines(r)
    if r.get("recounted_from"):
        lines.append(f"- recounted from `{r['recounted_from']['folder']}` ({r['recounted_from']['parts']:,} parts)")
    if r.get("model"):
        lines.append(f"- model: `{r['model']['path']}` (sha256 {(r['model']['sha256'] or '')[:16]}...)")
    if r.get("runtime"):
        lines.append(f"- {runtime_line(r)}")
    if r.get("padding_note"):
        lines.append(f"- note: {r['padding_note']}")
    for path, reason in (r.get("csv_read_whole") or {}).items():
        lines.append(f"- `{path}` was read whole, not in byte blocks: {reason}")
    if r.get("threshold"):
        t = r["threshold"]
        lines.append(f"- spam when P(spam) > {t['value']:.4g} ({t['source']})")
    if r["accuracy"] is not None:
        m = r["labels"]
        (tn, fp), (fn, tp) = m["confusion_matrix"]["counts"]
        lines += [
            "",
            "## Against the labels",
            "",
            f"accuracy {pct(m['accuracy'])}, precision {pct(m['precision'])}, recall {pct(m['recall'])}, "
            f"F1 {pct(m['f1'])} over {m['examples']:,} labeled rows ({m['unknown_labels']:,} with unknown labels)",
            "",
            "| true \\ predicted | ham | spam |",
            "|---|---|---|",
            f"| ham | {tn:,} | {fp:,} |",
            f"| spam | {fn:,} | {tp:,} |",
            "",
            "| threshold | precision | recall | F1 | accuracy |",
            "|---|---|---|---|---|",
        ]
        for name, at in ((threshold_name(r), m), ("0.5 (argmax)", m["at_0.5"])):
            lines.append(
                f"| {name} | {pct(at['precision'])} | {pct(at['recall'])} | {pct(at['f1'])} | {pct(at['accuracy'])} |"
            )
    for title, key in (("Flagged rows", "flagged_by_reason"), ("Rejected lines", "rejected_by_reason")):
        if r[key]:
            lines += ["", f"## {title}", "", "| reason | rows |", "|---|---|"]
            lines += [f"| {reason} | {n:,} |" for reason, n in r[key].items()]
    return "\n".join(lines + _inputs_section(r)) + "\n"


def _inputs_section(r: dict) -> list[str]:
    """Rows per input, and the files under the inputs that were not read."""
    lines = ["", "## Inputs", "", "| input | read | scored | flagged | rejected |", "|---|---|---|---|---|"]
    for path, c in r["inputs"].items():
        lines.append(
            f"| `{path}` | {c['rows_read']:,} | {c['rows_scored']:,} | {sum(c['flagged'].values()):,} | "
            f"{sum(c['rejected'].values()):,} |"
        )
    if r.get("skipped_files"):
        why = ", ".join(f"{n:,} {reason}" for reason, n in r["skipped_files"].items())
        lines += ["", f"Files under the inputs not read: {why} (`_manifest.json` or `--verbose` lists them)."]
    return lines


def runtime_line(r: dict) -> str:
    """What ran the model: runtime, precision (and why: `auto`'s choice), and its agreement with fp32."""
    rt, agreement = r["runtime"], r.get("agreement_with_fp32") or {}
    precision = "int8" if r.get("quantize") else {"no": "fp32"}.get(r.get("mixed_precision"), r.get("mixed_precision"))
    line = f"runtime: {' '.join(filter(None, (rt['name'], rt.get('version'))))}, {precision}"
    if agreement.get("same_prediction") is not None:
        same, rows = pct(agreement["same_prediction"]), agreement["rows_compared"]
        line += f"; {precision} labels agree with fp32 on {same} of {rows:,} rows"
    return line


def workers(r: dict) -> str:
    """Who scored: `spamjob score`'s processes, or the Ray actors of `--engine ray`."""
    return f"Ray actors: {r['actors']}" if r.get("actors") else f"processes: {r['num_processes']}"


def scored_line(report: dict, folder: str | os.PathLike, recounted: bool = False) -> str:
    """The line a command prints once it has written a report into `folder`: `spamjob score`'s, or
    (`recounted`) `spamjob report`'s."""
    r = report["rows"]
    acc = f"; accuracy {report['accuracy'] * 100:.2f}%" if report.get("accuracy") is not None else ""
    where = f"; report: {stores.join(folder, 'report.md') if stores.is_uri(folder) else Path(folder) / 'report.md'}"
    if report.get("already_done"):
        return f"already complete: {folder} holds this job's finished output ({r['read']:,} rows){acc}{where}"
    if recounted:
        return (
            f"counted {r['read']:,} rows ({r['scored']:,} scored, {r['flagged']:,} flagged, "
            f"{r['rejected']:,} rejected lines){acc}{where}"
        )
    run = f"incremental run {inc['run']}: " if (inc := report.get("incremental")) else ""
    return (
        f"{run}scored {r['scored']:,} of {r['read']:,} rows ({r['flagged']:,} flagged, "
        f"{r['rejected']:,} rejected lines){acc} in {report['wall_time_s']:.1f} s "
        f"({report['rows_per_s']:,.1f} rows/s), {workers(report)}{where}"
    )


def _run_lines(r: dict) -> list[str]:
    """The lines of an incremental run and of drift, where the report has them."""
    found = []
    if inc := r.get("incremental"):
        found.append(
            f"- incremental run {inc['run']} (the last committed: {inc['previous_run'] or 'none'}): "
            f"{inc['units_scored']:,} unit(s) of {inc['files_scored']:,} new or changed file(s) scored, "
            f"{inc['parts_superseded']:,} earlier part(s) superseded; {inc['units_current']:,} current "
            f"part(s) in all (`{inc['cumulative_report']}`)"
        )
    if d := r.get("drift"):
        found.append(drift_line(d))
    return found


def drift_line(d: dict) -> str:
    """The report's drift line: the PSIs and the spam rate against the reference."""
    lengths = f", token lengths {d['token_length_psi']:.3f}" if d["token_length_psi"] is not None else ""
    score = "n/a" if d["score_psi"] is None else f"{d['score_psi']:.3f}"
    rate = d["spam_rate"]
    return (
        f"- drift from {d['reference']}: PSI of scores {score}{lengths}; spam rate {pct(rate['now'])} "
        f"(reference {pct(rate['reference'])}); truncated {pct(d['truncated_rate']['now'])}, empty "
        f"{pct(d['empty_rate']['now'])}, errors {pct(d['error_rate']['now'])}"
    )
