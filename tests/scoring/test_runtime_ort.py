"""`spamjob score --runtime onnxruntime`: ONNX Runtime runs the graph of spamjob's own export inside
the scoring job; everything around the model is the job's own (flags, truncation, resume, the
plan), and the probabilities are torch's within 1e-4."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import (
    TWO_CPU_RANKS,
    flip_byte,
    predictions,
    report,
    run_in_repo,
    score,
    scored,
    sms_messages,
    without_timing,
)

pytest.importorskip("onnxruntime")  # the `onnx` extra; .ci/run installs it

ODD = ["hi <|endoftext|> there", "<|endoftext|>", "win<|endoftext|>", "free " * 300, "call now " * 100]


@pytest.fixture(scope="module")
def inputs(sms_path, tmp_path_factory) -> Path:
    """200 real messages (special-token text, over-length ones) and a null, an empty, a blank and an
    invalid UTF-8 row, in a Parquet file of 4 row groups."""
    texts = [t.encode() for t in sms_messages(sms_path, 195, seed=3) + ODD] + [None, b"", b"  \n", b"caf\xe9 \xff"]
    path = tmp_path_factory.mktemp("ort") / "in.parquet"
    table = pa.table({"id": range(len(texts)), "text": pa.array(texts, pa.binary())})
    pq.write_table(table, path, row_group_size=60)
    return path


@pytest.fixture(scope="module")
def by_torch(inputs, classifier_dir, tmp_path_factory) -> Path:
    return scored(inputs, classifier_dir, tmp_path_factory.mktemp("torch") / "o", "--runtime", "torch")


def test_onnxruntime_scores_as_torch_within_1e4(inputs, classifier_dir, by_torch, tmp_path):
    r = score(str(inputs), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--runtime", "onnxruntime")
    assert r.exit_code == 0, r.output
    got, want = predictions(tmp_path / "o"), predictions(by_torch)
    assert len(got) == 204 and got["error"].notna().sum() == 4 and got["truncated"].sum() >= 2
    pd.testing.assert_frame_equal(
        got.drop(columns=["spam_probability", "prediction"]), want.drop(columns=["spam_probability", "prediction"])
    )
    assert np.nanmax(np.abs(got["spam_probability"] - want["spam_probability"])) <= 1e-4
    assert got["spam_probability"].isna().equals(want["spam_probability"].isna())
    t = report(tmp_path / "o")["threshold"]["value"]
    clear = (want["spam_probability"] - t).abs() > 1e-4  # labels agree wherever 1e-4 cannot cross the threshold
    assert (got["prediction"][clear] == want["prediction"][clear]).all()
    rep = report(tmp_path / "o")
    assert rep["runtime"]["name"] == "onnxruntime" and rep["runtime"]["session"]["intra_op_threads"] == 1
    assert "runtime: onnxruntime" in (tmp_path / "o" / "report.md").read_text()
    assert report(by_torch)["runtime"]["name"] == "torch"


def test_the_graph_is_exported_once_per_classifier_and_reused(inputs, classifier_dir, tmp_path, monkeypatch):
    from spamjob.scoring.runtimes import ort

    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    made = []
    build = ort.build
    monkeypatch.setattr(ort, "build", lambda *a, **k: made.append(a[2]) or build(*a, **k))
    first = ort.scoring_graph(classifier_dir)
    assert first.is_relative_to(tmp_path / "cache" / "onnx") and made == [None]
    assert ort.scoring_graph(classifier_dir) == first and made == [None]
    int8 = ort.scoring_graph(classifier_dir, "int8")  # the folder is made again, with the int8 graph
    assert int8 == first.with_name("model.int8.onnx") and made == [None, "int8"]
    assert ort.scoring_graph(classifier_dir) == first and made == [None, "int8"]
    checks = json.loads((first.parent / "spamjob_onnx.json").read_text())["checked_with_onnxruntime"]
    assert checks["fp32"]["max_abs_diff"] <= 1e-4 and checks["fp32"]["messages"] > 6


@pytest.mark.slow  # (16 s together: the default suite stays under 5 minutes)
def test_a_graph_that_fails_its_check_is_never_used(classifier_dir, tmp_path, monkeypatch):
    from spamjob.errors import SpamjobError
    from spamjob.scoring.runtimes import ort, ort_graph

    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ort_graph, "TOLERANCE", -1.0)  # no graph can pass
    with pytest.raises(SpamjobError, match="the ONNX graph differs from spamjob"):
        ort.scoring_graph(classifier_dir)
    monkeypatch.setattr(ort_graph, "TOLERANCE", 1e-4)
    made = []
    build = ort.build
    monkeypatch.setattr(ort, "build", lambda *a, **k: made.append(1) or build(*a, **k))
    ort.scoring_graph(classifier_dir)
    assert made == [1]  # exported again: the failed folder was not taken for a checked one


@pytest.mark.slow
def test_a_damaged_cached_graph_is_made_again_with_a_note(inputs, classifier_dir, tmp_path, capsys):
    """The cached graph is checked against the sha256 recorded when it was made: a partial copy (which
    ONNX Runtime cannot load: one line, never its traceback) or a flipped byte (which it would load and
    score wrong) is rebuilt once, with a `note:` line, and scores as the undamaged graph did."""
    from spamjob.errors import SpamjobError
    from spamjob.fsutil import sha256_file
    from spamjob.scoring.runtimes.ort import scoring_graph
    from spamjob.scoring.runtimes.ort_session import open_session, session_settings

    args = [str(inputs), "--model", str(classifier_dir), "--runtime", "onnxruntime"]
    assert score(*args, "--out", str(tmp_path / "before")).exit_code == 0
    graph = scoring_graph(classifier_dir)
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])
    with pytest.raises(SpamjobError, match=r"^ONNX Runtime cannot load .*model.onnx: "):
        open_session(graph, session_settings(1))
    r = score(*args, "--out", str(tmp_path / "after"))
    assert r.exit_code == 0, r.output
    assert f"note: {graph} in the cache is damaged (model.onnx differs from the sha256 recorded" in r.output
    pd.testing.assert_frame_equal(predictions(tmp_path / "after"), predictions(tmp_path / "before"))
    flip_byte(graph)
    capsys.readouterr()
    assert scoring_graph(classifier_dir) == graph and "in the cache is damaged" in capsys.readouterr().out
    assert sha256_file(graph) == json.loads((graph.parent / "spamjob_onnx.json").read_text())["files"]["model.onnx"]


def test_int8_agreement_is_sampled_from_the_job_when_the_graph_saw_too_few_messages(
    inputs, classifier_dir, tmp_path, monkeypatch
):
    """A classifier copied without its data folder: its graph is checked on the 6 odd messages
    only, so the job scores up to 128 of its own texts in fp32 too (its first window: a row group of
    60 rows, each distinct text once) and reports that."""
    import shutil

    moved = tmp_path / "clf"
    shutil.copytree(classifier_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": {"folder": str(tmp_path / "gone")}}))
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    r = score(str(inputs), "--model", str(moved), "--out", str(tmp_path / "o"), "--quantize", "int8")
    assert r.exit_code == 0, r.output
    agreement = report(tmp_path / "o")["agreement_with_fp32"]
    first = pq.read_table(inputs).column("text").to_pylist()[:60]
    distinct = len({t for t in first if t is not None and t.strip()})
    assert agreement["rows_compared"] == distinct and "first window" in agreement["measured_on"]
    check = json.loads(next((tmp_path / "cache" / "onnx").glob("*/spamjob_onnx.json")).read_text())
    assert check["checked_with_onnxruntime"]["int8"]["messages"] == 6


def test_a_rerun_with_the_other_runtime_is_another_job(inputs, classifier_dir, by_torch):
    args = [str(inputs), "--model", str(classifier_dir), "--out", str(by_torch)]
    r = score(*args, "--runtime", "onnxruntime")
    assert r.exit_code == 1 and "pass --overwrite" in r.output
    r = score(*args, "--runtime", "torch")  # the same job again: nothing to redo
    assert r.exit_code == 0, r.output


def test_classify_on_onnxruntime_gives_torchs_labels(classifier_dir):
    from click.testing import CliRunner

    from spamjob.cli import cli

    texts = ["WIN a free prize now!!", "see you at 5", "free " * 300, "hi <|endoftext|> there"]
    rows = {}
    for runtime in ("torch", "onnxruntime"):
        r = CliRunner().invoke(
            cli, ["classify", "--model", str(classifier_dir), "--json", "--runtime", runtime, *texts]
        )
        assert r.exit_code == 0, r.output
        rows[runtime] = [json.loads(line) for line in r.output.splitlines()]
    threshold = json.loads((classifier_dir / "config.json").read_text())["operating_point"]["threshold"]
    for a, b in zip(rows["torch"], rows["onnxruntime"]):
        assert a["truncated"] == b["truncated"] and abs(a["spam_probability"] - b["spam_probability"]) <= 1e-4
        assert a["label"] == b["label"] or abs(a["spam_probability"] - threshold) <= 1e-4


def test_one_line_errors(inputs, classifier_dir, tmp_path, monkeypatch):
    args = [str(inputs), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--runtime", "onnxruntime"]
    r = score(*args, "--mixed-precision", "bf16")
    assert r.exit_code == 1 and r.output == "Error: --runtime onnxruntime runs fp32 (or --quantize int8), not bf16\n"
    r = score(*args, "--compile")
    assert r.exit_code == 1 and r.output == "Error: --compile is for --runtime torch\n"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    r = score(*args)
    assert r.exit_code == 1
    assert r.output == "Error: --runtime onnxruntime needs onnx and onnxruntime: pip install 'spamjob[onnx]'\n"
    assert not (tmp_path / "o").exists()


def test_auto_is_onnxruntime_for_cpu_int8_where_installed_else_torch(monkeypatch):
    from spamjob.scoring.runtimes import Request, resolve

    assert resolve("auto", Request("cpu", quantize="int8")) == "onnxruntime"
    assert resolve("auto", Request("cpu")) == "torch"  # fp32: on a par, and no graph to make
    assert resolve("auto", Request("cuda", "bf16")) == "torch"
    assert resolve("auto", Request("cpu", quantize="int8", compile=True)) == "torch"
    assert resolve("onnxruntime", Request("cpu")) == "onnxruntime"
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "onnxruntime" else object())
    assert resolve("auto", Request("cpu", quantize="int8")) == "torch"


def _base(inputs: Path, classifier_dir: Path) -> list[str]:
    return [sys.executable, "-m", "spamjob.cli", "score", str(inputs), "--model", str(classifier_dir)]


@pytest.mark.slow
def test_sigkill_then_rerun_on_onnxruntime_equals_uninterrupted(inputs, classifier_dir, tmp_path):
    base = [*_base(inputs, classifier_dir), "--runtime", "onnxruntime", "--window-rows", "20", "--no-progress"]
    full = run_in_repo([*base, "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr
    killed = run_in_repo([*base, "--out", str(tmp_path / "k")], env={"SPAMJOB_KILL_AFTER_WINDOWS": "5"})
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "k" / "_SUCCESS").exists()
    assert len(list((tmp_path / "k" / "_parts").iterdir())) == 1
    again = run_in_repo([*base, "--out", str(tmp_path / "k")])
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(predictions(tmp_path / "k"), predictions(tmp_path / "full"))
    assert without_timing(report(tmp_path / "k")) == without_timing(report(tmp_path / "full"))


@pytest.mark.slow
def test_two_ranks_on_onnxruntime_equal_one_process(inputs, classifier_dir, by_torch, tmp_path):
    common = [str(inputs), "--model", str(classifier_dir), "--runtime", "onnxruntime", "--no-progress"]
    one = run_in_repo([sys.executable, "jobs/score.py", *common, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    launch = TWO_CPU_RANKS
    two = run_in_repo(
        [*launch, "jobs/score.py", *common, "--out", str(tmp_path / "two")], env={"ACCELERATE_USE_CPU": "1"}
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert report(tmp_path / "two")["num_processes"] == 2
    pd.testing.assert_frame_equal(predictions(tmp_path / "two"), predictions(tmp_path / "one"))
    diff = np.abs(predictions(tmp_path / "two")["spam_probability"] - predictions(by_torch)["spam_probability"])
    assert np.nanmax(diff) <= 1e-4


@pytest.mark.slow
def test_graphs_made_at_train_time_spare_the_first_job_its_export(data_dir, tmp_path, monkeypatch):
    """`spamjob train --scoring-graphs` makes both graphs into the cache; `spamjob env --model` says
    they are ready; the first int8 job then exports nothing."""
    from click.testing import CliRunner

    from spamjob.cli import cli
    from spamjob.scoring.runtimes import ort

    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    tiny = ["--weights", "random", "--n-layers", "2", "--emb-dim", "32", "--n-heads", "2", "--epochs", "1"]
    r = CliRunner().invoke(cli, ["train", "--data", str(data_dir), "--out", str(out), *tiny, "--scoring-graphs"])
    assert r.exit_code == 0, r.output
    graphs = json.loads((out / "metrics.json").read_text())["scoring_graphs"]
    assert Path(graphs["int8"]).is_file() and Path(graphs["fp32"]).is_file()
    env = run_in_repo([sys.executable, "-m", "spamjob.cli", "env", "--model", str(out)])
    assert f"- classifier {out}: ONNX Runtime graphs in the cache: fp32 ready, int8 ready" in env.stdout
    monkeypatch.setattr(ort, "build", lambda *a, **k: pytest.fail("a graph was exported again"))
    args = [str(data_dir / "test.csv"), "--model", str(out), "--out", str(tmp_path / "o"), "--quantize", "int8"]
    assert score(*args).exit_code == 0 and report(tmp_path / "o")["runtime"]["name"] == "onnxruntime"
