"""spamjob.scoring.inputs, .parquet, .csv and .parts: input discovery, schemas, streaming units and part files."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spamjob.errors import SpamjobError
from spamjob.scoring.csv_reader import CsvOptions, iter_csv_blocks
from spamjob.scoring.inputs import discover, schema_of
from spamjob.scoring.parquet import iter_parquet_unit, parquet_units
from spamjob.scoring.parts import PartWriter


def test_discover_files_folders_globs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.csv", "d/sub/b.parquet", "d/c.tsv.gz", "d/notes.md", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    found = discover([str(tmp_path / "d"), str(tmp_path / "*.txt"), str(tmp_path / "d" / "a.csv")])
    assert [s.path.removeprefix(str(tmp_path.resolve()) + "/") for s in found] == [
        "d/a.csv",
        "d/c.tsv.gz",
        "d/sub/b.parquet",
        "e.txt",
    ]  # sorted per pattern, each file once
    kinds = {s.path.rsplit("/", 1)[1]: (s.kind, s.compression) for s in found}
    assert kinds["c.tsv.gz"] == ("csv", "gzip") and kinds["b.parquet"] == ("parquet", None)
    with pytest.raises(SpamjobError, match="no input matches"):
        discover([str(tmp_path / "*.xlsx")])
    with pytest.raises(SpamjobError, match="unknown input type"):
        discover([str(tmp_path / "d" / "notes.md")])
    assert len({s.key for s in found}) == 4


def test_parquet_units_are_row_groups(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": [f"m{i}" for i in range(10)], "n": list(range(10))}), path, row_group_size=4)
    src = discover([str(path)])[0]
    assert parquet_units(src) == [0, 1, 2]
    chunks = list(iter_parquet_unit(src, 1, ["text"], batch_rows=3))
    assert [c.first_row for c in chunks] == [4, 7]
    assert [t for c in chunks for t in c.batch.column("text").to_pylist()] == ["m4", "m5", "m6", "m7"]
    assert chunks[0].batch.schema.names == ["text"]


def test_csv_blocks_stream_with_rejects(tmp_path):
    rows = ["text,label"] + [f"message {i},ham" for i in range(3000)]
    rows.insert(1000, "broken,line,with,extra")
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    src = discover([str(path)])[0]
    schema = schema_of(src, CsvOptions())
    assert schema.names == ["text", "label"]
    blocks = list(iter_csv_blocks(src, CsvOptions(block_bytes=8 << 10), {n: pa.binary() for n in schema.names}))
    assert len(blocks) > 3 and [b for b, _ in blocks] == list(range(len(blocks)))
    texts = [t.decode() for _, c in blocks for t in c.batch.column("text").to_pylist()]
    assert texts == [f"message {i}" for i in range(3000)]
    rejects = [r for _, c in blocks for r in c.rejects]
    assert rejects == [
        {"file": src.path, "line": 1001, "reason": "expected 2 fields, found 4", "text": "broken,line,with,extra"}
    ]


def test_empty_inputs(tmp_path):
    (tmp_path / "e.csv").write_bytes(b"")
    (tmp_path / "h.csv").write_text("text\n")
    e, h = discover([str(tmp_path / "e.csv"), str(tmp_path / "h.csv")])
    assert schema_of(e, CsvOptions()) is None
    assert schema_of(h, CsvOptions()).names == ["text"]
    # No blocks at all (the scoring job still lists both files, with 0 rows).
    assert list(iter_csv_blocks(h, CsvOptions(), {"text": pa.binary()})) == []
    assert list(iter_csv_blocks(e, CsvOptions(), {"text": pa.binary()})) == []


def test_part_writer_is_atomic(tmp_path):
    w = PartWriter(tmp_path / "p.parquet", "parquet")
    w.write(pa.table({"a": [1, 2]}))
    assert not (tmp_path / "p.parquet").exists() and w.tmp.exists()  # invisible until committed
    w.commit(pa.schema([("a", pa.int64())]))
    assert pq.read_table(tmp_path / "p.parquet").column("a").to_pylist() == [1, 2] and not w.tmp.exists()
    w = PartWriter(tmp_path / "q.csv", "csv")
    w.write(pa.table({"a": ["x"]}))
    w.abort()
    assert list(tmp_path.iterdir()) == [tmp_path / "p.parquet"]
    empty = PartWriter(tmp_path / "e.parquet", "parquet")
    empty.commit(pa.schema([("a", pa.string())]))
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_the_end_of_a_csv_file_is_read_exactly(tmp_path):
    """The end line parsed after the file (spamjob.scoring.csv_reader.end_line) says whether its last quote closed:
    a last multi-line row followed by a malformed line stays a row (the byte-tail guess this
    replaced rejected it), an open quote in the last field or an earlier one is one reject."""
    types = {"a": pa.binary(), "b": pa.binary()}
    cases = {
        'a,b\n1,"x\ny"\n2,3,4': ([{"a": b"1", "b": b"x\ny"}], [("expected 2 fields, found 3", "2,3,4")]),
        'a,b\n1,2\n3,"open\nmore': (
            [{"a": b"1", "b": b"2"}],
            [("unterminated quote: the last field runs to the end of the file", "open\nmore")],
        ),
        'a,b\n1,2\n"open,\nx\n': (
            [{"a": b"1", "b": b"2"}],
            [("unterminated quote: the last field runs to the end of the file", '"open,\nx\n')],
        ),
        'a,b\n1,"ends ""quoted"""\n': ([{"a": b"1", "b": b'ends "quoted"'}], []),
        "a,b\n1,2": ([{"a": b"1", "b": b"2"}], []),
    }
    for i, (text, (rows, rejects)) in enumerate(cases.items()):
        (tmp_path / f"{i}.csv").write_text(text)
        src = discover([str(tmp_path / f"{i}.csv")])[0]
        blocks = list(iter_csv_blocks(src, CsvOptions(), types))
        assert [r for _, c in blocks for r in c.batch.to_pylist()] == rows, text
        assert [(r["reason"], r["text"]) for _, c in blocks for r in c.rejects] == rejects, text


def test_csv_in_utf16_is_read_as_utf8(tmp_path):
    (tmp_path / "w.csv").write_bytes('text,n\ncafé,1\n"a, b",2\n'.encode("utf-16"))
    src = discover([str(tmp_path / "w.csv")])[0]
    opt = CsvOptions(encoding="utf-16")
    assert schema_of(src, opt).names == ["text", "n"]
    [(_, chunk)] = iter_csv_blocks(src, opt, {"text": pa.binary(), "n": pa.binary()})
    assert chunk.batch.column("text").to_pylist() == ["café".encode(), b"a, b"]
