"""spamjob score (spamjob.scoring): every row accounted for, bad inputs, crash + rerun, ranks, memory, report."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from support import spark_failed_output

from spamjob.cli import cli
from spamjob.scoring.runtimes.pytorch import spam_probability

REPO = Path(__file__).resolve().parents[1]
TIMING = (
    "wall_time_s",
    "rows_per_s",
    "steady_rows_per_s",
    "num_processes",
    "peak_rss_mb",
    "threads",
)  # what the run and machine decide


def score(*args: str):
    return CliRunner().invoke(cli, ["score", *args, "--no-progress"])


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions")


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def without_timing(r: dict) -> dict:
    r = {k: v for k, v in r.items() if k not in TIMING}
    r["output"] = {k: v for k, v in r["output"].items() if k != "folder"}
    return r


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


def test_messy_csv_every_record_accounted_for(classifier_dir, tmp_path):
    long_text = "win " * 2500  # 10,000 characters
    raw = (
        "\ufeffid,text,label\r\n"
        '1,"hello, ""quoted"" world\nsecond line",ham\r\n'
        "2,extra,fields,here,x\r\n"
        "3,\ttabbed\ttext,SPAM\r\n"
        "4,,ham\r\n"
        "5,   ,spam\r\n"
        "6,hi <|endoftext|> there,maybe\r\n"
        f"7,{long_text},1\r\n"
        "8,plain text,0\r\n"
    ).encode()
    raw += b"9,bad \xff\xfe bytes,ham\r\n"
    src = tmp_path / "messy.csv"
    src.write_bytes(raw)
    out = tmp_path / "o"
    r = score(
        str(src), "--model", str(classifier_dir), "--out", str(out), "--label-column", "label", "--id-column", "id"
    )
    assert r.exit_code == 0, r.output
    df = predictions(out)
    assert df["id"].tolist() == ["1", "3", "4", "5", "6", "7", "8", "9"]
    assert df.loc[0, "text"] == 'hello, "quoted" world\nsecond line'
    assert df.loc[1, "text"] == "\ttabbed\ttext"
    errors = dict(zip(df["id"], [None if pd.isna(e) else e for e in df["error"]]))
    assert errors == {
        "1": None,
        "3": None,
        "4": "empty text",
        "5": "empty text",
        "6": None,
        "7": None,
        "8": None,
        "9": "invalid UTF-8 in text",
    }
    assert df.set_index("id").loc["7", "truncated"] and not df.set_index("id").loc["8", "truncated"]
    assert df["prediction"].isna().tolist() == [e is not None for e in errors.values()]
    rep = report(out)
    assert rep["rows"] == {"read": 8, "scored": 5, "flagged": 3, "rejected": 1, "truncated": 1}
    assert rep["flagged_by_reason"] == {"empty text": 2, "invalid UTF-8 in text": 1}
    assert rep["labels"]["unknown_labels"] == 1 and rep["labels"]["examples"] == 4  # 'maybe' is unknown
    rejects = [json.loads(line) for p in (out / "rejects").iterdir() for line in p.read_text().splitlines()]
    assert rejects == [
        {"file": str(src.resolve()), "line": 3, "reason": "expected 3 fields, found 5", "text": "2,extra,fields,here,x"}
    ]
    # Special-token text is scored as text: same probability as through `classify`.
    from spamjob.artifact import load_classifier

    p, _ = spam_probability(load_classifier(classifier_dir), ["hi <|endoftext|> there"])
    assert df.set_index("id").loc["6", "spam_probability"] == pytest.approx(p[0], abs=1e-5)


def test_latin1_input_with_encoding_option(classifier_dir, tmp_path):
    src = tmp_path / "latin.tsv"
    src.write_bytes("message\tlabel\ncaf\xe9 au lait\tham\n".encode("latin-1"))
    r = score(str(src), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--encoding", "latin-1")
    assert r.exit_code == 0, r.output
    df = predictions(tmp_path / "o")
    assert df["message"].tolist() == ["café au lait"] and df["error"].isna().all()


def _parquet(path: Path, texts: list, row_group_size: int = 1000, **extra) -> Path:
    pq.write_table(pa.table({"text": texts, **extra}), path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing-text-column", "no text column found (looked for Text, text, message, sms; columns: a, b)"),
        ("non-string-text", "text column 'text' holds int64, not text"),
        ("corrupt-parquet", "cannot read"),
        ("glob-nothing", "no input matches"),
        ("unknown-type", "unknown input type"),
        ("bad-model", "is not a trained classifier"),
    ],
)
def test_bad_inputs_fail_before_scoring(classifier_dir, tmp_path, setup, message):
    model = str(classifier_dir)
    if setup == "missing-text-column":
        inp = tmp_path / "x.csv"
        inp.write_text("a,b\n1,2\n")
    elif setup == "non-string-text":
        inp = _parquet(tmp_path / "x.parquet", [1, 2, 3])
    elif setup == "corrupt-parquet":
        inp = tmp_path / "x.parquet"
        inp.write_bytes(b"PAR1 this is not parquet")
    elif setup == "glob-nothing":
        inp = tmp_path / "*.parquet"
    elif setup == "unknown-type":
        inp = tmp_path / "x.json"
        inp.write_text("{}")
    else:
        inp = tmp_path / "x.csv"
        inp.write_text("text\nhi\n")
        model = str(tmp_path)
    r = score(str(inp), "--model", model, "--out", str(tmp_path / "o"))
    assert r.exit_code == 1, r.output
    assert message in r.output and r.output.startswith("Error: ") and r.output.count("\n") == 1
    assert not (tmp_path / "o" / "_SUCCESS").exists()
    assert not (tmp_path / "o" / "predictions").exists()


def test_empty_and_header_only_files_are_accounted_for(classifier_dir, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.csv").write_bytes(b"")
    (tmp_path / "in" / "header.csv").write_text("text,label\n")
    _parquet(tmp_path / "in" / "zero.parquet", pa.array([], type=pa.string()))
    (tmp_path / "in" / "ok.csv.gz").write_bytes(gzip.compress(b"text\nhello\nworld\n"))
    r = score(str(tmp_path / "in"), "--model", str(classifier_dir), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    rep = report(tmp_path / "o")
    assert rep["rows"]["read"] == 2 and len(rep["inputs"]) == 4
    assert {Path(p).name: c["rows_read"] for p, c in rep["inputs"].items()} == {
        "empty.csv": 0,
        "header.csv": 0,
        "zero.parquet": 0,
        "ok.csv.gz": 2,
    }
    assert len(predictions(tmp_path / "o")) == 2


def test_null_texts_in_parquet(classifier_dir, tmp_path):
    inp = _parquet(tmp_path / "n.parquet", ["a message", None, "", "another"])
    r = score(str(inp), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--format", "csv")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(next((tmp_path / "o" / "predictions").glob("*.csv")))
    assert df["error"].fillna("").tolist() == ["", "null text", "empty text", ""]
    assert report(tmp_path / "o")["flagged_by_reason"] == {"empty text": 1, "null text": 1}


def test_rerun_same_plan_resumes_other_plan_needs_overwrite(classifier_dir, data_dir, tmp_path):
    out = tmp_path / "o"
    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir), "--out", str(out)]
    assert score(*args).exit_code == 0
    first = predictions(out)
    assert score(*args).exit_code == 0  # nothing left to do, same output
    pd.testing.assert_frame_equal(predictions(out), first)
    r = score(*args, "--label-column", "Label")
    assert r.exit_code == 1 and "another model, other inputs or other options" in r.output
    assert score(*args, "--label-column", "Label", "--overwrite").exit_code == 0
    assert report(out)["accuracy"] is not None
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    r = score(*args[:-1], str(tmp_path / "foreign"), "--overwrite")
    assert r.exit_code == 1 and "which spamjob did not write" in r.output


def _messages(sms_path: Path, n: int, seed: int = 0) -> list[str]:
    """n real messages drawn with replacement from the SMS Spam Collection."""
    texts = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])["Text"].tolist()
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.integers(0, len(texts), n)]


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, **(env or {})}
    )


def test_sigkill_then_rerun_equals_uninterrupted(sms_path, classifier_dir, tmp_path):
    inp = _parquet(tmp_path / "in.parquet", _messages(sms_path, 600), row_group_size=150, label=["ham", "spam"] * 300)
    base = [
        sys.executable,
        "-m",
        "spamjob.cli",
        "score",
        str(inp),
        "--model",
        str(classifier_dir),
        "--window-rows",
        "50",
        "--label-column",
        "label",
        "--no-progress",
    ]
    full = _run([*base, "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr
    killed = _run([*base, "--out", str(tmp_path / "k")], env={"SPAMJOB_KILL_AFTER_WINDOWS": "7"})
    assert killed.returncode == -signal.SIGKILL
    parts = sorted((tmp_path / "k" / "_parts").iterdir())
    assert len(parts) == 2 and not (tmp_path / "k" / "_SUCCESS").exists()  # killed inside the third unit
    assert list((tmp_path / "k" / "predictions").glob(".*.part"))  # its half-written part was never renamed
    again = _run([*base, "--out", str(tmp_path / "k")])
    assert again.returncode == 0, again.stderr
    assert not list((tmp_path / "k" / "predictions").glob(".*"))
    pd.testing.assert_frame_equal(predictions(tmp_path / "k"), predictions(tmp_path / "full"))
    assert len(predictions(tmp_path / "k")) == 600
    assert without_timing(report(tmp_path / "k")) == without_timing(report(tmp_path / "full"))


@pytest.mark.slow
def test_one_and_two_ranks_give_identical_output(sms_path, classifier_dir, tmp_path):
    inp = [_parquet(tmp_path / "a.parquet", _messages(sms_path, 300, 1), row_group_size=100, label=["spam"] * 300)]
    csv = tmp_path / "b.csv"
    pd.DataFrame({"text": _messages(sms_path, 200, 2), "label": ["ham"] * 200}).to_csv(csv, index=False)
    common = [
        *map(str, inp),
        str(csv),
        "--model",
        str(classifier_dir),
        "--label-column",
        "label",
        "--no-progress",
        "--block-mb",
        "1",
    ]
    one = _run([sys.executable, "jobs/score.py", *common, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = _run(
        [
            "accelerate",
            "launch",
            "--config_file",
            "accelerate_config.yaml",
            "--multi_gpu",
            "--num_processes",
            "2",
            "jobs/score.py",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env={"ACCELERATE_USE_CPU": "1"},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    r1, r2 = report(tmp_path / "one"), report(tmp_path / "two")
    assert r1["num_processes"] == 1 and r2["num_processes"] == 2
    assert without_timing(r1) == without_timing(r2)
    a, b = predictions(tmp_path / "one"), predictions(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)
    assert two.stdout.count("scored ") == 1  # the summary comes from the main process only


def test_predictions_do_not_depend_on_batching(sms_path, classifier_dir):
    import torch

    from spamjob.artifact import load_classifier
    from spamjob.scoring.runtimes.pytorch import TorchPredictor as Predictor

    clf = load_classifier(classifier_dir)
    ids = clf.tokenizer.encode_ordinary_batch(_messages(sms_path, 64, 3))
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
    msgs = _messages(sms_path, 2000, 4)
    small = _parquet(tmp_path / "small.parquet", msgs, row_group_size=1000)
    big = _parquet(tmp_path / "big.parquet", msgs * 10, row_group_size=1000)
    peaks = []
    for inp in (small, big):
        r = _run(
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
    r = _run([sys.executable, "-m", "spamjob.cli", "score", *args, "--quantize", "int8", "--runtime", runtime])
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr  # torch's deprecation of its int8 kernels is one line of ours
    agreement = report(tmp_path / "q")["quantization_agreement"]
    rows, on = {"torch": (128, "this job's first window"), "onnxruntime": (134, "int8 ONNX graph was made")}[runtime]
    assert agreement["rows_compared"] == rows and on in agreement["measured_on"]
    assert 0.9 <= agreement["same_prediction"] <= 1.0


def test_jobs_script_runs_the_score_command_standalone(classifier_dir, tmp_path):
    """jobs/score.py is `spamjob score` on its own: the same one-line errors and usage errors."""
    bad = [str(tmp_path / "nothing-*.csv"), "--model", str(classifier_dir), "--out", str(tmp_path / "o")]
    job = subprocess.run([sys.executable, "jobs/score.py", *bad], capture_output=True, text=True, cwd=REPO)
    cli_run = _run([sys.executable, "-m", "spamjob.cli", "score", *bad])
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
    inp = _parquet(tmp_path / "in.parquet", _messages(sms_path, 5000, 5), row_group_size=5000)
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


def test_rerun_with_options_that_change_predictions_is_refused(classifier_dir, data_dir, tmp_path):
    out = tmp_path / "o"
    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir), "--out", str(out)]
    assert score(*args).exit_code == 0
    for other in (["--quantize", "int8"], ["--mixed-precision", "bf16"]):
        r = score(*args, *other)  # a killed fp32 run resumed this way would mix fp32 and int8/bf16 parts
        assert r.exit_code == 1 and "another model, other inputs or other options" in r.output, other
    assert json.loads((out / "_plan.json").read_text())["options"]["quantize"] is None
    assert score(*args, "--quantize", "int8", "--overwrite").exit_code == 0
    assert report(out)["quantize"] == "int8"


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


@pytest.mark.parametrize("foreign", [".git/config", "_my_notes.txt", "report.final.xlsx", "predictions/mine.txt"])
def test_overwrite_deletes_only_what_spamjob_writes(classifier_dir, data_dir, tmp_path, foreign):
    out = tmp_path / "o"
    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir), "--out", str(out)]
    assert score(*args).exit_code == 0
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("not spamjob's")
    r = score(*args, "--label-column", "Label", "--overwrite")
    assert r.exit_code == 1 and "which spamjob did not write" in r.output and r.output.count("\n") == 1
    assert (out / foreign).read_text() == "not spamjob's" and (out / "_SUCCESS").exists()  # nothing deleted
    (out / foreign).unlink()
    if foreign.startswith(".git/"):
        (out / ".git").rmdir()
    assert score(*args, "--label-column", "Label", "--overwrite").exit_code == 0
    assert report(out)["accuracy"] is not None


def test_an_output_inside_an_input_folder_is_never_read(classifier_dir, tmp_path):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"text": [f"message {i}" for i in range(30)], "label": ["ham"] * 30}).to_csv(
        tmp_path / "in" / "a.csv", index=False
    )
    args = [str(tmp_path / "in"), "--model", str(classifier_dir), "--out", str(tmp_path / "in" / "scored")]
    assert score(*args).exit_code == 0
    (tmp_path / "in" / "scored" / "_SUCCESS").unlink()  # as if killed before the end
    assert score(*args).exit_code == 0 and report(tmp_path / "in" / "scored")["rows"]["read"] == 30
    r = score(*args, "--label-column", "label", "--overwrite")
    assert r.exit_code == 0 and report(tmp_path / "in" / "scored")["rows"]["read"] == 30
    r = score(str(tmp_path / "in" / "scored"), "--model", str(classifier_dir), "--out", str(tmp_path / "x"))
    assert r.exit_code == 1 and "a spamjob scoring output; to score its predictions again, name" in r.output
    assert not (tmp_path / "x").exists()  # named explicitly, its predictions/ is scored again (below)


def spark_frames(n: int = 4, rows: int = 25) -> list[pd.DataFrame]:
    return [
        pd.DataFrame({"id": range(k * rows, (k + 1) * rows), "text": [f"msg {k}.{i}" for i in range(rows)]})
        for k in range(n)
    ]


def test_a_folder_a_failed_spark_job_left_scores_exactly_its_committed_parts(classifier_dir, tmp_path):
    """_temporary/ (a half-written attempt, a task not yet committed), .crc files, _SUCCESS and the
    _started_/_committed_ markers are skipped at any depth, as Spark and pyarrow.dataset skip them;
    the hive `day=` folder is read; the report counts what was skipped, the manifest and --verbose
    name it; a file named on the command line is read whatever its name; a glob follows the rule too."""
    layout = spark_failed_output(tmp_path / "in", spark_frames())
    r = score(str(tmp_path / "in"), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--verbose")
    assert r.exit_code == 0, r.output
    assert sorted(predictions(tmp_path / "o")["id"]) == list(range(50))  # parts 0 and 1 only
    assert report(tmp_path / "o")["skipped_files"] == {"hidden": len(layout["hidden"])}
    manifest = json.loads((tmp_path / "o" / "_manifest.json").read_text())
    root = str((tmp_path / "in").resolve()) + "/"
    assert sorted(s["path"].removeprefix(root) for s in manifest["skipped"]) == layout["hidden"]
    assert {s["reason"] for s in manifest["skipped"]} == {"hidden"}
    assert f"skipped (hidden): {root}{layout['hidden'][4]}" in r.output
    assert (
        f"Files under the inputs not read: {len(layout['hidden'])} hidden" in (tmp_path / "o" / "report.md").read_text()
    )
    task = next(h for h in layout["hidden"] if h.endswith(".parquet") and "/task_" in h)
    named = score(str(tmp_path / "in" / task), "--model", str(classifier_dir), "--out", str(tmp_path / "named"))
    assert named.exit_code == 0 and sorted(predictions(tmp_path / "named")["id"]) == list(range(50, 75))
    model = ["--model", str(classifier_dir)]
    globbed = score(str(tmp_path / "in" / "**" / "*.parquet"), *model, "--out", str(tmp_path / "g"))
    assert globbed.exit_code == 0 and sorted(predictions(tmp_path / "g")["id"]) == list(range(50))
    assert report(tmp_path / "g")["skipped_files"] == {"hidden": 2}  # the two parts under _temporary/
    named = score(str(tmp_path / "in" / "_temporary"), *model, "--out", str(tmp_path / "x"))
    assert named.exit_code == 0  # a folder named is read; below it the same rule holds
    assert predictions(tmp_path / "x")["id"].tolist() == list(range(50, 75))
    assert report(tmp_path / "x")["skipped_files"] == {"hidden": 2}  # the task's .crc, the attempt's part


def test_a_scored_output_named_explicitly_is_scored_again(classifier_dir, data_dir, tmp_path):
    """Last night's predictions scored by another classifier (here: another operating point): the
    earlier columns kept as input_*, agreement as accuracy against --label-column prediction."""
    model = ["--model", str(classifier_dir), "--no-progress"]
    old, new = tmp_path / "old", tmp_path / "new"
    assert score(str(data_dir / "test.csv"), *model, "--out", str(old), "--threshold", "0.3").exit_code == 0
    r = score(str(old / "predictions"), *model, "--out", str(new), "--threshold", "0.6", "--label-column", "prediction")
    assert r.exit_code == 0, r.output
    before, after = predictions(old), predictions(new)
    assert list(after.columns) == [
        "Label",
        "Text",
        "input_prediction",
        "input_spam_probability",
        "input_truncated",
        "input_error",
        "prediction",
        "spam_probability",
        "truncated",
        "error",
    ]
    joined = before.merge(after, on="Text", suffixes=("_old", ""))
    assert len(after) == len(before) == 300 and (joined["input_prediction"] == joined["prediction_old"]).all()
    assert np.allclose(joined["input_spam_probability"], joined["spam_probability_old"])
    agreement = (after["prediction"] == after["input_prediction"]).mean()
    assert 0 < agreement < 1 and report(new)["accuracy"] == pytest.approx(agreement)
    part = next((new / "predictions").glob("*.parquet"))
    r = score(str(part), *model, "--out", str(tmp_path / "third"), "--keep-columns", "Text,prediction")
    assert r.exit_code == 0, r.output  # a part named alone; a second generation moves one prefix further
    assert list(predictions(tmp_path / "third").columns) == [
        "Text",
        "input_prediction",
        "prediction",
        "spam_probability",
        "truncated",
        "error",
    ]


@pytest.mark.parametrize(
    "named, out, message",
    [
        ("old", "x", "to score its predictions again, name"),
        ("old/_parts", "x", "to score its predictions again, name"),
        ("old/predictions", "old", "lies inside --out"),
        ("old/predictions", "old/predictions/x", "lies inside"),
        ("unfinished/predictions", "x", "belongs to an unfinished scoring job"),
    ],
)
def test_what_is_never_scored_again_is_one_line(classifier_dir, data_dir, tmp_path, named, out, message):
    model = ["--model", str(classifier_dir), "--no-progress"]
    for done in ("old", "unfinished"):
        assert score(str(data_dir / "validation.csv"), *model, "--out", str(tmp_path / done)).exit_code == 0
    (tmp_path / "unfinished" / "_SUCCESS").unlink()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = score(str(tmp_path / named), *model, "--out", str(tmp_path / out), "--overwrite")
    assert r.exit_code == 1 and message in r.output and r.output.count("\n") == 1, r.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written or deleted


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


def test_rerun_redoes_committed_units_whose_files_were_damaged(sms_path, classifier_dir, tmp_path):
    inp = _parquet(tmp_path / "in.parquet", _messages(sms_path, 300), row_group_size=100)
    csv = tmp_path / "bad.csv"
    csv.write_text("text,n\nhello,1\nbroken,line,extra\nbye,2\n")
    args = [str(inp), str(csv), "--model", str(classifier_dir), "--format", "csv"]
    assert score(*args, "--out", str(tmp_path / "whole")).exit_code == 0
    out = tmp_path / "o"
    assert score(*args, "--out", str(out)).exit_code == 0
    part = sorted((out / "predictions").glob("*.csv"))[1]
    part.write_bytes(part.read_bytes()[:-40])  # truncated after it was committed
    next((out / "rejects").iterdir()).unlink()  # a rejects file deleted
    assert score(*args, "--out", str(out)).exit_code == 0  # both units redone, not trusted
    for name in ("predictions", "rejects"):
        assert {p.name: p.read_bytes() for p in (out / name).iterdir()} == {
            p.name: p.read_bytes() for p in (tmp_path / "whole" / name).iterdir()
        }
    assert report(out)["rows"] == report(tmp_path / "whole")["rows"] and (out / "_SUCCESS").exists()


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_two_runs_on_one_output_never_touch_each_others_files(sms_path, classifier_dir, tmp_path):
    inp = _parquet(tmp_path / "in.parquet", _messages(sms_path, 300), row_group_size=100)
    base = [
        sys.executable,
        "-m",
        "spamjob.cli",
        "score",
        str(inp),
        "--model",
        str(classifier_dir),
        "--window-rows",
        "50",
        "--no-progress",
    ]
    assert _run([*base, "--out", str(tmp_path / "whole")]).returncode == 0
    out = tmp_path / "o"
    first = subprocess.Popen(
        [*base, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SPAMJOB_PAUSE_AFTER_WINDOWS": "1:6"},
    )  # caught mid-unit
    deadline = time.time() + 60
    while not list((out / "predictions").glob(".*.part")) and time.time() < deadline:
        time.sleep(0.1)
    assert list((out / "predictions").glob(".*.part"))  # the first run's live temporary part
    second = _run([*base, "--out", str(out)])  # waits for the unit the first run holds
    # Had the second run deleted the first's temporary part, the first would die at its commit.
    assert first.wait(timeout=120) == 0 and second.returncode == 0, second.stderr
    assert {p.name: p.read_bytes() for p in (out / "predictions").iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "whole" / "predictions").iterdir()
    }
    assert report(out)["rows"]["read"] == 300


def _shard_task(inp: Path, model: Path, out: Path, shard: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "spamjob.cli",
        "score",
        str(inp),
        "--model",
        str(model),
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        "--shard",
        shard,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )


def _all_done(tasks: list[subprocess.Popen], out: Path, rows: int) -> None:
    results = [(t.wait(timeout=600), t.stderr.read()) for t in tasks]
    assert [rc for rc, _ in results] == [0] * len(tasks), [err[-1500:] for _, err in results]
    assert (out / "_SUCCESS").is_file() and report(out)["rows"]["read"] == rows == len(predictions(out))


@pytest.mark.slow
def test_a_task_that_finds_a_plan_being_written_waits_for_it(sms_path, classifier_dir, tmp_path):
    """Two --shard tasks into an empty --out: the one that comes while the other writes the plan
    waits for it (the folder and its plan are one step under the folder's plan lock)."""
    inp = _parquet(tmp_path / "in.parquet", _messages(sms_path, 200), row_group_size=50)
    out = tmp_path / "o"
    first = _shard_task(inp, classifier_dir, out, "0/2", {"SPAMJOB_PAUSE_BEFORE_PLAN": "1:4"})
    deadline = time.time() + 120
    while not (out / "_locks" / "plan.lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (out / "_locks").is_dir() and not (out / "_plan.json").exists()  # created, its plan not yet
    second = _shard_task(inp, classifier_dir, out, "1/2")
    _all_done([first, second], out, 200)


@pytest.mark.slow
def test_six_shard_tasks_started_at_once_fill_one_output(sms_path, classifier_dir, tmp_path):
    """What `sbatch --array=0-5` does, four times: every task exits 0 and the job ends whole (one
    in four tries failed before the plan lock: a task found the folder made but no plan in it)."""
    inp = _parquet(tmp_path / "in.parquet", _messages(sms_path, 240), row_group_size=20)
    for attempt in range(4):
        out = tmp_path / f"o{attempt}"
        _all_done([_shard_task(inp, classifier_dir, out, f"{k}/6") for k in range(6)], out, 240)


def test_temporaries_of_dead_processes_are_cleaned(classifier_dir, data_dir, tmp_path):
    out = tmp_path / "o"
    args = [str(data_dir / "validation.csv"), "--model", str(classifier_dir), "--out", str(out)]
    assert score(*args).exit_code == 0
    stale = [out / "predictions" / ".part-0123456789ab-000000.parquet.99999.part", out / ".report.json.x1y2.part"]
    for p in stale:
        p.write_bytes(b"left by a killed task")
    assert score(*args).exit_code == 0 and (out / "_SUCCESS").exists()
    assert not [p for p in stale if p.exists()]


def _odd_input(tmp_path: Path, kind: str) -> Path:
    if kind == "duplicate-csv-header":
        (tmp_path / "in.csv").write_text("text,text\na,b\n")
    elif kind == "empty-csv-header":
        (tmp_path / "in.csv").write_text("text,,n\na,b,1\n")
    elif kind == "duplicate-parquet-names":
        pq.write_table(
            pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), tmp_path / "in.parquet"
        )
    else:  # nested columns
        pq.write_table(
            pa.table({"text": ["a"], "tags": pa.array([[1, 2]]), "label": pa.array([["spam"]])}),
            tmp_path / "in.parquet",
        )
    return next(tmp_path.glob("in.*"))


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("duplicate-csv-header", [], "'text' appear more than once"),
        ("empty-csv-header", [], "column 2 has an empty name"),
        ("duplicate-parquet-names", [], "'text' appear more than once"),
        (
            "nested",
            ["--format", "csv", "--keep-columns", "text,tags"],
            "'tags' holds list<element: int64>, which --format csv",
        ),
        ("nested", ["--label-column", "label"], "--label-column 'label' holds list<element: string>"),
        ("empty-csv-header", ["--keep-columns", "text,text"], "keep-columns names a column twice"),
        ("empty-csv-header", ["--delimiter", "\\t"], "delimiter must be one character, got '\\\\t'"),
        ("empty-csv-header", ["--encoding", "utf-99"], "encoding 'utf-99' is not one Python knows"),
        ("empty-csv-header", ["--shard", "١/٢"], "shard must be K/N"),
    ],
)
def test_odd_headers_and_options_are_one_line_before_any_file(classifier_dir, tmp_path, kind, options, message):
    src = _odd_input(tmp_path, kind)
    r = score(str(src), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), *options)
    assert r.exit_code == 1 and message in r.output, r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing of the job was written


