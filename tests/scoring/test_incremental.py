"""spamjob score --incremental: runs over a growing inbox (local and moto's S3) score only new or
changed files, the output's current view equals one full run over the final inputs, as pandas,
pyarrow.dataset, DuckDB and Polars read it; kills, reruns and two runs started together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from store_servers import objects
from support import REPO, flip_byte, metric_values, report, run_in_repo, score, sms_messages, write_parquet

KEY = ["id", "spam_probability", "prediction"]


def inbox_files(sms_path: Path, folder: Path, stage: int) -> None:
    """The inbox as it grows: 2 files, +2 files, then one file rewritten (same size, other rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = sms_messages(sms_path, 400, seed=1)
    if stage == 1:
        write_parquet(folder / "a.parquet", texts[:100], row_group_size=40, id=list(range(100)))
        pd.DataFrame({"id": range(100, 150), "text": texts[100:150]}).to_csv(folder / "b.csv", index=False)
    if stage == 2:
        write_parquet(folder / "c.parquet", texts[150:230], row_group_size=40, id=list(range(150, 230)))
        pd.DataFrame({"id": range(230, 260), "text": texts[230:260]}).to_csv(folder / "d.csv", index=False)
    if stage == 3:  # b.csv rewritten: the same size, other messages (a rewrite mtime alone might miss)
        old = (folder / "b.csv").stat().st_size
        new = pd.DataFrame({"id": range(100, 150), "text": ["x" * 5] * 50})
        text = new.to_csv(index=False)
        text = text[:-1] + "y" * (old - len(text)) + "\n"  # padded to the old size
        (folder / "b.csv").write_text(text)
        assert (folder / "b.csv").stat().st_size == old


def current_view(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions")[KEY].sort_values("id").reset_index(drop=True)


def test_three_runs_over_a_growing_folder_equal_one_full_run(sms_path, classifier_dir, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "scored"
    args = [str(inbox), "--model", str(classifier_dir), "--out", str(out), "--incremental", "--text-column", "text"]
    scored_files = []
    for stage in (1, 2, 3):
        inbox_files(sms_path, inbox, stage)
        r = score(*args)
        assert r.exit_code == 0, r.output
        inc = report(out)["incremental"]
        scored_files.append((inc["run"], inc["files_scored"], report(out)["rows"]["read"]))
    assert scored_files == [(1, 2, 150), (2, 2, 110), (3, 1, 50)]  # each run: only what is new
    assert report(out)["incremental"]["parts_superseded"] == 1  # b.csv's earlier part, deleted
    cumulative = json.loads((out / "cumulative.json").read_text())
    assert cumulative["rows"]["read"] == 260 and "cumulative.md" in report(out)["incremental"]["cumulative_report"]

    full = tmp_path / "full"
    r = score(str(inbox), "--model", str(classifier_dir), "--out", str(full), "--text-column", "text")
    assert r.exit_code == 0, r.output
    expected = current_view(full)
    assert len(expected) == 260
    pd.testing.assert_frame_equal(current_view(out), expected)
    # Other readers of the folder, as users read it: the same rows.
    folder = str(out / "predictions")
    by_arrow = ds.dataset(folder, format="parquet").to_table(columns=KEY).to_pandas()
    pd.testing.assert_frame_equal(by_arrow.sort_values("id").reset_index(drop=True), expected)
    duckdb = pytest.importorskip("duckdb")
    by_duck = duckdb.sql(f"SELECT {', '.join(KEY)} FROM read_parquet('{folder}/*.parquet') ORDER BY id").df()
    pd.testing.assert_frame_equal(by_duck, expected, check_dtype=False)
    polars = pytest.importorskip("polars")
    by_polars = polars.read_parquet(f"{folder}/*.parquet").select(KEY).sort("id").to_pandas()
    pd.testing.assert_frame_equal(by_polars, expected, check_dtype=False)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["run"] == 3 and sorted(p["part"] for p in manifest["parts"]) == sorted(
        f"predictions/{p.name}" for p in (out / "predictions").iterdir()
    )

    prom = (out / "metrics.prom").read_text()
    assert metric_values(prom)["spamjob_score_rows"][(str(out.resolve()), "read")] == 50
    collector = tmp_path / "textfile-collector" / "spamjob.prom"
    r = score(*args, "--metrics-file", str(collector))  # nothing new: a run of no rows, the same current view
    assert r.exit_code == 0 and report(out)["rows"]["read"] == 0
    found = metric_values(collector.read_text())
    assert found["spamjob_score_run"][(str(out.resolve()),)] == 4 and found["spamjob_score_rows_per_second"]
    assert 0 < time.time() - found["spamjob_score_last_success_timestamp_seconds"][(str(out.resolve()),)] < 600
    pd.testing.assert_frame_equal(current_view(out), expected)
    damaged = sorted((out / "predictions").glob("*.parquet"))[0]
    flip_byte(damaged)  # a part damaged since its run (its mtime moved): hashed, found, redone
    r = score(*args)
    assert r.exit_code == 0 and report(out)["rows"]["read"] == pq.read_metadata(damaged).num_rows
    pd.testing.assert_frame_equal(current_view(out), expected)
    r = score(*args, "--label-column", "text")  # other options: another job
    assert r.exit_code == 1 and "another model, other inputs or other options" in r.output


def test_incremental_refuses_shard_and_ray():
    r = score("x.csv", "--model", "m", "--out", "o", "--incremental", "--shard", "0/2")
    assert r.exit_code == 1 and "--incremental cannot be combined with --shard" in r.output
    r = score("x.csv", "--model", "m", "--out", "o", "--incremental", "--engine", "ray")
    assert r.exit_code == 1 and "--incremental is not supported with --engine ray" in r.output


def _cli(inbox: str, model: Path, out: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spamjob.cli",
        "score",
        inbox,
        "--model",
        str(model),
        "--out",
        out,
        "--incremental",
        "--text-column",
        "text",
        "--window-rows",
        "20",
        "--no-progress",
    ]


@pytest.mark.slow
def test_sigkill_and_a_run_started_together(sms_path, classifier_dir, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "scored"
    cmd = _cli(str(inbox), classifier_dir, str(out))
    inbox_files(sms_path, inbox, 1)
    assert run_in_repo(cmd).returncode == 0
    inbox_files(sms_path, inbox, 2)
    killed = run_in_repo(cmd, env={"SPAMJOB_KILL_AFTER_WINDOWS": "3"})
    assert killed.returncode == -signal.SIGKILL
    # A run started while another runs stops in one line, writing nothing; the first finishes.
    first = paused_run(cmd, {}, 15)
    time.sleep(8)  # the first is paused after its first window
    second = run_in_repo(cmd)
    assert second.returncode == 1 and "is still running; this run stops" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0, first.stderr.read()
    inc = report(out)["incremental"]  # the killed run's units count in the run that committed them
    assert (inc["run"], inc["previous_run"], report(out)["rows"]["read"]) == (3, 1, 110)
    inbox_files(sms_path, inbox, 3)
    assert run_in_repo(cmd).returncode == 0
    full = tmp_path / "full"
    r = score(str(inbox), "--model", str(classifier_dir), "--out", str(full), "--text-column", "text")
    assert r.exit_code == 0, r.output
    pd.testing.assert_frame_equal(current_view(out), current_view(full))


def paused_run(cmd: list[str], env: dict, seconds: int) -> subprocess.Popen:
    """`cmd` started, to pause `seconds` after its first window (a run caught mid-work)."""
    pause = {"SPAMJOB_PAUSE_AFTER_WINDOWS": f"1:{seconds}"}
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env, **pause}
    )


def store_view(uri: str) -> pd.DataFrame:
    """The current view of an output in a store: every part in its predictions/."""
    parts = [
        pq.read_table(pa.BufferReader(data)) for name, data in objects(uri).items() if name.startswith("predictions/")
    ]
    return pa.concat_tables(parts).select(KEY).to_pandas().sort_values("id").reset_index(drop=True)


@pytest.mark.slow
def test_three_runs_over_s3_with_a_kill_and_a_run_started_together(sms_path, classifier_dir, tmp_path):
    from store_servers import MotoS3, put_folder, serving

    with serving(MotoS3()) as s3:
        bucket = s3.bucket("incremental")
        inbox, out, local = f"{bucket}/inbox", f"{bucket}/scored", tmp_path / "inbox"
        cmd = _cli(inbox, classifier_dir, out)
        env = {**s3.env(), "SPAMJOB_HEARTBEAT_S": "0.5"}  # a run is dead 3 s after its last heartbeat
        inbox_files(sms_path, local, 1)
        put_folder(local, inbox)
        assert run_in_repo(cmd, env=env).returncode == 0
        inbox_files(sms_path, local, 2)
        put_folder(local, inbox)
        killed = run_in_repo(cmd, env={**env, "SPAMJOB_KILL_AFTER_WINDOWS": "3"})
        assert killed.returncode == -signal.SIGKILL
        time.sleep(4)  # its record no longer beats
        first = paused_run(cmd, env, 12)
        time.sleep(8)  # paused after its first window, beating all the while
        second = run_in_repo(cmd, env=env)
        assert second.returncode == 1 and "is still running; this run stops" in second.stderr, second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()
        inbox_files(sms_path, local, 3)  # b.csv rewritten at the same size: its ETag tells
        put_folder(local, inbox)
        third = run_in_repo(cmd, env=env)
        assert third.returncode == 0, third.stderr
        r = json.loads(objects(out)["report.json"])
        assert (r["incremental"]["files_scored"], r["rows"]["read"], r["incremental"]["parts_superseded"]) == (1, 50, 1)
        full = tmp_path / "full"
        got = score(str(local), "--model", str(classifier_dir), "--out", str(full), "--text-column", "text")
        assert got.exit_code == 0, got.output
        pd.testing.assert_frame_equal(store_view(out), current_view(full))
