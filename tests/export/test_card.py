"""The model card every training run writes (README.md beside the classifier)."""

from __future__ import annotations

import json

import yaml


def card(run_dir) -> tuple[dict, str]:
    text = (run_dir / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_training_writes_a_model_card(classifier_dir):
    meta, body = card(classifier_dir)
    metrics = json.loads((classifier_dir / "metrics.json").read_text())
    config = json.loads((classifier_dir / "config.json").read_text())
    assert meta["pipeline_tag"] == "text-classification" and meta["datasets"] == ["ucirvine/sms_spam"]
    assert "base_model" not in meta  # random weights have no base model
    result = meta["model-index"][0]["results"][0]["metrics"][0]
    assert result == {"type": "accuracy", "value": round(metrics["test"]["accuracy"], 4)}
    assert "**Random weights.**" in body and "English SMS" in body
    assert f"| test | 300 | {metrics['test']['accuracy'] * 100:.2f}% |" in body
    assert config["data"]["sha256"]["train.csv"] in body
    op = metrics["operating_point"]
    assert f"spam when P(spam) > {config['operating_point']['threshold']:.4g}" in body and "rule `f1`" in body
    assert f"precision {op['test']['precision'] * 100:.2f}%" in body
    assert f"at 0.5 (argmax): precision {op['test_at_0.5']['precision'] * 100:.2f}%" in body


def test_pretrained_runs_name_their_base_model():
    from spamjob.export.card import _base_model

    training = {"weights": "hf", "model": None}
    assert _base_model({"training": training}) == "openai-community/gpt2"
    assert _base_model({"training": {**training, "model": "gpt2-medium"}}) == "openai-community/gpt2-medium"


def test_the_hf_export_carries_the_card(classifier_dir, tmp_path):
    from spamjob.export.hf import export_hf

    export_hf(classifier_dir, tmp_path / "hf")
    assert (tmp_path / "hf" / "README.md").read_text() == (classifier_dir / "README.md").read_text()
