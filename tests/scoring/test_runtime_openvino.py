"""`spamjob score --runtime openvino`: OpenVINO compiles the classifier's checked ONNX graph and runs it
inside the scoring job; everything around the model is the job's own. fp32 is torch's within 1e-4;
bf16's agreement with fp32 is measured once per graph and CPU, and `auto` takes OpenVINO for bf16
only on the x86 bf16 units where it was measured faster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import flip_byte, predictions, report, score, scored, sms_messages, write_parquet

pytest.importorskip("openvino")  # the `openvino` extra (.ci/run installs it), which brings
pytest.importorskip("onnxruntime")  # the onnx extra too: a README install has openvino alone

ODD = ["hi <|endoftext|> there", "<|endoftext|>", "free " * 300]


@pytest.fixture(scope="module")
def inputs(sms_path, tmp_path_factory) -> Path:
    """150 real messages, odd ones and a null and an empty row, in a Parquet file of 3 row groups."""
    texts = [t.encode() for t in sms_messages(sms_path, 150, seed=4) + ODD] + [None, b""]
    path = tmp_path_factory.mktemp("ov") / "in.parquet"
    return write_parquet(path, pa.array(texts, pa.binary()), 60, id=range(len(texts)))


@pytest.fixture(scope="module")
def by_torch(inputs, classifier_dir, tmp_path_factory) -> Path:
    return scored(inputs, classifier_dir, tmp_path_factory.mktemp("torch") / "o", "--runtime", "torch")


def test_openvino_fp32_scores_as_torch_within_1e4(inputs, classifier_dir, by_torch, tmp_path):
    args = [str(inputs), "--model", str(classifier_dir), "--runtime", "openvino", "--mixed-precision", "no"]
    r = score(*args, "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    got, want = predictions(tmp_path / "o"), predictions(by_torch)
    assert len(got) == 155 and got["error"].notna().sum() == 2 and got["truncated"].sum() >= 1
    pd.testing.assert_frame_equal(
        got.drop(columns=["spam_probability", "prediction"]), want.drop(columns=["spam_probability", "prediction"])
    )
    assert np.nanmax(np.abs(got["spam_probability"] - want["spam_probability"])) <= 1e-4
    t = report(tmp_path / "o")["threshold"]["value"]
    clear = (want["spam_probability"] - t).abs() > 1e-4
    assert (got["prediction"][clear] == want["prediction"][clear]).all()
    rep = report(tmp_path / "o")
    assert rep["runtime"]["name"] == "openvino" and rep["runtime"]["precision"] == "f32"
    assert "agreement_with_fp32" not in rep and "runtime: openvino" in (tmp_path / "o" / "report.md").read_text()


def test_bf16_agreement_is_measured_once_per_graph_and_cpu(inputs, classifier_dir, by_torch, tmp_path, monkeypatch):
    """The first bf16 job measures it on the classifier's test messages (ONNX Runtime's fp32 on the
    same graph), later jobs read it back: no fp32 pass on their critical path."""
    from spamjob.scoring.runtimes import ov

    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    args = [str(inputs), "--model", str(classifier_dir), "--runtime", "openvino", "--mixed-precision", "bf16"]
    assert score(*args, "--out", str(tmp_path / "first")).exit_code == 0
    monkeypatch.setattr(ov, "_fp32", lambda *a: pytest.fail("fp32 ran again"))
    r = score(*args, "--out", str(tmp_path / "second"))
    assert r.exit_code == 0, r.output
    first, second = report(tmp_path / "first"), report(tmp_path / "second")
    agreement = first["agreement_with_fp32"]
    assert agreement == second["agreement_with_fp32"] and agreement["precision"] == "bf16"
    assert agreement["rows_compared"] == 134 and "OpenVINO first ran its graph in bf16" in agreement["measured_on"]
    assert agreement["same_prediction"] >= 0.95 and agreement["max_abs_probability_diff"] < 0.05
    assert second["runtime"] == {"name": "openvino", "version": second["runtime"]["version"], "precision": "bf16",
                                 "streams": second["runtime"]["streams"], "pinned": False}  # fmt: skip
    got, want = predictions(tmp_path / "second"), predictions(by_torch)
    assert np.nanmax(np.abs(got["spam_probability"] - want["spam_probability"])) < 0.05
    assert (got["prediction"] == want["prediction"]).mean() >= 0.95


@pytest.mark.slow
def test_without_test_messages_bf16_is_compared_on_the_jobs_first_window(inputs, classifier_dir, tmp_path, monkeypatch):
    import shutil

    moved = tmp_path / "clf"
    shutil.copytree(classifier_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": {"folder": str(tmp_path / "gone")}}))
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    args = [str(inputs), "--model", str(moved), "--runtime", "openvino", "--mixed-precision", "bf16"]
    assert score(*args, "--out", str(tmp_path / "o")).exit_code == 0
    agreement = report(tmp_path / "o")["agreement_with_fp32"]
    first = [t for t in pq.read_table(inputs).column("text").to_pylist()[:60] if t and t.strip()]
    assert agreement["rows_compared"] == len(set(first)) and "first window" in agreement["measured_on"]


@pytest.mark.slow
def test_a_damaged_compiled_model_is_compiled_again_with_a_note(inputs, classifier_dir, tmp_path, monkeypatch):
    """OpenVINO imports a cached compiled model with a changed byte as it is: spamjob checks its
    sha256 first, compiles again with a `note:` line, and scores as before."""
    from spamjob.fsutil import cache_dir

    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    args = [str(inputs), "--model", str(classifier_dir), "--runtime", "openvino", "--mixed-precision", "no"]
    assert score(*args, "--out", str(tmp_path / "before")).exit_code == 0
    (blob,) = (cache_dir() / "openvino").glob("*/*.blob")
    blob.chmod(0o644)
    flip_byte(blob)
    r = score(*args, "--out", str(tmp_path / "after"))
    assert r.exit_code == 0, r.output
    assert f"note: {blob.parent} in the cache is damaged ({blob.name} differs from the sha256" in r.output
    pd.testing.assert_frame_equal(predictions(tmp_path / "after"), predictions(tmp_path / "before"))
    r = score(*args, "--out", str(tmp_path / "again"))
    assert r.exit_code == 0 and "note:" not in r.output  # the new one recorded


@pytest.mark.parametrize(
    "features, device, precision, extra, chosen",
    [
        ("amx_bf16,amx_int8", "cpu", "bf16", {}, "openvino"),
        ("avx512_bf16,avx512_vnni", "cpu", "bf16", {}, "openvino"),
        ("avx512_bf16", "cpu", "no", {}, "torch"),  # fp32 stays torch's, bit for bit
        ("avx2", "cpu", "bf16", {}, "torch"),  # bf16 asked for on a CPU without the unit
        ("bf16,i8mm", "cpu", "bf16", {}, "torch"),  # Arm: not measured
        ("amx_bf16", "cuda", "bf16", {}, "torch"),
        ("amx_bf16", "cpu", "bf16", {"compile": True}, "torch"),
        ("amx_bf16", "cpu", "no", {"quantize": "int8"}, "onnxruntime"),
    ],
)
def test_auto_picks_openvino_for_bf16_where_measured_faster(machine, features, device, precision, extra, chosen):
    from spamjob.scoring.runtimes import Request, resolve

    machine(features)
    assert resolve("auto", Request(device, precision, **extra)) == chosen


def test_auto_is_torch_where_openvino_is_not_installed(machine, monkeypatch):
    from spamjob.scoring.runtimes import Request, resolve

    machine("amx_bf16")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "openvino" else object())
    assert resolve("auto", Request("cpu", "bf16")) == "torch"


def test_one_line_errors(inputs, classifier_dir, tmp_path, monkeypatch):
    args = [str(inputs), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--runtime", "openvino"]
    r = score(*args, "--quantize", "int8")
    assert (
        r.exit_code == 1 and r.output == "Error: --quantize int8 runs on --runtime onnxruntime or torch, not openvino\n"
    )
    r = score(*args, "--mixed-precision", "fp16")
    assert r.exit_code == 1
    assert r.output == "Error: --runtime openvino runs bf16 or fp32 (--mixed-precision no), not fp16\n"
    r = score(*args, "--compile")
    assert r.exit_code == 1 and r.output == "Error: --compile is for --runtime torch\n"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    r = score(*args)
    assert r.exit_code == 1
    assert r.output == (
        "Error: --runtime openvino needs OpenVINO (and onnx, onnxruntime: its graph): pip install 'spamjob[openvino]'\n"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_scoring_graphs_made_at_train_time_spare_the_first_bf16_job_its_check(machine, data_dir, tmp_path, monkeypatch):
    """On a CPU where `auto` runs OpenVINO, `spamjob train --scoring-graphs` also compiles the graph
    and measures bf16's agreement: the first job then runs no fp32 pass."""
    from click.testing import CliRunner

    from spamjob.cli import cli
    from spamjob.scoring.runtimes import ov

    machine("avx512_bf16")
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    tiny = ["--weights", "random", "--n-layers", "2", "--emb-dim", "32", "--n-heads", "2", "--epochs", "1"]
    r = CliRunner().invoke(cli, ["train", "--data", str(data_dir), "--out", str(out), *tiny, "--scoring-graphs"])
    assert r.exit_code == 0, r.output
    assert "bf16 checked" in json.loads((out / "metrics.json").read_text())["scoring_graphs"]["openvino"]
    monkeypatch.setattr(ov, "_fp32", lambda *a: pytest.fail("fp32 ran in the job"))
    r = score(str(data_dir / "test.csv"), "--model", str(out), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    rep = report(tmp_path / "o")
    assert rep["runtime"]["name"] == "openvino" and rep["agreement_with_fp32"]["rows_compared"] == 134
