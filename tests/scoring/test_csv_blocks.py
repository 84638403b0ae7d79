"""spamjob.scoring.csv_reader, byte blocks: a CSV file read in byte blocks gives exactly the records of
reading it whole, each block reads only its own bytes (and the start of the next), or the file is
reported unsplittable."""

from __future__ import annotations

import csv as pycsv
import io
import random

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from spamjob.scoring import csv_reader as csvsplit
from spamjob.scoring.csv_reader import BlockError, CsvOptions, block_count, iter_csv_blocks, read_block
from spamjob.scoring.inputs import discover, schema_of

PIECES = ["free", 'a "quote"', ",", "\n", "\r\n", '""', "x", " ", "é", "\t", 'end"']


def _whole(src, opt, types):
    blocks = list(iter_csv_blocks(src, CsvOptions(opt.delimiter, opt.encoding, 1 << 26, in_blocks=False), types))
    return [r for _, c in blocks for r in c.batch.to_pylist()], [r for _, c in blocks for r in c.rejects]


def _split(src, opt, names, types):
    rows, rejects = [], []
    for k in range(block_count(src, opt)):
        chunk = read_block(src, opt, names, types, k)
        rows += chunk.batch.to_pylist()
        rejects += chunk.rejects
    return rows, rejects


def _same(src, opt):
    names = schema_of(src, opt).names
    types = {n: pa.binary() for n in names}
    rows, rejects = _whole(src, opt, types)
    got_rows, got_rejects = _split(src, opt, names, types)
    assert got_rows == rows
    assert [(r["reason"], r["text"]) for r in got_rejects] == [(r["reason"], r["text"]) for r in rejects]
    return rows, got_rejects


def _texts(rnd: random.Random, n: int) -> list[str]:
    weights = [rnd.random() for _ in PIECES]
    return ["".join(rnd.choices(PIECES, weights, k=rnd.randint(0, 14))) for _ in range(n)]


