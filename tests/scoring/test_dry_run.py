"""spamjob score --dry-run: units and rows from metadata and sizes, token counts, a calibrated time,
only what is new with --incremental, and nothing written."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from support import score, sms_messages, write_parquet


def rows_said(output: str, name: str) -> int:
    line = next(ln for ln in output.splitlines() if ln.strip().startswith("/") and ln.split(":")[0].endswith(name))
    return int(re.search(r"([\d,]+) rows", line).group(1).replace(",", ""))


@pytest.fixture
def inbox(sms_path, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    texts = sms_messages(sms_path, 1500, seed=3)
    write_parquet(folder / "a.parquet", texts[:1000], row_group_size=300)
    pd.DataFrame({"text": texts[1000:]}).to_csv(folder / "b.csv", index=False)
    return folder


def test_dry_run_counts_and_times_without_writing(inbox, classifier_dir, tmp_path):
    out = tmp_path / "out"
    r = score(str(inbox), "--model", str(classifier_dir), "--out", str(out), "--dry-run")
    assert r.exit_code == 0, r.output
    assert not out.exists()  # nothing written
    said = r.output
    assert "2 of 2 file(s) to score, 5 work unit(s)" in said  # 4 row groups + 1 CSV file
    assert rows_said(said, "a.parquet") == 1000 and abs(rows_said(said, "b.csv") - 500) <= 25  # from its size
    # the first unit of each file: 300 + 500 rows, less the empty ones
    assert re.search(r"tokens per row \(sample of (7\d\d|800)\): mean [\d.]+", said)
    assert re.search(r"calibration: torch fp32, \d+ model worker\(s\): [\d,.]+ rows/s", said)
    assert re.search(r"^expected: [\d.]+ s on this machine", said, re.M) and "--shard K/2 or 2 ranks" in said


@pytest.mark.slow
def test_dry_run_with_incremental_counts_only_what_is_new(inbox, classifier_dir, sms_path, tmp_path):
    out = tmp_path / "out"
    args = [str(inbox), "--model", str(classifier_dir), "--out", str(out), "--incremental"]
    assert score(*args).exit_code == 0
    before = sorted(p.name for p in out.rglob("*"))
    write_parquet(inbox / "c.parquet", sms_messages(sms_path, 200, seed=4), row_group_size=100)
    r = score(*args, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "1 of 3 file(s) to score, 2 work unit(s), 200 rows" in r.output and "c.parquet" in r.output
    assert sorted(p.name for p in out.rglob("*")) == before  # the output untouched
