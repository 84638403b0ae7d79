"""spamjob score: kills and reruns, ranks and shard tasks on one output, overwrite, damaged parts, CSV
byte blocks read by several processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support import (
    REPO,
    TIMING,
    TWO_CPU_RANKS,
    large_csvs,
    predictions,
    report,
    run_in_repo,
    score,
    sms_messages,
    without_timing,
    write_parquet,
)


def score_on_two_ranks(args: list[str], out):
    """jobs/score.py on two CPU ranks (accelerate launch), finished."""
    two = run_in_repo([*TWO_CPU_RANKS, "jobs/score.py", *args, "--out", str(out)], env={"ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    return two


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


def test_sigkill_then_rerun_equals_uninterrupted(sms_path, classifier_dir, tmp_path):
    inp = write_parquet(
        tmp_path / "in.parquet", sms_messages(sms_path, 600), row_group_size=150, label=["ham", "spam"] * 300
    )
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
    full = run_in_repo([*base, "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr
    killed = run_in_repo([*base, "--out", str(tmp_path / "k")], env={"SPAMJOB_KILL_AFTER_WINDOWS": "7"})
    assert killed.returncode == -signal.SIGKILL
    parts = sorted((tmp_path / "k" / "_parts").iterdir())
    assert len(parts) == 2 and not (tmp_path / "k" / "_SUCCESS").exists()  # killed inside the third unit
    assert list((tmp_path / "k" / "predictions").glob(".*.part"))  # its half-written part was never renamed
    again = run_in_repo([*base, "--out", str(tmp_path / "k")])
    assert again.returncode == 0, again.stderr
    assert not list((tmp_path / "k" / "predictions").glob(".*"))
    pd.testing.assert_frame_equal(predictions(tmp_path / "k"), predictions(tmp_path / "full"))
    assert len(predictions(tmp_path / "k")) == 600
    assert without_timing(report(tmp_path / "k")) == without_timing(report(tmp_path / "full"))


@pytest.mark.slow
def test_one_and_two_ranks_give_identical_output(sms_path, classifier_dir, tmp_path):
    inp = [
        write_parquet(tmp_path / "a.parquet", sms_messages(sms_path, 300, 1), row_group_size=100, label=["spam"] * 300)
    ]
    csv = tmp_path / "b.csv"
    pd.DataFrame({"text": sms_messages(sms_path, 200, 2), "label": ["ham"] * 200}).to_csv(csv, index=False)
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
    one = run_in_repo([sys.executable, "jobs/score.py", *common, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = score_on_two_ranks(common, tmp_path / "two")
    r1, r2 = report(tmp_path / "one"), report(tmp_path / "two")
    assert r1["num_processes"] == 1 and r2["num_processes"] == 2
    assert without_timing(r1) == without_timing(r2)
    a, b = predictions(tmp_path / "one"), predictions(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)
    assert two.stdout.count("scored ") == 1  # the summary comes from the main process only


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


def test_rerun_redoes_committed_units_whose_files_were_damaged(sms_path, classifier_dir, tmp_path):
    inp = write_parquet(tmp_path / "in.parquet", sms_messages(sms_path, 300), row_group_size=100)
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
    inp = write_parquet(tmp_path / "in.parquet", sms_messages(sms_path, 300), row_group_size=100)
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
    assert run_in_repo([*base, "--out", str(tmp_path / "whole")]).returncode == 0
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
    second = run_in_repo([*base, "--out", str(out)])  # waits for the unit the first run holds
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
    inp = write_parquet(tmp_path / "in.parquet", sms_messages(sms_path, 200), row_group_size=50)
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
    inp = write_parquet(tmp_path / "in.parquet", sms_messages(sms_path, 240), row_group_size=20)
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


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_large_csv_read_in_blocks_equals_reading_it_whole(sms_path, classifier_dir, tmp_path):
    """--csv-blocks auto (the default): each block read on its own; a file whose blocks fail their
    check is read whole in the same run (the report says why); the output is the same as --csv-blocks off."""
    split, odd = large_csvs(sms_path, tmp_path / "in")
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
    split, odd = large_csvs(sms_path, tmp_path / "in")
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
    whole = run_in_repo([*base, "--out", str(tmp_path / "whole"), "--csv-blocks", "off"])
    assert whole.returncode == 0, whole.stderr
    killed = run_in_repo([*base, "--out", str(tmp_path / "k")], env={"SPAMJOB_KILL_IN_FALL_BACK": "_parts"})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "k" / "_SUCCESS").exists() and not list((tmp_path / "k" / "_sources").glob("*.json"))
    again = run_in_repo([*base, "--out", str(tmp_path / "k")])
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(predictions(tmp_path / "k"), predictions(tmp_path / "whole"))
    assert list(report(tmp_path / "k")["csv_read_whole"]) == [str(odd.resolve())]


@pytest.mark.slow
def test_two_ranks_read_large_csv_blocks_like_one_process_reading_whole(sms_path, classifier_dir, tmp_path):
    """Two gloo ranks, each reading only its byte blocks (and both reading the file that falls back)."""
    split, odd = large_csvs(sms_path, tmp_path / "in")
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
    one = run_in_repo([sys.executable, "jobs/score.py", *common, "--out", str(tmp_path / "one"), "--csv-blocks", "off"])
    assert one.returncode == 0, one.stderr
    score_on_two_ranks(common, tmp_path / "two")
    r1, r2 = report(tmp_path / "one"), report(tmp_path / "two")
    assert r2["num_processes"] == 2 and list(r2["csv_read_whole"]) == [str(odd.resolve())]
    for key in ("rows", "labels", "inputs", "predicted"):
        assert r1[key] == r2[key], key
    pd.testing.assert_frame_equal(
        predictions(tmp_path / "one"), predictions(tmp_path / "two"), check_exact=False, atol=1e-5
    )
