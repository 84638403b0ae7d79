"""spamjob.scoring.report: counts add up, metrics from the confusion matrix, files written."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from spamjob.operating import counts_at
from spamjob.scoring.report import CURVE_EDGES, Counts, build, count_rows, metrics, pr_curve, write


def test_counts_add_and_round_trip():
    a = Counts(
        rows_read=3,
        rows_scored=2,
        predicted_spam=1,
        flagged=Counter({"empty text": 1}),
        labeled=2,
        confusion=[[1, 0], [0, 1]],
        histogram=[1] + [0] * 18 + [1],
    )
    b = Counts(
        rows_read=5,
        rows_scored=5,
        predicted_spam=4,
        rejected=Counter({"bad": 2}),
        labeled=5,
        confusion=[[0, 1], [0, 4]],
        histogram=[0] * 19 + [5],
    )
    total = Counts()
    total += a
    total += b
    assert (total.rows_read, total.rows_scored, total.predicted_spam, total.labeled) == (8, 7, 5, 7)
    assert total.flagged == {"empty text": 1} and total.rejected == {"bad": 2}
    assert total.confusion == [[1, 1], [0, 5]] and total.histogram[-1] == 6
    assert Counts.from_dict(total.to_dict()).to_dict() == total.to_dict()


def test_metrics_from_confusion():
    m = metrics([[50, 10], [5, 35]])  # tn fp / fn tp
    assert m["accuracy"] == 0.85 and m["precision"] == 35 / 45 and m["recall"] == 35 / 40
    assert abs(m["f1"] - 2 * (35 / 45) * (35 / 40) / ((35 / 45) + (35 / 40))) < 1e-12
    assert metrics(Counts().confusion)["accuracy"] is None


def output(probs: np.ndarray, threshold: float) -> dict[str, pa.Array]:
    return {
        "prediction": pa.array(np.where(probs > threshold, "spam", "ham")),
        "spam_probability": pa.array(probs),
        "truncated": pa.array(np.zeros(len(probs), dtype=bool)),
        "error": pa.nulls(len(probs), pa.string()),
    }


def test_counts_follow_the_prediction_column_and_give_the_curve_and_the_argmax():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3000)
    probs = 1 / (1 + np.exp(-(rng.normal(0, 2, 3000) + 2 * labels - 1)))
    threshold = 0.8
    total = Counts()
    for part in np.array_split(np.arange(3000), 7):  # counts summed over units
        total += count_rows(output(probs[part], threshold), labels[part].tolist())
    r = build(total, {}, {"threshold": {"value": threshold, "source": "--threshold"}})["labels"]
    at, half = counts_at(probs, labels, threshold), counts_at(probs, labels, 0.5)
    for key in ("accuracy", "precision", "recall", "f1"):
        assert r[key] == at[key] and r["at_0.5"][key] == half[key]
    curve = pr_curve(total)
    for i in range(0, len(curve["threshold"]), 25):
        exact = counts_at(probs, labels, CURVE_EDGES[CURVE_EDGES.round(6) == curve["threshold"][i]][0])
        assert (curve["precision"][i], curve["recall"][i]) == (round(exact["precision"], 6), round(exact["recall"], 6))


def test_report_files(tmp_path):
    c = Counts(
        rows_read=10,
        rows_scored=9,
        predicted_spam=3,
        flagged=Counter({"null text": 1}),
        labeled=9,
        confusion=[[5, 1], [1, 2]],
        histogram=[2] * 4 + [0] * 15 + [1],
    )
    extra = {"wall_time_s": 1.5, "rows_per_s": 6.7, "num_processes": 2, "model": {"path": "m", "sha256": "ab" * 32}}
    r = build(c, {"/in.csv": c}, extra)
    assert r["accuracy"] == 7 / 9 and r["rows"]["flagged"] == 1 and r["spam_rate"] == 3 / 9
    files = write(tmp_path, r)
    assert [f.name for f in files] == ["report.json", "report.md", "report.png"]
    md = (tmp_path / "report.md").read_text()
    assert "accuracy 77.78%" in md and "| null text | 1 |" in md and "| `/in.csv` | 10 | 9 | 1 | 0 |" in md
    assert "| 0.5 (argmax) |" in md and r["labels"]["pr_curve"] == {"threshold": [], "precision": [], "recall": []}
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    unlabeled = build(Counts(rows_read=1, rows_scored=1, histogram=[1] + [0] * 19), {}, extra)
    assert unlabeled["accuracy"] is None and unlabeled["labels"] == {"labeled_rows": 0, "unknown_labels": 0}
    files = write(tmp_path / "u", unlabeled)
    assert json.loads(files[0].read_text())["accuracy"] is None
    md = files[1].read_text()
    assert "rows read: 1; scored: 1" in md and "spam rate: 0.00%" in md and "Against the labels" not in md
    assert png_width(files[2]) < png_width(tmp_path / "report.png")  # the histogram alone, no confusion matrix


def png_width(path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big")
