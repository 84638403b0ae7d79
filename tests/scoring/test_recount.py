"""`spamjob report DIR`: a predictions dataset recounted gives `spamjob score`'s own counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamjob.cli import cli

COUNTED = (
    "accuracy",
    "rows",
    "flagged_by_reason",
    "rejected_by_reason",
    "spam_rate",
    "predicted",
    "labels",
    "spam_probability_histogram",
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def read(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture
def inputs(data_dir, tmp_path) -> list[str]:
    messy = tmp_path / "in" / "messy.csv"
    messy.parent.mkdir()
    messy.write_bytes(
        (
            'Label,Text\nham,hello there\nspam,"never\nclosed",x,y\nspam,   \nmaybe,free prize '
            "<|endoftext|>\n1," + "win " * 200 + "\nham,\n"
        ).encode()
        + b"ham,bad \xff bytes\n"
    )
    return [str(data_dir / "validation.csv"), str(messy)]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_recount_equals_the_score_report(classifier_dir, inputs, tmp_path, fmt):
    out = tmp_path / "scored"
    r = run(
        "score",
        *inputs,
        "--model",
        str(classifier_dir),
        "--out",
        str(out),
        "--label-column",
        "Label",
        "--format",
        fmt,
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    scored = read(out)
    assert scored["rows"]["flagged"] == 3 and scored["rows"]["rejected"] == 1 and scored["rows"]["truncated"] == 1
    for name in ("report.json", "report.md", "report.png"):
        (out / name).unlink()
    r = run("report", str(out), "--label-column", "Label")
    assert r.exit_code == 0, r.output
    again = read(out)
    assert {k: again[k] for k in COUNTED} == {k: scored[k] for k in COUNTED}
    assert again["inputs"] == scored["inputs"]  # per input, from the manifest
    assert (out / "report.md").is_file() and (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert f"counted {scored['rows']['read']:,} rows" in r.output


def test_recount_of_bare_parts_as_an_engine_writes_them(classifier_dir, inputs, tmp_path):
    """Only part files (and an engine's own `_SUCCESS` / `.crc` files): the same counts, without the
    lines that only `spamjob score` rejects, under the folder's name."""
    out = tmp_path / "scored"
    assert run("score", *inputs, "--model", str(classifier_dir), "--out", str(out), "--no-progress").exit_code == 0
    bare = tmp_path / "engine"
    shutil.copytree(out / "predictions", bare / "predictions")
    (bare / "predictions" / "_SUCCESS").touch()
    (bare / "predictions" / ".part-0.crc").write_bytes(b"\0")
    r = run("report", str(bare))
    assert r.exit_code == 0, r.output
    scored, again = read(out), read(bare)
    assert again["rows"] == {**scored["rows"], "rejected": 0} and again["predicted"] == scored["predicted"]
    assert again["spam_probability_histogram"] == scored["spam_probability_histogram"]
    assert list(again["inputs"]) == [str(bare / "predictions")] and again["accuracy"] is None


def test_recount_errors_are_one_line(classifier_dir, inputs, tmp_path):
    out = tmp_path / "scored"
    assert run("score", *inputs, "--model", str(classifier_dir), "--out", str(out), "--no-progress").exit_code == 0
    r = run("report", str(out), "--label-column", "nope")
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "no column(s) nope" in r.output
    part = next((out / "predictions").iterdir())
    part.write_bytes(part.read_bytes()[:-40])  # a damaged part
    r = run("report", str(out))
    assert r.exit_code == 1 and "cannot read" in r.output and part.name in r.output  # the file is named
    (out / "predictions" / "notes.txt").write_text("x")
    r = run("report", str(out))
    assert r.exit_code == 1 and "expected only .parquet or only .csv part files" in r.output
    r = run("report", str(tmp_path / "nothing"))
    assert r.exit_code == 1 and "no predictions folder" in r.output
    assert len(r.output.strip().splitlines()) == 1