@pytest.mark.parametrize("name", ["trunc.csv.gz", "bad.parquet"])
def test_unreadable_data_errors_name_the_file(classifier_dir, tmp_path, name):
    import gzip

    src = tmp_path / name
    if name.endswith(".gz"):
        data = gzip.compress(("text,n\n" + "".join(f"message {i},{i}\n" for i in range(50000))).encode())
        src.write_bytes(data[: len(data) * 3 // 4])
    else:
        pq.write_table(
            pa.table({"text": [f"m {i} " * 5 for i in range(20000)]}), src, row_group_size=5000, compression="none"
        )
        raw = bytearray(src.read_bytes())
        raw[len(raw) * 2 // 3 : len(raw) * 2 // 3 + 200] = b"\xff" * 200  # a data page of row group 2
        src.write_bytes(bytes(raw))
    r = _run(
        [
            sys.executable,
            "-m",
            "spamjob.cli",
            "score",
            str(src),
            "--model",
            str(classifier_dir),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--block-mb",
            "1",
        ]
    )
    assert r.returncode == 1 and r.stderr.startswith(f"Error: cannot read {src}") and r.stderr.count("\n") == 1, (
        r.stderr
    )
    assert not (tmp_path / "o" / "_SUCCESS").exists()


@pytest.mark.slow
def test_early_errors_exit_1_every_time_under_load(classifier_dir, tmp_path):
    """An error exit never aborts in teardown (exit 134: an Arrow I/O thread releasing a CSV reader's
    Python callback; 20 runs in 60 under two busy processes before the fix: 25 runs all missing it
    has odds of (2/3)^25 < 1e-4)."""
    (tmp_path / "nocol.csv").write_text("a,b\n1,2\n3,4\n")
    burn = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]  # competing load
    try:
        codes = [
            _run(
                [
                    sys.executable,
                    "-m",
                    "spamjob.cli",
                    "score",
                    str(tmp_path / "nocol.csv"),
                    "--model",
                    str(classifier_dir),
                    "--out",
                    str(tmp_path / "o"),
                    "--no-progress",
                ]
            ).returncode
            for _ in range(25)
        ]
    finally:
        for b in burn:
            b.kill()
    assert codes == [1] * 25, codes


def test_odd_but_valid_inputs_are_scored(classifier_dir, tmp_path):
    big = "spam " * 1_100_000  # a 5.5 MB field in the first row
    (tmp_path / "big.csv").write_text(f"id,text\n1,{big}\n2,short\n")
    pq.write_table(
        pa.table({"n": [1, 2], "text": pa.array(["free prize", None], type=pa.string_view()), "key": ["k1", "k2"]}),
        tmp_path / "views.parquet",
    )
    r = score(
        str(tmp_path / "big.csv"),
        str(tmp_path / "views.parquet"),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "o"),
        "--block-mb",
        "64",
        "--id-column",
        "key",
        "--keep-columns",
        "key,text",
    )
    assert r.exit_code == 1 and "has no --id-column 'key'" in r.output  # the CSV lacks it: named, one line
    r = score(
        str(tmp_path / "views.parquet"),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "p"),
        "--id-column",
        "key",
    )
    assert r.exit_code == 0, r.output
    df = predictions(tmp_path / "p")
    assert list(df.columns)[:3] == ["key", "n", "text"]  # the id column first, as documented
    assert df["error"].tolist()[1] == "null text" and df["spam_probability"].notna().tolist() == [True, False]
    r = score(
        str(tmp_path / "big.csv"), "--model", str(classifier_dir), "--out", str(tmp_path / "b"), "--block-mb", "64"
    )
    assert r.exit_code == 0, r.output
    assert predictions(tmp_path / "b")["truncated"].tolist() == [True, False]
    r = score(
        str(tmp_path / "big.csv"), "--model", str(classifier_dir), "--out", str(tmp_path / "c"), "--block-mb", "1"
    )
    assert r.exit_code == 1 and "a row is longer than --block-mb 1; raise --block-mb" in r.output


