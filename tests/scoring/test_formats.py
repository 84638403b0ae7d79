"""spamjob.scoring.formats: the input-format seam. A format is one module plus one registry line
(docs/extending.md); every format keeps the InputFormat interface; names map to formats."""

from __future__ import annotations

import sys
from pathlib import PurePath

import pandas as pd
import pytest
from support import predictions, score

from spamjob.scoring import formats

# A new format, written as docs/extending.md says, with Parquet's module as its model: JSON Lines,
# one object per line, read whole as one unit by pyarrow.json.
JSONL = """
import pyarrow.json as pajson

from spamjob import stores
from spamjob.scoring.source import Chunk, windows_of


class JsonLinesFormat:
    name = "jsonl"
    suffixes = (".jsonl",)
    compressible = False
    typed = True
    streams = False

    def _table(self, source):
        with stores.open_input_file(source.path) as f:
            return pajson.read_json(f)

    def schema(self, source, csv):
        return self._table(source).schema if source.size else None

    def rows(self, source):
        return None

    def bounds(self, source, column):
        return None

    def unit_count(self, source, csv):
        return 1

    def read_unit(self, source, index, schema, needed, csv, rows):
        batch = self._table(source).select(needed).combine_chunks().to_batches()[0]
        return windows_of(Chunk(batch, 0), rows)

    def stream(self, source, csv, schema):
        raise NotImplementedError


FORMAT = JsonLinesFormat()
"""


def test_a_new_format_is_one_module_and_one_registry_line(classifier_dir, sms_path, tmp_path, monkeypatch):
    (tmp_path / "jsonl_format.py").write_text(JSONL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(formats.REGISTRY, "jsonl", "jsonl_format")  # the registry line
    frame = pd.read_csv(sms_path, sep="\t", header=None, names=["label", "text"], nrows=120)
    frame.insert(0, "id", range(len(frame)))
    (tmp_path / "in").mkdir()
    frame.to_json(tmp_path / "in" / "m.jsonl", orient="records", lines=True)  # found in a folder by its suffix
    frame.to_csv(tmp_path / "m.csv", index=False)
    for name, out in (("in", "by_jsonl"), ("m.csv", "by_csv")):
        r = score(
            str(tmp_path / name), "--model", str(classifier_dir), "--out", str(tmp_path / out), "--window-rows", "50"
        )
        assert r.exit_code == 0, r.output
    got, want = predictions(tmp_path / "by_jsonl"), predictions(tmp_path / "by_csv")
    assert len(got) == 120 and got["id"].tolist() == list(range(120))
    assert got["prediction"].tolist() == want["prediction"].tolist()
    assert (got["spam_probability"] - want["spam_probability"]).abs().max() < 1e-6
    monkeypatch.delitem(sys.modules, "jsonl_format")


def test_every_registered_format_keeps_the_interface():
    for name in formats.REGISTRY:
        fmt = formats.get(name)
        assert fmt.name == name and fmt.suffixes and all(s.startswith(".") and s == s.lower() for s in fmt.suffixes)
        assert all(isinstance(getattr(fmt, a), bool) for a in ("compressible", "typed", "streams"))
        for method in ("schema", "rows", "bounds", "unit_count", "read_unit", "stream"):
            assert callable(getattr(fmt, method))


@pytest.mark.parametrize(
    "name, found",
    [
        ("a.parquet", ("parquet", None)),
        ("a.PQ", ("parquet", None)),
        ("a.parquet.gz", None),  # Parquet compresses inside
        ("a.csv", ("csv", None)),
        ("a.tsv.zst", ("csv", "zstd")),
        ("b.txt.bz2", ("csv", "bz2")),
        ("v1.2.CSV.GZ", ("csv", "gzip")),
        ("a.json", None),
        ("a.gz", None),
        ("README", None),
    ],
)
def test_a_file_name_says_its_format(name, found):
    got = formats.format_of(PurePath(name))
    assert (got[0].name, got[1]) == found if found else got is None


def test_the_unknown_type_line_lists_what_is_read():
    line = formats.unknown_type("x.json")
    assert line == "x.json: unknown input type; expected .parquet/.pq/.csv/.tsv/.txt (csv also as .gz/.bz2/.zst)"
