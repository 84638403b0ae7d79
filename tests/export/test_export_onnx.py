"""`spamjob export --format onnx`: ONNX Runtime runs the graph (pooling inside) and gives spamjob's
probabilities; --quantize int8 adds an int8 graph with its measured agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from spamjob.cli import cli
from spamjob.scoring.runtimes.pytorch import spam_probability

ort = pytest.importorskip("onnxruntime")  # the `onnx` extra; .ci/run installs it

ODD = ["hi <|endoftext|> there", "<|endoftext|>", "win<|endoftext|>", "free " * 300, "call now " * 100]


@pytest.fixture(scope="module")
def texts(sms_path) -> list[str]:
    """200 real messages, with special-token text and messages longer than max_length."""
    sms = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])["Text"].tolist()
    return sms[:195] + ODD


@pytest.fixture(scope="module")
def exported(classifier_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    r = CliRunner().invoke(
        cli, ["export", str(classifier_dir), "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "ONNX Runtime matches spamjob within" in r.output and "model.int8.onnx agrees on" in r.output
    return out


def run_graph(path: Path, texts: list[str], clf, pad_to: int | None = None) -> np.ndarray:
    """The graph fed as a user would: tiktoken ids cut at max_length, right-padded, a mask."""
    ids = [s[: clf.max_length] for s in clf.tokenizer.encode_ordinary_batch(texts)]
    width = pad_to or max(len(s) for s in ids)
    x = np.full((len(ids), width), 50256, dtype=np.int64)
    mask = np.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, : len(s)], mask[i, : len(s)] = s, 1
    session = ort.InferenceSession(str(path))
    logits, probs = session.run(None, {"input_ids": x, "attention_mask": mask})
    assert logits.shape == (len(texts), 2)
    return probs


def test_onnx_runtime_gives_spamjob_probabilities(classifier_dir, exported, texts):
    from spamjob.artifact import load_classifier

    clf = load_classifier(classifier_dir)
    want, truncated = spam_probability(clf, texts)
    assert sum(truncated) == 2
    got = np.concatenate([run_graph(exported / "model.onnx", texts[i : i + 64], clf) for i in range(0, 200, 64)])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)  # dynamic batch (64, 8) and sequence axes
    np.testing.assert_allclose(run_graph(exported / "model.onnx", texts[:1], clf), want[:1], atol=1e-4, rtol=0)
    meta = json.loads((exported / "spamjob_onnx.json").read_text())
    assert meta["inputs"] == ["input_ids", "attention_mask"] and meta["spam_threshold"] == clf.threshold
    assert meta["checked_with_onnxruntime"]["fp32"]["max_abs_diff"] <= 1e-4
    assert meta["checked_with_onnxruntime"]["fp32"]["exporter"] == "dynamo"  # the extra brings onnxscript
    assert graph_made_by(exported / "model.onnx") == "dynamo"  # the graph itself, not only what was recorded
    assert (exported / "tokenizer" / "encoder.json").is_file() and (exported / "README.md").is_file()


def test_int8_graph_and_its_agreement(classifier_dir, exported, texts):
    from spamjob.artifact import load_classifier
    from spamjob.scoring.runtimes.ort_graph import sample_texts

    clf = load_classifier(classifier_dir)
    check = json.loads((exported / "spamjob_onnx.json").read_text())["checked_with_onnxruntime"]["int8"]
    sample = sample_texts(clf)
    assert check["messages"] == len(sample) > 300  # the run's test split and the odd messages
    want = np.asarray(spam_probability(clf, sample)[0])
    got = np.concatenate(
        [run_graph(exported / "model.int8.onnx", sample[i : i + 50], clf) for i in range(0, len(sample), 50)]
    )
    t = clf.threshold
    assert check["agreement"] == pytest.approx(((got > t) == (want > t)).mean(), abs=1 / len(sample))
    assert (
        check["agreement"] >= 0.95
        and (exported / "model.int8.onnx").stat().st_size < (exported / "model.onnx").stat().st_size / 2
    )


@pytest.mark.slow  # (17 s in CI: a reference-preset run exported; the default suite stays under 5 minutes)
def test_last_pooling_exports_with_rows_padded_to_max_length(data_dir, tmp_path, texts):
    from spamjob.artifact import load_classifier
    from spamjob.config import TrainConfig
    from spamjob.export.onnx import export_onnx
    from spamjob.training.job import main

    run = tmp_path / "ref"
    main(
        TrainConfig(
            data=str(data_dir),
            out=str(run),
            weights="random",
            n_layers=1,
            emb_dim=32,
            n_heads=2,
            epochs=1,
            preset="reference",
            eval_freq=1000,
        )
    )
    meta = export_onnx(run, tmp_path / "onnx", texts=texts)
    clf = load_classifier(run)
    assert meta["pooling"] == "last" and meta["pad_to_max_length"] and clf.padding == "fixed"
    got = run_graph(tmp_path / "onnx" / "model.onnx", texts, clf, pad_to=clf.max_length)
    np.testing.assert_allclose(got, spam_probability(clf, texts)[0], atol=1e-4, rtol=0)


def graph_made_by(path) -> str:
    """Which exporter wrote a graph, read from the graph: torch.export + onnxscript name every node
    `node_*`; the TorchScript exporter names them after the module path (`/model/...`) or op type."""
    import onnx

    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
    return "dynamo" if names and all(n.startswith("node_") for n in names) else "torchscript"


@pytest.mark.parametrize("how", ["dynamo", "torchscript"])
def test_either_exporter_with_weights_beside_the_graph(how, classifier_dir, tmp_path, texts, monkeypatch):
    """The deprecated TorchScript exporter (older torch, no onnxscript) gives the same probabilities;
    past EXTERNAL_DATA_BYTES (large GPT-2s: protobuf stops at 2 GiB) the weights go to model.onnx.data."""
    from spamjob.artifact import load_classifier
    from spamjob.export import onnx
    from spamjob.scoring.runtimes import ort_graph

    monkeypatch.setattr(ort_graph, "exporter", lambda: how)
    monkeypatch.setattr(ort_graph, "EXTERNAL_DATA_BYTES", 0)
    meta = onnx.export_onnx(classifier_dir, tmp_path / "onnx", "int8" if how == "dynamo" else None, texts=texts)
    assert (
        meta["checked_with_onnxruntime"]["fp32"]["exporter"] == how == graph_made_by(tmp_path / "onnx" / "model.onnx")
    )
    files = {f.name for f in (tmp_path / "onnx").iterdir()} - {"model.int8.onnx"}
    assert files == {"README.md", "model.onnx", "model.onnx.data", "spamjob_onnx.json", "tokenizer"}  # no temporaries
    assert how != "dynamo" or meta["checked_with_onnxruntime"]["int8"]["agreement"] >= 0.95
    weights = (tmp_path / "onnx" / "model.onnx.data").stat().st_size
    assert weights > 10 * (tmp_path / "onnx" / "model.onnx").stat().st_size
    clf = load_classifier(classifier_dir)
    np.testing.assert_allclose(
        run_graph(tmp_path / "onnx" / "model.onnx", texts, clf), spam_probability(clf, texts)[0], atol=1e-4, rtol=0
    )


def test_one_line_errors(classifier_dir, tmp_path, monkeypatch):
    r = CliRunner().invoke(
        cli, ["export", str(classifier_dir), "--format", "hf", "--quantize", "int8", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 1 and "--quantize is for --format onnx" in r.output
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if the extra were not installed
    r = CliRunner().invoke(cli, ["export", str(classifier_dir), "--format", "onnx", "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "pip install 'spamjob[onnx]'" in r.output and "Traceback" not in r.output