def test_symlinked_files_and_folders_are_followed_alike(classifier_dir, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    pd.DataFrame({"text": ["a", "b"]}).to_csv(tmp_path / "elsewhere" / "b.csv", index=False)
    (tmp_path / "in").mkdir()
    pd.DataFrame({"text": ["c"]}).to_csv(tmp_path / "in" / "a.csv", index=False)
    (tmp_path / "in" / "linked-folder").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "in" / "linked-file.csv").symlink_to(tmp_path / "elsewhere" / "b.csv")  # the same file: once
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    r = score(str(tmp_path / "in"), "--model", str(classifier_dir), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert sorted(predictions(tmp_path / "o")["text"]) == ["a", "b", "c"]


def test_an_unterminated_quote_is_rejected_not_merged(classifier_dir, tmp_path):
    (tmp_path / "u.csv").write_text('id,text\n1,hello\n2,"never closed\n3,swallowed\n4,lines\n')
    (tmp_path / "ok.csv").write_text('id,text\n1,hello\n2,"two\nlines"\n')
    r = score(
        str(tmp_path / "u.csv"), str(tmp_path / "ok.csv"), "--model", str(classifier_dir), "--out", str(tmp_path / "o")
    )
    assert r.exit_code == 0, r.output
    df = predictions(tmp_path / "o")
    assert sorted(df["text"]) == ["hello", "hello", "two\nlines"]  # a closed multi-line field is fine
    rejects = [json.loads(line) for p in (tmp_path / "o" / "rejects").iterdir() for line in p.read_text().splitlines()]
    assert [(x["file"], x["reason"]) for x in rejects] == [
        (str((tmp_path / "u.csv").resolve()), "unterminated quote: the last field runs to the end of the file")
    ]
    assert rejects[0]["text"].startswith("never closed\n3,swallowed")
    assert report(tmp_path / "o")["rows"]["rejected"] == 1


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


def _large_csvs(sms_path: Path, folder: Path) -> tuple[Path, Path]:
    """CSV files over one 1 MB block: split.csv as pandas writes it (quoted newlines, commas, doubled
    quotes); odd.csv the same for its first block and more, then records whose quotes no writer
    makes ("...\nb"y), so that its second block fails its check after its first passed."""
    pairs = _messages(sms_path, 14000, 4)
    texts = [f"{a}\n{b}" if i % 3 == 0 else f"{a} {b}" for i, (a, b) in enumerate(zip(pairs[::2], pairs[1::2]))]
    folder.mkdir()
    split, odd = folder / "split.csv", folder / "odd.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts, "label": ["ham", "spam"] * 3500}).to_csv(split, index=False)
    good = pd.DataFrame({"id": range(6500), "text": texts[:6500], "label": "ham"}).to_csv(index=False)
    bad = "".join(
        f'{6500 + i},"{t[:150].replace(chr(34), "")} {"a" * 60}\nb"y,ham\n' for i, t in enumerate(texts[:6000])
    )
    odd.write_text(good + bad)
    assert split.stat().st_size > 1 << 20 and len(good) > 1 << 20 and odd.stat().st_size > 2 << 20
    return split, odd


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_large_csv_read_in_blocks_equals_reading_it_whole(sms_path, classifier_dir, tmp_path):
    """--csv-blocks auto (the default): each block read on its own; a file whose blocks fail their
    check is read whole in the same run (the report says why); the output is the same as --csv-blocks off."""
    split, odd = _large_csvs(sms_path, tmp_path / "in")
    common = [
        str(split),
        str(odd),
        "--model",
        str(classifier_dir),
        "--label-column",
        "label",
        "--block-mb",
        "1",
        "--id-column",
        "id",
    ]
    r = score(*common, "--out", str(tmp_path / "auto"))
    assert r.exit_code == 0, r.output
    r = score(*common, "--out", str(tmp_path / "off"), "--csv-blocks", "off")
    assert r.exit_code == 0, r.output
    auto, off = report(tmp_path / "auto"), report(tmp_path / "off")
    assert list(auto["csv_read_whole"]) == [str(odd.resolve())] and off["csv_read_whole"] is None
    assert "does not end at a record's end" in auto["csv_read_whole"][str(odd.resolve())]
    assert "was read whole, not in byte blocks" in (tmp_path / "auto" / "report.md").read_text()
    for key in ("rows", "labels", "inputs", "predicted"):
        assert auto[key] == off[key], key
    a, b = predictions(tmp_path / "auto"), predictions(tmp_path / "off")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 7000 + 12500 and a["text"].str.contains("\n").any()
    parts = sorted(p.name for p in (tmp_path / "auto" / "predictions").iterdir())
    split_key = json.loads((tmp_path / "auto" / "_plan.json").read_text())["inputs"][0]["path"]
    blocks = -(-split.stat().st_size // (1 << 20))
    assert split_key == str(split.resolve()) and sum(p.startswith("part-") for p in parts) == blocks + 3
    again = score(*common, "--out", str(tmp_path / "auto"))  # a rerun finds every unit committed
    assert again.exit_code == 0, again.output
    assert {k: v for k, v in report(tmp_path / "auto").items() if k not in TIMING} == {
        k: v for k, v in auto.items() if k not in TIMING
    }
    for shard in ("0/2", "1/2"):  # the first task's fall-back reads all of odd.csv; the second finds it done
        r = score(*common, "--out", str(tmp_path / "shards"), "--shard", shard)
        assert r.exit_code == 0, r.output
    pd.testing.assert_frame_equal(predictions(tmp_path / "shards"), b)
    assert report(tmp_path / "shards")["csv_read_whole"] == auto["csv_read_whole"]


@pytest.mark.slow
def test_a_kill_while_a_file_falls_back_then_rerun_equals_reading_whole(sms_path, classifier_dir, tmp_path):
    """SIGKILL after a fall-back deleted the file's committed parts, before its sidecars and its mark:
    the rerun splits it again, fails the same check, and ends with the output of reading it whole."""
    split, odd = _large_csvs(sms_path, tmp_path / "in")
    base = [
        sys.executable,
        "-m",
        "spamjob.cli",
        "score",
        str(split),
        str(odd),
        "--model",
        str(classifier_dir),
        "--label-column",
        "label",
        "--no-progress",
        "--block-mb",
        "1",
        "--window-rows",
        "2000",
    ]
    whole = _run([*base, "--out", str(tmp_path / "whole"), "--csv-blocks", "off"])
    assert whole.returncode == 0, whole.stderr
    killed = _run([*base, "--out", str(tmp_path / "k")], env={"SPAMJOB_KILL_IN_FALL_BACK": "_parts"})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "k" / "_SUCCESS").exists() and not list((tmp_path / "k" / "_sources").glob("*.json"))
    again = _run([*base, "--out", str(tmp_path / "k")])
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(predictions(tmp_path / "k"), predictions(tmp_path / "whole"))
    assert list(report(tmp_path / "k")["csv_read_whole"]) == [str(odd.resolve())]


@pytest.mark.slow
def test_two_ranks_read_large_csv_blocks_like_one_process_reading_whole(sms_path, classifier_dir, tmp_path):
    """Two gloo ranks, each reading only its byte blocks (and both reading the file that falls back)."""
    split, odd = _large_csvs(sms_path, tmp_path / "in")
    common = [
        str(split),
        str(odd),
        "--model",
        str(classifier_dir),
        "--label-column",
        "label",
        "--no-progress",
        "--block-mb",
        "1",
    ]
    one = _run([sys.executable, "jobs/score.py", *common, "--out", str(tmp_path / "one"), "--csv-blocks", "off"])
    assert one.returncode == 0, one.stderr
    two = _run(
        [
            "accelerate",
            "launch",
            "--config_file",
            "accelerate_config.yaml",
            "--multi_gpu",
            "--num_processes",
            "2",
            "jobs/score.py",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env={"ACCELERATE_USE_CPU": "1"},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    r1, r2 = report(tmp_path / "one"), report(tmp_path / "two")
    assert r2["num_processes"] == 2 and list(r2["csv_read_whole"]) == [str(odd.resolve())]
    for key in ("rows", "labels", "inputs", "predicted"):
        assert r1[key] == r2[key], key
    pd.testing.assert_frame_equal(
        predictions(tmp_path / "one"), predictions(tmp_path / "two"), check_exact=False, atol=1e-5
    )


@pytest.mark.parametrize("split", [pytest.param("auto", marks=pytest.mark.slow), "off"])  # auto: 1 MB blocks
def test_a_byte_not_valid_in_the_encoding_is_one_line(classifier_dir, tmp_path, split):
    """Files not in UTF-8 are decoded as a stream: a byte the codec cannot decode (deep in the file,
    past what the schema read) stops the job with one line naming the file and the encoding."""
    (tmp_path / "cp.csv").write_bytes(b"text\n" + b"ok\n" * 1_000_000 + b"bad \x81 byte\n" + b"ok\n" * 10)
    r = _run(
        [
            sys.executable,
            "-m",
            "spamjob.cli",
            "score",
            str(tmp_path / "cp.csv"),
            "--encoding",
            "cp1252",
            "--model",
            str(classifier_dir),
            "--out",
            str(tmp_path / "o"),
            "--block-mb",
            "1",
            "--csv-blocks",
            split,
            "--no-progress",
        ]
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"Error: {(tmp_path / 'cp.csv').resolve()}") and "not cp1252 text" in r.stderr
    assert "check --encoding" in r.stderr and not (tmp_path / "o" / "_SUCCESS").exists()
