"""spamjob.data and `spamjob prepare`: the reference splits, sources, verification and bad input."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from support import Server, flip_byte

from spamjob.cli import cli
from spamjob.data import UCI_SHA256, load_split, read_messages
from spamjob.fsutil import sha256_file

# sha256 of the split CSVs that the book's chapter-6 code writes (tests/golden/).
GOLDEN_SPLITS = json.loads((Path(__file__).parent / "golden" / "book-ch06-random-init.json").read_text())["data"]


def splits_match_the_book(folder: Path, names=("train", "validation", "test")) -> bool:
    return all(sha256_file(folder / f"{n}.csv") == GOLDEN_SPLITS["split_csv_sha256"][n] for n in names)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_prepare_reproduces_reference_row_for_row(sms_path, tmp_path):
    r = run("prepare", "--source", str(sms_path), "--out", str(tmp_path / "ours"))
    assert r.exit_code == 0, r.output
    assert "ham 4,825, spam 747" in r.output and "ham 747, spam 747" in r.output
    assert "train 1,045 / validation 149 / test 300" in r.output
    assert splits_match_the_book(tmp_path / "ours")  # byte for byte
    for name, n in (("train", 1045), ("validation", 149), ("test", 300)):
        df = pd.read_csv(tmp_path / "ours" / f"{name}.csv")
        assert list(df.columns) == ["Label", "Text"] and len(df) == n
        assert set(df["Label"]) == {0, 1}


def test_parquet_copies_match_csv(data_dir, sms_path, tmp_path):
    r = run("prepare", "--source", str(sms_path), "--out", str(tmp_path), "--format", "parquet")
    assert r.exit_code == 0, r.output
    for name in ("train", "validation", "test"):
        pq, csv = pd.read_parquet(tmp_path / f"{name}.parquet"), pd.read_csv(tmp_path / f"{name}.csv")
        assert pq["Label"].tolist() == csv["Label"].tolist()
        assert pq["Text"].tolist() == csv["Text"].tolist()
        assert load_split(tmp_path, name)["Text"].tolist() == csv["Text"].tolist()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_local_zip_is_extracted_and_verified(sms_path, tmp_path):
    z = tmp_path / "sms.zip"
    z.write_bytes(_zip_bytes({"SMSSpamCollection": sms_path.read_bytes(), "readme": b"hi"}))
    r = run("prepare", "--source", str(z), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c" / "SMSSpamCollection").read_bytes() == sms_path.read_bytes()
    assert splits_match_the_book(tmp_path / "o", ["test"])


def test_download_from_url_then_reuse_verified_copy(sms_path, tmp_path):
    routes = {"/static/sms+spam+collection.zip": _zip_bytes({"SMSSpamCollection": sms_path.read_bytes()})}
    with Server(routes) as srv:
        url = srv.url + "/static/sms+spam+collection.zip"
        for i in range(2):
            r = run("prepare", "--source", url, "--out", str(tmp_path / f"o{i}"), "--cache-dir", str(tmp_path / "c"))
            assert r.exit_code == 0, r.output
        assert srv.hits == {"/static/sms+spam+collection.zip": 1}  # second run used the verified copy
    assert (tmp_path / "o0" / "train.csv").read_bytes() == (tmp_path / "o1" / "train.csv").read_bytes()
    assert not list((tmp_path / "c").glob("*.part"))


def test_checksum_mismatch_names_both_hashes_and_writes_nothing(sms_path, tmp_path):
    tampered = sms_path.read_bytes().replace(b"Go until", b"Go after", 1)
    routes = {"/sms.zip": _zip_bytes({"SMSSpamCollection": tampered})}
    with Server(routes) as srv:
        r = run(
            "prepare",
            "--source",
            srv.url + "/sms.zip",
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
        )
    assert r.exit_code == 1
    assert UCI_SHA256 in r.output and "has sha256" in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "c" / "SMSSpamCollection").exists()  # an unverified file is never kept
    # An explicit opt-out accepts another file.
    with Server(routes) as srv:
        r = run(
            "prepare",
            "--source",
            srv.url + "/sms.zip",
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--sha256",
            "none",
        )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (None, ".tsv", "does not exist"),
        (b"this is not a zip", ".zip", "is not a valid zip archive"),
        (b"ham\thello\tthere\nspam\twin\tnow\n", ".tsv", "expected 2 columns"),
        (b"ham\thello\nSPAM\twin\nmaybe\twhat\nunknown\t?\n", ".tsv", "labels must be ham or spam; found 'maybe'"),
        (b"id,message\n1,hello\n", ".csv", "labels must be ham or spam"),
        (b"ham\thello\nspam\t\n", ".tsv", "1 rows have no text (first at row 2)"),
        (b"", ".tsv", "holds no rows"),
        (b"ham\t\xff\xfe bad bytes\n", ".tsv", "is not UTF-8"),
    ],
    ids=["missing", "not-zip", "extra-columns", "bad-labels", "wrong-columns", "empty-text", "empty-file", "bad-utf8"],
)
def test_bad_input_is_one_line_error_without_outputs(tmp_path, content, suffix, message):
    src = tmp_path / f"in{suffix}"
    if content is not None:
        src.write_bytes(content)
    r = run("prepare", "--source", str(src), "--out", str(tmp_path / "out"))
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_zip_without_message_file(tmp_path):
    z = tmp_path / "x.zip"
    z.write_bytes(_zip_bytes({"a.txt": b"1", "b.txt": b"2"}))
    r = run("prepare", "--source", str(z), "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and "holds no SMSSpamCollection" in r.output


def test_own_csv_with_header_options(tmp_path):
    rows = ["label,text,extra"] + [f"{'spam' if i % 3 == 0 else 'HAM'},message number {i},x" for i in range(60)]
    src = tmp_path / "mine.csv"
    src.write_text("\n".join(rows) + "\n")
    r = run(
        "prepare",
        "--source",
        str(src),
        "--out",
        str(tmp_path / "o"),
        "--no-balance",
        "--train-frac",
        "0.5",
        "--val-frac",
        "0.25",
        "--seed",
        "7",
    )
    assert r.exit_code == 0, r.output
    assert "ham 40, spam 20" in r.output and "train 30 / validation 15 / test 15" in r.output
    parts = [pd.read_csv(tmp_path / "o" / f"{n}.csv") for n in ("train", "validation", "test")]
    texts = sorted(t for p in parts for t in p["Text"])
    assert texts == sorted(f"message number {i}" for i in range(60))  # every row kept exactly once
    assert (pd.concat(parts)["Label"] == 1).sum() == 20
    # A different seed gives a different order.
    r = run(
        "prepare",
        "--source",
        str(src),
        "--out",
        str(tmp_path / "o2"),
        "--no-balance",
        "--seed",
        "8",
        "--train-frac",
        "0.5",
        "--val-frac",
        "0.25",
    )
    assert pd.read_csv(tmp_path / "o2" / "train.csv")["Text"].tolist() != parts[0]["Text"].tolist()


def test_fractions_are_validated(sms_path, tmp_path):
    r = run(
        "prepare", "--source", str(sms_path), "--out", str(tmp_path / "o"), "--train-frac", "0.9", "--val-frac", "0.2"
    )
    assert r.exit_code == 1 and "train-frac + val-frac < 1" in r.output
    assert not (tmp_path / "o").exists()


def test_reader_matches_pandas_reference_reading(sms_path):
    df = read_messages(sms_path)
    ref = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])
    assert len(df) == 5572 and df["Text"].tolist() == ref["Text"].tolist()


def test_load_split_errors(tmp_path):
    from spamjob.errors import SpamjobError

    with pytest.raises(SpamjobError, match="has no train.csv or train.parquet"):
        load_split(tmp_path, "train")
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SpamjobError, match="lacks column"):
        load_split(tmp_path, "train")


def test_a_damaged_extracted_dataset_is_extracted_again(sms_path, tmp_path):
    routes = {"/static/sms+spam+collection.zip": _zip_bytes({"SMSSpamCollection": sms_path.read_bytes()})}
    with Server(routes) as srv:
        url = srv.url + "/static/sms+spam+collection.zip"
        args = ["--source", url, "--cache-dir", str(tmp_path / "c")]
        assert run("prepare", *args, "--out", str(tmp_path / "o0")).exit_code == 0
        flip_byte(tmp_path / "c" / "SMSSpamCollection")
        r = run("prepare", *args, "--out", str(tmp_path / "o1"))
        assert r.exit_code == 0 and "SMSSpamCollection does not have its pinned sha256 (damaged)" in r.output
        assert srv.hits == {"/static/sms+spam+collection.zip": 1}  # from the cached zip, itself checked
    assert (tmp_path / "o0" / "train.csv").read_bytes() == (tmp_path / "o1" / "train.csv").read_bytes()
