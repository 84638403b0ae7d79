"""spamjob score (spamjob.scoring): what a job computes: accuracy, thresholds, runtimes and options, workers,
memory, kept columns and one output schema."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import (
    REPO,
    predictions,
    report,
    run_in_repo,
    score,
    sms_messages,
    write_parquet,
)


def test_scoring_the_test_split_reproduces_training_accuracy(classifier_dir, data_dir, tmp_path):
    out = tmp_path / "o"
    r = score(str(data_dir / "test.csv"), "--model", str(classifier_dir), "--out", str(out), "--label-column", "Label")
    assert r.exit_code == 0, r.output
    metrics = json.loads((classifier_dir / "metrics.json").read_text())
    at = metrics["operating_point"]["test"]  # training's figures at the threshold it chose
    threshold = json.loads((classifier_dir / "config.json").read_text())["operating_point"]["threshold"]
    rep = report(out)
    assert rep["threshold"]["value"] == threshold and "rule f1" in rep["threshold"]["source"]
    assert rep["accuracy"] == at["accuracy"] and rep["labels"]["examples"] == 300
    assert (rep["labels"]["precision"], rep["labels"]["recall"]) == (at["precision"], at["recall"])
    assert rep["labels"]["at_0.5"]["accuracy"] == metrics["test"]["accuracy"]  # training's argmax accuracy
    assert rep["rows"] == {"read": 300, "scored": 300, "flagged": 0, "rejected": 0, "truncated": 0}
    assert "accuracy" in r.output and str(out / "report.md") in r.output
    df = predictions(out)
    src = pd.read_csv(data_dir / "test.csv")
    assert df["Text"].tolist() == src["Text"].tolist()  # every row, in input order
    assert set(df["prediction"]) <= {"ham", "spam"} and df["error"].isna().all()
    assert ((df["spam_probability"] > threshold) == (df["prediction"] == "spam")).all()
    assert (out / "_SUCCESS").exists() and (out / "report.md").exists()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == 300 and manifest["plan"]["model"]["sha256"]
    assert manifest["plan"]["inputs"][0]["size"] == (data_dir / "test.csv").stat().st_size


def test_threshold_half_reproduces_the_argmax(classifier_dir, data_dir, tmp_path):
    from spamjob.artifact import load_classifier
    from spamjob.text import encode, pad_batch

    r = score(
        str(data_dir / "test.csv"),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "o"),
        "--label-column",
        "Label",
        "--threshold",
        "0.5",
    )
    assert r.exit_code == 0, r.output
    df, rep = predictions(tmp_path / "o"), report(tmp_path / "o")
    clf = load_classifier(classifier_dir)
    ids = [s[: clf.max_length] for s in encode(clf.tokenizer, df["Text"].tolist())]
    b = pad_batch(ids, clf.max_length, padding=clf.padding)
    with torch.no_grad():
        argmax = clf.model(b.input_ids, b.lengths).argmax(-1).numpy()  # the two logits, unbatched path
    assert (df["prediction"] == np.where(argmax == 1, "spam", "ham")).all()
    metrics = json.loads((classifier_dir / "metrics.json").read_text())
    assert rep["accuracy"] == metrics["test"]["accuracy"] and rep["threshold"]["source"] == "--threshold"
    assert rep["labels"]["confusion_matrix"]["counts"] == rep["labels"]["at_0.5"]["confusion_matrix"]["counts"]


def test_latin1_input_with_encoding_option(classifier_dir, tmp_path):
    src = tmp_path / "latin.tsv"
    src.write_bytes("message\tlabel\ncaf\xe9 au lait\tham\n".encode("latin-1"))
    r = score(str(src), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--encoding", "latin-1")
    assert r.exit_code == 0, r.output
    df = predictions(tmp_path / "o")
    assert df["message"].tolist() == ["café au lait"] and df["error"].isna().all()


def test_predictions_do_not_depend_on_batching(sms_path, classifier_dir):
    import torch

    from spamjob.artifact import load_classifier
    from spamjob.scoring.runtimes.pytorch import TorchPredictor as Predictor

    clf = load_classifier(classifier_dir)
    ids = clf.tokenizer.encode_ordinary_batch(sms_messages(sms_path, 64, 3))
    alone = np.array([Predictor(clf, torch.device("cpu"), "no", 10_000)([s])[0] for s in ids])
    for budget in (64, 700, 100_000):
        together = Predictor(clf, torch.device("cpu"), "no", budget)(ids)
        np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    spread = Predictor(clf, torch.device("cpu"), "no", 64, workers=3)  # batches spread over model workers
    try:
        np.testing.assert_allclose(spread(ids), alone, atol=1e-5, rtol=0)
        assert spread(ids[:1]).shape == (1,) and spread([]).shape == (0,)
    finally:
        spread.close()


def test_cpu_scoring_records_its_model_workers(classifier_dir, data_dir, tmp_path):
    """On CPU, --threads N is N model workers of one torch thread each; the results do not change."""
    outs = {}
    for n in (1, 3):
        r = score(
            str(data_dir / "validation.csv"),
            "--model",
            str(classifier_dir),
            "--out",
            str(tmp_path / str(n)),
            "--threads",
            str(n),
            "--batch-tokens",
            "200",
        )
        assert r.exit_code == 0, r.output
        assert report(tmp_path / str(n))["threads"] == {"threads": n, "reason": "--threads", "workers": n}
        outs[n] = predictions(tmp_path / str(n))
    pd.testing.assert_frame_equal(outs[1], outs[3], check_exact=False, atol=1e-5)


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_memory_stays_flat_with_ten_times_the_rows(sms_path, classifier_dir, tmp_path):
    msgs = sms_messages(sms_path, 2000, 4)
    small = write_parquet(tmp_path / "small.parquet", msgs, row_group_size=1000)
    big = write_parquet(tmp_path / "big.parquet", msgs * 10, row_group_size=1000)
    peaks = []
    for inp in (small, big):
        r = run_in_repo(
            [
                sys.executable,
                "-m",
                "spamjob.cli",
                "score",
                str(inp),
                "--model",
                str(classifier_dir),
                "--out",
                str(tmp_path / inp.stem),
                "--window-rows",
                "500",
                "--no-progress",
            ]
        )
        assert r.returncode == 0, r.stderr
        peaks.append(report(tmp_path / inp.stem)["peak_rss_mb"])
    assert report(tmp_path / "big")["rows"]["read"] == 20000
    assert peaks[1] <= peaks[0] * 1.10, peaks


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_int8_quantization_reports_agreement(classifier_dir, data_dir, tmp_path, runtime):
    """torch: on the first 128 rows of the job (the validation split's 149 here); ONNX Runtime: as
    checked when the int8 graph was made, on the 6 odd messages and 128 of the test split."""
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir), "--out", str(tmp_path / "q")]
    r = run_in_repo([sys.executable, "-m", "spamjob.cli", "score", *args, "--quantize", "int8", "--runtime", runtime])
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr  # torch's deprecation of its int8 kernels is one line of ours
    agreement = report(tmp_path / "q")["agreement_with_fp32"]
    rows, on = {"torch": (128, "this job's first window"), "onnxruntime": (134, "int8 ONNX graph was made")}[runtime]
    assert agreement["rows_compared"] == rows and on in agreement["measured_on"]
    assert 0.9 <= agreement["same_prediction"] <= 1.0


def test_jobs_script_runs_the_score_command_standalone(classifier_dir, tmp_path):
    """jobs/score.py is `spamjob score` on its own: the same one-line errors and usage errors."""
    bad = [str(tmp_path / "nothing-*.csv"), "--model", str(classifier_dir), "--out", str(tmp_path / "o")]
    job = subprocess.run([sys.executable, "jobs/score.py", *bad], capture_output=True, text=True, cwd=REPO)
    cli_run = run_in_repo([sys.executable, "-m", "spamjob.cli", "score", *bad])
    assert job.returncode == cli_run.returncode == 1
    assert job.stderr == cli_run.stderr and job.stderr.startswith("Error: ") and job.stderr.count("\n") == 1
    usage = subprocess.run(
        [sys.executable, "jobs/score.py", "x.csv", "--model", "m", "--out", "o", "--format", "xlsx"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        usage.returncode == 2 and "Usage: score.py [OPTIONS]" in usage.stderr and "'xlsx' is not one of" in usage.stderr
    )


def test_tokenizer_processes_give_the_same_output(sms_path, classifier_dir, tmp_path):
    inp = write_parquet(tmp_path / "in.parquet", sms_messages(sms_path, 5000, 5), row_group_size=5000)
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        r = score(
            str(inp),
            "--model",
            str(classifier_dir),
            "--out",
            str(out),
            "--tokenize-workers",
            workers,
            "--window-rows",
            "5000",
        )
        assert r.exit_code == 0, r.output
        outs.append(predictions(out))
    pd.testing.assert_frame_equal(outs[0], outs[1])


@pytest.mark.slow
def test_compiled_model_gives_the_same_predictions(classifier_dir, data_dir, tmp_path):
    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir)]
    assert score(*args, "--out", str(tmp_path / "plain")).exit_code == 0
    r = score(*args, "--out", str(tmp_path / "compiled"), "--compile")
    assert r.exit_code == 0, r.output
    a, b = predictions(tmp_path / "plain"), predictions(tmp_path / "compiled")
    np.testing.assert_allclose(a["spam_probability"], b["spam_probability"], atol=1e-5, rtol=0)


def test_last_pooling_classifier_report_says_rows_are_padded(data_dir, classifier_dir, tmp_path):
    from spamjob.config import TrainConfig
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
    for model, note in ((run, True), (classifier_dir, False)):
        out = tmp_path / f"o-{model.name}"
        r = score(str(data_dir / "validation.csv"), "--model", str(model), "--out", str(out))
        assert r.exit_code == 0, r.output
        assert ("padding_note" in report(out)) == note
        assert ("padded to max_length 120" in (out / "report.md").read_text()) == note


def test_kept_parquet_columns_pass_through_bit_for_bit(classifier_dir, tmp_path):
    import datetime
    import decimal

    table = pa.table(
        {
            "text": ["win a prize", "see you"],
            "raw": pa.array([b"caf\xe9 \xff\x00", b"ok"], type=pa.binary()),
            "amount": pa.array([decimal.Decimal("1.25"), None], type=pa.decimal128(9, 2)),
            "at": pa.array([datetime.datetime(2026, 1, 2, 3, 4, 5), None], type=pa.timestamp("us", tz="Europe/Berlin")),
            "tags": pa.array([[1, 2], []], type=pa.list_(pa.int32())),
            "meta": pa.array([{"a": 1, "b": "x"}, None], type=pa.struct([("a", pa.int64()), ("b", pa.string())])),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    r = score(str(tmp_path / "in.parquet"), "--model", str(classifier_dir), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    out = pq.read_table(tmp_path / "o" / "predictions")
    assert out.select(table.column_names).equals(table)  # same types, same values, same bytes


def test_inputs_with_different_columns_give_one_schema(classifier_dir, tmp_path):
    pq.write_table(pa.table({"text": ["a b", "c"], "n": pa.array([1, 2], type=pa.int32())}), tmp_path / "a.parquet")
    pq.write_table(
        pa.table({"id": ["x"], "text": ["d e"], "n": pa.array([3], type=pa.int64())}), tmp_path / "b.parquet"
    )
    pd.DataFrame({"text": ["f"], "n": ["four"], "extra": ["e"]}).to_csv(tmp_path / "c.csv", index=False)
    r = score(
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.parquet"),
        str(tmp_path / "c.csv"),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "o"),
    )
    assert r.exit_code == 0, r.output
    parts = sorted((tmp_path / "o" / "predictions").glob("*.parquet"))
    assert len({pq.read_schema(p) for p in parts}) == 1  # every part has the same schema
    df = pd.read_parquet(tmp_path / "o" / "predictions")
    assert list(df.columns) == ["text", "n", "id", "extra", "prediction", "spam_probability", "truncated", "error"]
    assert sorted(df["text"]) == ["a b", "c", "d e", "f"] and sorted(df["n"]) == ["1", "2", "3", "four"]
    assert df["id"].isna().sum() == 3 and df["extra"].isna().sum() == 3
    out = report(tmp_path / "o")["output"]
    assert out["filled_with_nulls"][str(tmp_path / "a.parquet")] == ["id", "extra"]
    pq.write_table(pa.table({"text": ["g"], "n": pa.array([[1]])}), tmp_path / "d.parquet")
    r = score(
        str(tmp_path / "a.parquet"),
        str(tmp_path / "d.parquet"),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "o2"),
    )
    assert r.exit_code == 1 and "column 'n' is" in r.output and not (tmp_path / "o2").exists()


def test_text_as_string_dictionary_and_bytes_in_one_job_keeps_every_byte(classifier_dir, tmp_path):
    """Parquet text as string, dictionary and binary (one value not UTF-8) and a CSV file with a bad
    byte: one job, every row once, the bad ones flagged, the text column binary holding each input's
    exact bytes."""
    pq.write_table(pa.table({"text": ["win a prize", "see you"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": pa.array(["call now"]).dictionary_encode()}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": pa.array([b"caf\xe9 \xff bad", b"ok then"], pa.binary())}), tmp_path / "c.parquet")
    (tmp_path / "d.csv").write_bytes(b"text\nfree \xfe entry\nlunch?\n")
    r = score(str(tmp_path), "--model", str(classifier_dir), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    out = pq.read_table(tmp_path / "o" / "predictions")
    assert out.schema.field("text").type == pa.large_binary()
    rows = dict(zip(out.column("text").to_pylist(), out.column("error").to_pylist()))
    assert rows == {
        b"win a prize": None,
        b"see you": None,
        b"call now": None,
        b"caf\xe9 \xff bad": "invalid UTF-8 in text",
        b"ok then": None,
        b"free \xfe entry": "invalid UTF-8 in text",
        b"lunch?": None,
    }
    r = score(str(tmp_path), "--model", str(classifier_dir), "--out", str(tmp_path / "c"), "--format", "csv")
    assert r.exit_code == 0, r.output  # CSV parts hold text: bytes as UTF-8, bad ones as U+FFFD
    texts = pd.concat(pd.read_csv(p) for p in (tmp_path / "c" / "predictions").glob("*.csv"))["text"]
    assert sorted(texts) == sorted(
        ["win a prize", "see you", "call now", "caf\ufffd \ufffd bad", "ok then", "free \ufffd entry", "lunch?"]
    )


def test_kept_columns_of_different_types_keep_every_value_or_stop_before_any_file(classifier_dir, tmp_path):
    import datetime
    import decimal

    pq.write_table(
        pa.table(
            {
                "text": ["a b", "c"],
                "n": pa.array([1, 2], pa.int32()),
                "big": pa.array([2**53 + 1, 0], pa.int64()),
                "amount": pa.array([decimal.Decimal("12345678.91"), None], pa.decimal128(10, 2)),
                "at": pa.array([datetime.datetime(2026, 1, 2, 3, 4, 5, 6), None], pa.timestamp("us")),
            }
        ),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "text": ["d e"],
                "n": pa.array([2**40], pa.int64()),
                "big": pa.array([0.5], pa.float64()),
                "amount": pa.array([decimal.Decimal("0.0001")], pa.decimal128(20, 4)),
                "at": pa.array([1], pa.timestamp("ns")),
            }
        ),
        tmp_path / "b.parquet",
    )
    model = ["--model", str(classifier_dir)]
    r = score(str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), *model, "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    out = pq.read_table(tmp_path / "o" / "predictions")
    assert [out.schema.field(c).type for c in ("n", "big", "amount", "at")] == [
        pa.int64(),
        pa.large_string(),
        pa.decimal128(20, 4),
        pa.timestamp("ns"),
    ]
    by_text = {row["text"]: row for row in out.to_pylist()}
    assert by_text["a b"]["big"] == str(2**53 + 1) and by_text["d e"]["big"] == "0.5"  # no float64 rounding
    assert by_text["a b"]["amount"] == decimal.Decimal("12345678.91") and by_text["d e"]["n"] == 2**40
    assert by_text["a b"]["at"] == pd.Timestamp("2026-01-02 03:04:05.000006")
    pq.write_table(
        pa.table({"text": ["f"], "at": pa.array([datetime.datetime(1, 1, 1)], pa.timestamp("us"))}),
        tmp_path / "old.parquet",
    )
    pq.write_table(pa.table({"text": ["g"], "raw": pa.array([b"\xff"], pa.binary())}), tmp_path / "raw.parquet")
    pq.write_table(pa.table({"text": ["h"], "raw": pa.array([7], pa.int64())}), tmp_path / "raw2.parquet")
    for pair, message in (
        ((tmp_path / "old.parquet", tmp_path / "b.parquet"), "cannot hold every value"),
        ((tmp_path / "raw.parquet", tmp_path / "raw2.parquet"), "column 'raw' is binary and int64"),
    ):
        r = score(*map(str, pair), *model, "--out", str(tmp_path / "o2"))
        assert r.exit_code == 1 and message in r.output and r.output.count("\n") == 1, r.output
        assert not (tmp_path / "o2").exists()


def test_duplicates_are_scored_once_and_every_row_is_written_once(classifier_dir, sms_path, tmp_path):
    """Half the rows repeat a text of the other half, spread over windows and row groups: every id
    once, a text's rows one probability (to batch-invariance: a window may run a text that a
    window still in flight runs too), the same labels as scoring each row (--no-dedup)."""
    texts = sms_messages(sms_path, 300, seed=5)
    rng = np.random.default_rng(0)
    rows = texts + [texts[i] for i in rng.integers(0, 300, 300)]
    order = rng.permutation(600)
    inp = write_parquet(tmp_path / "dup.parquet", [rows[i] for i in order], 250, id=order)
    for out, flag in (("once", ()), ("each", ("--no-dedup",))):
        args = [str(inp), "--model", str(classifier_dir), "--out", str(tmp_path / out), "--window-rows", "200"]
        assert score(*args, *flag).exit_code == 0
    once, each = predictions(tmp_path / "once"), predictions(tmp_path / "each")
    assert sorted(once["id"]) == list(range(600)) and len(once) == len(each) == 600
    spread = once.groupby("text")["spam_probability"].agg(lambda p: p.max() - p.min())
    assert spread.max() < 1e-6 and (once.groupby("text").size() > 1).sum() > 100
    once, each = once.sort_values("id"), each.sort_values("id")
    assert once["prediction"].tolist() == each["prediction"].tolist()
    np.testing.assert_allclose(once["spam_probability"], each["spam_probability"], atol=1e-6, rtol=0)
    assert report(tmp_path / "once")["rows"]["scored"] == 600
