"""spamjob.scoring.output: the output folder's rules, declared once in names.py, held alike by a
local folder and a store prefix (what --overwrite may delete), and which unit a file belongs to."""

from __future__ import annotations

import pytest

from spamjob.errors import SpamjobError
from spamjob.scoring.output import open_output
from spamjob.scoring.output.local import LocalFolder
from spamjob.scoring.output.names import REPORT_LOCK, commits, owned, unit_of
from spamjob.scoring.output.store import StoreFolder

PART = "part-0123456789ab-000003"


@pytest.mark.parametrize(
    ("name", "whole", "expected"),
    [
        ("_plan.json", False, True),
        ("report.md", False, True),
        (".report.json.123.part", False, True),  # a temporary of an owned file
        ("notes.txt", False, False),
        (f"predictions/{PART}.parquet", False, True),
        (f"predictions/{PART}.0a1b2c3d4e5f.parquet", False, True),  # a store attempt's
        (f"predictions/.{PART}.parquet.77.part", False, True),
        ("predictions/", False, True),  # an empty owned folder
        ("predictions/mine.parquet", False, False),
        ("predictions/mine.parquet", True, True),  # Ray names its parts itself
        (f"predictions/sub/{PART}.parquet", False, False),
        ("_parts/0123456789ab.json", False, True),
        ("elsewhere/x", True, False),
    ],
)
def test_one_rule_says_what_a_scoring_job_owns(name, whole, expected):
    assert owned(name, whole) is expected


def test_the_unit_a_file_belongs_to():
    assert unit_of(f".{PART}.parquet.123.part") == PART
    assert unit_of(f"{PART}.jsonl") == PART
    assert unit_of("0123456789ab.json") == REPORT_LOCK  # a source record: the report's
    assert unit_of("foreign.bin") is None


def test_a_sidecar_commits_the_unit_it_names():
    where = {"source": "a.csv", "index": 2, "kind": "block"}
    assert commits({**where, "rows": 9}, where)
    assert not commits({**where, "index": 3}, where)
    assert commits(where, {**where, "byte_block": False})  # a sidecar without the key: no byte block
    assert not commits(where, {**where, "byte_block": True})


def test_overwrite_deletes_what_the_rule_owns_and_refuses_anything_else(tmp_path):
    out = tmp_path / "out"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / f"{PART}.parquet").write_bytes(b"x")
    (out / "report.md").write_text("r")
    folder = open_output(str(out))
    assert isinstance(folder, LocalFolder) and isinstance(open_output("s3://b/out"), StoreFolder)
    (out / "predictions" / "theirs.csv").write_text("y")
    with pytest.raises(SpamjobError, match="--overwrite would delete .*theirs.csv, which spamjob did not write"):
        folder.prepare({"plan": 1}, overwrite=True)
    (out / "predictions" / "theirs.csv").unlink()
    folder.prepare({"plan": 1}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["_locks", "_plan.json"]
