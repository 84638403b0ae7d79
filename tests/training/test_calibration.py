"""Calibrated probabilities: the temperature fitted on validation, kept in config.json, applied by
every runtime and export alike (the head divided by it), the threshold picked on calibrated
scores, ECE and Brier before and after; `none` and old classifiers score as before. (The exports,
Ray and Spark are checked against spamjob's probabilities of the shared, calibrated classifier by
tests/export and tests/engines.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import score

from spamjob.calibration import figures, fit_temperature, sigmoid


def test_the_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    z_true = (2 * y - 1) * 1.5 + rng.normal(0, 1.5, len(y))  # the Bayes posterior's logit is z_true * 4/3
    t = fit_temperature(3 * z_true, y)  # three times too confident: T = 3 / (4/3) = 2.25
    assert abs(t - 2.25) < 0.1
    f = figures(3 * z_true, y, t)
    assert f["ece_after"] < f["ece_before"] / 3 and f["brier_after"] < f["brier_before"]
    assert fit_temperature(np.zeros(4), np.array([0, 1, 0, 1])) == 1.0  # nothing to fit
    assert fit_temperature(np.ones(3), np.ones(3)) == 1.0


def uncalibrated_copy(run_dir: Path, folder: Path) -> Path:
    """The same classifier as one trained before calibration: config.json without the temperature."""
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["calibration"]
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def probabilities(out: Path) -> np.ndarray:
    return pd.read_parquet(out / "predictions").sort_values("Text")["spam_probability"].to_numpy()


def test_training_fits_keeps_and_applies_the_temperature(classifier_dir, data_dir, tmp_path):
    cfg = json.loads((classifier_dir / "config.json").read_text())
    m = json.loads((classifier_dir / "metrics.json").read_text())
    t = cfg["calibration"]["temperature"]
    assert cfg["calibration"]["method"] == "temperature" and t == m["calibration"]["temperature"] and t != 1.0
    val = m["calibration"]["validation"]
    assert val["ece_after"] <= val["ece_before"] and set(m["calibration"]) >= {"validation", "test"}
    assert (classifier_dir / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    # Every runtime loads the head divided by T: spamjob's probabilities are sigmoid(z / T) of the old ones.
    old = uncalibrated_copy(classifier_dir, tmp_path / "old")
    args = [str(data_dir / "test.csv"), "--mixed-precision", "no", "--no-dedup"]
    labelled = ["--label-column", "Label"]
    assert score(*args, *labelled, "--model", str(classifier_dir), "--out", str(tmp_path / "cal")).exit_code == 0
    assert score(*args, "--model", str(old), "--out", str(tmp_path / "raw")).exit_code == 0
    raw, cal = probabilities(tmp_path / "raw"), probabilities(tmp_path / "cal")
    assert np.abs(cal - sigmoid(np.log(raw / (1 - raw)) / t)).max() < 1e-6
    reliability = json.loads((tmp_path / "cal" / "report.json").read_text())["labels"]["reliability"]
    assert sum(reliability["rows"]) == 300 and 0 <= reliability["ece"] < 0.5  # the report's, with labels
    # The argmax is the same: an old classifier and a calibrated one agree at 0.5.
    assert ((raw > 0.5) == (cal > 0.5)).all()


def test_reference_preset_keeps_probabilities_as_trained():
    from spamjob.config import PRESETS

    assert PRESETS["reference"]["calibration"] == "none" and PRESETS["default"]["calibration"] == "temperature"


@pytest.mark.slow
def test_onnx_runtime_applies_the_same_temperature(classifier_dir, data_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    old = uncalibrated_copy(classifier_dir, tmp_path / "old")
    t = json.loads((classifier_dir / "config.json").read_text())["calibration"]["temperature"]
    args = [str(data_dir / "test.csv"), "--runtime", "onnxruntime", "--no-dedup"]
    assert score(*args, "--model", str(classifier_dir), "--out", str(tmp_path / "cal")).exit_code == 0
    assert score(*args, "--model", str(old), "--out", str(tmp_path / "raw")).exit_code == 0
    raw, cal = probabilities(tmp_path / "raw"), probabilities(tmp_path / "cal")
    assert np.abs(cal - sigmoid(np.log(raw / (1 - raw)) / t)).max() < 1e-6


@pytest.mark.slow
def test_the_transformers_export_applies_the_same_temperature(classifier_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from spamjob.export.hf import export_hf

    old = uncalibrated_copy(classifier_dir, tmp_path / "old")
    t = json.loads((classifier_dir / "config.json").read_text())["calibration"]["temperature"]
    texts = ["WIN a free prize now!!! call 0800 123", "see you at 5", "Your account is locked, click here"]
    probs = []
    for run, name in ((classifier_dir, "cal"), (old, "raw")):
        export_hf(run, tmp_path / name)
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            logits = model(**tok(texts, padding=True, return_tensors="pt")).logits.double()
        probs.append(torch.softmax(logits, -1)[:, 1].numpy())
    cal, raw = probs
    assert np.abs(cal - sigmoid(np.log(raw / (1 - raw)) / t)).max() < 1e-6
    exported = json.loads((tmp_path / "cal" / "config.json").read_text())["spamjob"]["calibration"]
    assert exported == {"method": "temperature", "temperature": t, "fit_on": "validation"}


@pytest.mark.slow
def test_reference_split_4x256_calibration_lowers_validation_ece_and_keeps_argmax_accuracy(data_dir, tmp_path):
    from spamjob.config import TrainConfig
    from spamjob.training.job import main

    out = tmp_path / "run"
    m = main(
        TrainConfig(
            data=str(data_dir), out=str(out), weights="random", n_layers=4, emb_dim=256, n_heads=4, epochs=1, seed=123
        )
    )
    c = m["calibration"]
    assert c["method"] == "temperature" and c["validation"]["ece_after"] <= c["validation"]["ece_before"]
    assert m["operating_point"]["test_at_0.5"]["accuracy"] == m["test"]["accuracy"]  # the argmax, unchanged