@pytest.mark.parametrize("writer", ["pandas", "arrow", "quote-all-crlf"])
@pytest.mark.parametrize("block", [997, 4096, 30_000])
def test_blocks_of_writers_files_are_the_whole_files_records(tmp_path, writer, block):
    """Quoted newlines, doubled quotes, delimiters and CRLF inside fields: every file a CSV writer makes."""
    import pandas as pd

    texts = _texts(random.Random(block), 2000)
    df = pd.DataFrame({"id": range(len(texts)), "text": texts, "label": ["ham", "spam"] * (len(texts) // 2)})
    path = tmp_path / "w.csv"
    if writer == "pandas":
        df.to_csv(path, index=False)
    elif writer == "arrow":
        pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        df.to_csv(path, index=False, quoting=pycsv.QUOTE_ALL, lineterminator="\r\n")
    src = discover([str(path)])[0]
    opt = CsvOptions(block_bytes=block)
    assert block_count(src, opt) == -(-src.size // block) > 1
    rows, _ = _same(src, opt)
    assert [r["text"].decode() for r in rows] == texts


def test_random_files_split_exactly_or_say_so(tmp_path):
    """Writer-made records mixed with hand-written lines holding stray quotes, at many block sizes:
    the blocks give exactly the whole file's rows and rejects, or read_block raises BlockError;
    never other rows. Files as writers make them always split."""
    outcomes = {"writer": set(), "stray": set()}
    for trial in range(120):
        rnd = random.Random(trial)
        buf = io.StringIO()
        w = pycsv.writer(
            buf, quoting=rnd.choice([pycsv.QUOTE_MINIMAL, pycsv.QUOTE_ALL]), lineterminator=rnd.choice(["\n", "\r\n"])
        )
        w.writerow(["id", "text"])
        stray = trial % 3 == 0
        for i, t in enumerate(_texts(rnd, rnd.randint(50, 600))):
            if stray and rnd.random() < 0.2:
                buf.write(f"{i},{t.replace(chr(10), ' ').replace(chr(13), ' ')}\n")  # written by hand
            else:
                w.writerow([i, t])
        path = tmp_path / "r.csv"
        path.write_text(buf.getvalue())
        src = discover([str(path)])[0]
        opt = CsvOptions(block_bytes=rnd.choice([500, 1000, 5000]))
        if not block_count(src, opt):
            continue
        try:
            _same(src, opt)
            outcomes["stray" if stray else "writer"].add("same")
        except BlockError:
            outcomes["stray" if stray else "writer"].add("split error")
    assert outcomes["writer"] == {"same"}
    assert outcomes["stray"] == {"same", "split error"}  # both happen: the check is not vacuous


def test_tsv_with_stray_quotes_and_no_quoting_splits(tmp_path):
    lines = ["text\tlabel"] + [f'he said "ok {i}" to a 5" screen\tham' for i in range(3000)]
    (tmp_path / "s.tsv").write_text("\n".join(lines) + "\n")
    src = discover([str(tmp_path / "s.tsv")])[0]
    rows, _ = _same(src, CsvOptions(block_bytes=4096))
    assert len(rows) == 3000


def test_a_block_reads_only_its_bytes_and_the_start_of_the_next(tmp_path, monkeypatch):
    import pandas as pd

    block = 50_000
    texts = _texts(random.Random(7), 20_000)
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "b.csv", index=False)
    src = discover([str(tmp_path / "b.csv")])[0]
    opt = CsvOptions(block_bytes=block)
    names, types = ["text"], {"text": pa.binary()}
    spans: list[tuple[int, int]] = []

    class Counting(io.FileIO):
        def read(self, n=-1):
            at = self.tell()
            data = super().read(n)
            spans.append((at, at + len(data)))
            return data

        def readinto(self, b):
            at = self.tell()
            n = super().readinto(b)
            spans.append((at, at + n))
            return n

    monkeypatch.setattr(csvsplit.stores, "open_input_file", lambda path: Counting(path, "r"))
    n = block_count(src, opt)
    assert n > 5
    rows = 0
    for k in range(n):
        spans.clear()
        rows += read_block(src, opt, names, types, k).batch.num_rows
        assert min(a for a, _ in spans) >= k * block - 1
        assert max(b for _, b in spans) <= min((k + 1) * block + csvsplit.LOOK + 2, src.size)
        assert sum(b - a for a, b in spans) <= block + 2 * (csvsplit.LOOK + 2) + 1000  # + a record
    assert rows == len(texts)


def test_a_seam_inside_a_quoted_field_is_a_split_error(tmp_path):
    """Quotes no writer makes ("...\\nb"y: a closing quote before a letter): the inferred start of a
    block lies inside a quoted field, and the block before finds it."""
    record = '1,"' + "a" * 200 + '\nb"y\n'
    (tmp_path / "q.csv").write_text("id,text\n" + record * 100)
    src = discover([str(tmp_path / "q.csv")])[0]
    with pytest.raises(BlockError, match="does not end at a record's end"):
        _split(src, CsvOptions(block_bytes=1000), ["id", "text"], {"id": pa.binary(), "text": pa.binary()})


def test_rejects_in_a_block_name_its_first_byte(tmp_path):
    rows = ["text,label"] + [f"message {i},ham" for i in range(3000)]
    rows[2500] = "broken,line,with,extra"
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n")
    src = discover([str(tmp_path / "x.csv")])[0]
    _, rejects = _same(src, CsvOptions(block_bytes=8 << 10))
    [r] = rejects
    assert r["text"] == "broken,line,with,extra" and r["from_byte"] > 0
    with open(src.path, "rb") as f:  # `line` counts records from `from_byte`
        f.seek(r["from_byte"])
        assert f.read().decode().splitlines()[r["line"] - 1] == "broken,line,with,extra"


def test_an_unterminated_quote_in_the_last_block_is_rejected(tmp_path):
    body = "".join(f"{i},message {i}\n" for i in range(2000))
    (tmp_path / "u.csv").write_text("id,text\n" + body + '2000,"never closed\n2001,swallowed\n')
    src = discover([str(tmp_path / "u.csv")])[0]
    rows, rejects = _same(src, CsvOptions(block_bytes=4096))
    assert len(rows) == 2000
    assert [(r["reason"], r["text"]) for r in rejects] == [
        ("unterminated quote: the last field runs to the end of the file", "never closed\n2001,swallowed\n")
    ]


@pytest.mark.parametrize("encoding,split", [("utf-8", True), ("latin-1", True), ("utf-16", False)])
def test_only_byte_compatible_encodings_split(tmp_path, encoding, split):
    (tmp_path / "e.csv").write_bytes(("text\n" + "café\n" * 2000).encode(encoding))
    src = discover([str(tmp_path / "e.csv")])[0]
    opt = CsvOptions(encoding=encoding, block_bytes=1000)
    assert bool(block_count(src, opt)) == split
    assert bool(block_count(src, CsvOptions(encoding=encoding, block_bytes=1000, in_blocks=False))) is False
    if split:
        rows, _ = _same(src, opt)
        assert {r["text"].decode() for r in rows} == {"café"}  # as UTF-8, read whole or in blocks


def test_compressed_and_small_files_are_read_whole(tmp_path):
    import gzip

    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(("text\n" + "x\n" * 5000).encode()))
    (tmp_path / "b.csv").write_text("text\nx\n")
    for src in discover([str(tmp_path / "a.csv.gz"), str(tmp_path / "b.csv")]):
        assert block_count(src, CsvOptions(block_bytes=100)) == 0
