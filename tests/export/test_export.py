"""`spamjob export --format hf`: transformers loads the folder and gives spamjob's probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from spamjob.cli import cli
from spamjob.scoring.runtimes.pytorch import spam_probability

ODD = ["hi <|endoftext|> there", "<|endoftext|>", "win<|endoftext|>", "free " * 300, "call now " * 100]


@pytest.fixture(scope="module")
def exported(classifier_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "hf"
    r = CliRunner().invoke(cli, ["export", str(classifier_dir), "--format", "hf", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def texts(sms_path) -> list[str]:
    """200 real messages, with special-token text and messages longer than max_length."""
    sms = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])["Text"].tolist()
    return sms[:195] + ODD


def test_transformers_gives_spamjob_probabilities(classifier_dir, exported, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from spamjob.artifact import load_classifier

    clf = load_classifier(classifier_dir)
    want, truncated = spam_probability(clf, texts)
    assert sum(truncated) == 2
    tok = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForSequenceClassification.from_pretrained(exported).eval()
    batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
    ids = [s[: clf.max_length] for s in clf.tokenizer.encode_ordinary_batch(texts)]
    assert [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])] == ids
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1)[:, 1].numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5, rtol=0)
    assert model.config.id2label == {0: "ham", 1: "spam"}
    assert model.config.spamjob["spam_threshold"] == clf.threshold  # the operating point travels along


def test_transformers_pipeline(classifier_dir, exported, texts):
    from transformers import pipeline

    from spamjob.artifact import load_classifier

    want, _ = spam_probability(load_classifier(classifier_dir), texts[-20:])
    pipe = pipeline("text-classification", model=str(exported), truncation=True, top_k=None, device="cpu")
    got = [next(x["score"] for x in row if x["label"] == "spam") for row in pipe(texts[-20:], batch_size=8)]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_last_pooling_is_refused_in_one_line(classifier_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(classifier_dir, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "pooling": "last", "padding": "fixed"}))
    r = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "hf")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "--pooling last-token" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "hf").exists()
