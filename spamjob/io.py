"""Streaming Parquet/CSV input and output: discovery, work units, record batches, part files.

Nothing here reads a whole file: Parquet is read one row group at a time in record
batches (`ParquetFile.iter_batches`), CSV through Arrow's streaming reader
(`pyarrow.csv.open_csv`) block by block, so memory stays flat however large the input.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from spamjob.errors import SpamjobError
from spamjob.fsutil import fsync

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
TEXT_CANDIDATES = ("Text", "text", "message", "sms")
PREDICTIONS = "predictions"  # in a scoring output: the parts, one Parquet/CSV dataset
OUTPUT_MARKER = "_plan.json"  # what makes a folder a scoring output (spamjob.score writes it first)


@dataclass(frozen=True)
class Source:
    """One input file: its format and fingerprint (path, size, mtime)."""

    path: str
    kind: str  # "parquet" | "csv"
    compression: str | None
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """Stable short id used in part names (sha1 of the absolute path)."""
        return hashlib.sha1(self.path.encode()).hexdigest()[:12]

    def fingerprint(self) -> dict:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}


def kind_of(path: PurePath) -> tuple[str, str | None] | None:
    """("parquet" | "csv", compression) from the file name, None for an unknown type."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSED.get(suffixes[-1]) if suffixes else None
    base = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if base in PARQUET_SUFFIXES and not compression:
        return "parquet", None
    if base in CSV_SUFFIXES:
        return "csv", compression
    return None


def discover(patterns: list[str] | tuple[str, ...]) -> list[Source]:
    """Files, folders (searched recursively for known suffixes) and globs -> sources, in a stable order.

    A pattern that matches nothing, or a file of an unknown type, is an error. A scoring output
    (a folder holding OUTPUT_MARKER) is skipped when a folder or glob is walked, so that an output
    inside an input folder is never read; its parts are scored again only when named: a part, or
    the output's predictions/ folder, of a finished job (`scored_input`).
    """
    seen: dict[str, Source] = {}
    marked = functools.lru_cache(maxsize=None)(lambda folder: (folder / OUTPUT_MARKER).is_file())  # this call only
    for pattern in patterns:
        p = Path(pattern).expanduser()
        if p.is_file():
            candidates = [p]
            if kind_of(p) is None:
                raise SpamjobError(f"{p}: unknown input type; expected .parquet, .csv, .tsv or .txt (optionally .gz)")
            scored_input(p, p.parent)
        elif p.is_dir():
            scored_input(p, p)
            candidates = sorted(f for f in _walk(p) if kind_of(f) is not None and scoring_output_of(f, p, marked) is None)
            if not candidates:
                raise SpamjobError(f"folder {p} holds no .parquet/.csv/.tsv/.txt files")
        else:
            candidates = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            candidates = [c for c in candidates if kind_of(c) is not None and scoring_output_of(c, None, marked) is None]
            if not candidates:
                raise SpamjobError(f"no input matches {pattern!r}")
        for c in candidates:
            real = str(c.resolve())
            if real not in seen:
                st = c.stat()
                kind, compression = kind_of(c)  # type: ignore[misc]
                seen[real] = Source(real, kind, compression, st.st_size, st.st_mtime_ns)
    return list(seen.values())


def scored_input(named: Path, folder: Path) -> None:
    """A named input inside a scoring output must be its predictions/ folder (`folder`), or a part
    in it, of a finished job: anything else there (the output itself, its bookkeeping, an
    unfinished job's parts) is an error."""
    output = scoring_output_of(named)
    if output is None:
        return
    if folder.resolve() != (output / PREDICTIONS).resolve():
        raise SpamjobError(f"{named} is (inside) {output}, a spamjob scoring output; to score its predictions "
                           f"again, name {output / PREDICTIONS} or parts in it")
    if not (output / "_SUCCESS").is_file():
        raise SpamjobError(f"{named} belongs to an unfinished scoring job ({output} has no _SUCCESS); "
                           "finish that job first (rerun its command)")


def check_out(out: Path, inputs: list[str]) -> None:
    """--out may neither hold an input (a rerun or --overwrite would change what it reads) nor lie
    inside another scoring output (its predictions/ would read as more rows)."""
    out = out.expanduser().resolve()
    inside = next((path for path in inputs if Path(path).is_relative_to(out)), None)
    if inside is not None:
        raise SpamjobError(f"input {inside} lies inside --out {out}; write the output elsewhere")
    owner = scoring_output_of(out.parent) if out.parent.exists() else None
    if owner is not None:
        raise SpamjobError(f"--out {out} lies inside {owner}, another scoring output; write the output elsewhere")


def _walk(folder: Path) -> Iterator[Path]:
    """Every file below `folder`, symlinked files and symlinked folders followed alike (each real
    folder once, so a link loop ends)."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        yield from (Path(root) / name for name in files if (Path(root) / name).is_file())


def scoring_output_of(path: Path, stop: Path | None = None, has_marker=None) -> Path | None:
    """The spamjob scoring output folder that `path` is or lies in (looking up to `stop`), if any.

    `has_marker`: a cached folder -> bool test, for walks that ask about the same parents often.
    """
    has_marker = has_marker or (lambda folder: (folder / OUTPUT_MARKER).is_file())
    path = path.resolve()
    stop = stop.resolve() if stop is not None else None
    for folder in [path, *path.parents] if path.is_dir() else list(path.parents):
        if has_marker(folder):
            return folder
        if folder == stop:
            return None
    return None


@dataclass(frozen=True)
class CsvOptions:
    """How CSV/TSV inputs are parsed."""

    delimiter: str | None = None  # None: tab for .tsv, comma otherwise
    encoding: str = "utf-8"
    block_bytes: int = 16 << 20  # one work unit per block
    split: bool = True  # large uncompressed files: each process reads only its blocks (spamjob.csvsplit)

    def delimiter_for(self, source: Source) -> str:
        if self.delimiter:
            return self.delimiter
        name = source.path.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".zst")
        return "\t" if name.endswith(".tsv") else ","


def _open_stream(source: Source):
    return pa.input_stream(source.path, compression=source.compression)


def schema_of(source: Source, csv: CsvOptions) -> pa.Schema | None:
    """Column names and types, reading only metadata / the header. None for an empty file."""
    if source.size == 0:
        return None
    try:
        if source.kind == "parquet":
            return pq.ParquetFile(source.path).schema_arrow
        try:
            return _csv_schema(source, csv, 1 << 16)  # a small block: setup stays cheap for many files
        except pa.ArrowInvalid as e:
            if "straddl" not in str(e):
                raise
            return _csv_schema(source, csv, csv.block_bytes)  # a first row longer than 64 KB
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Empty CSV file" in message:
            return None
        raise read_error(source, message, csv) from None


def read_error(source: Source, message: str, csv: CsvOptions, where: str = "") -> SpamjobError:
    if "codec can't decode" in message:  # a byte not valid in --encoding (files not UTF-8 are decoded whole)
        return SpamjobError(f"{source.path}{where}: not {csv.encoding} text ({message.rsplit(': ', 1)[-1]}); "
                            "check --encoding")
    if "straddl" in message:  # Arrow's words for a row longer than its block
        return SpamjobError(f"{source.path}{where}: a row is longer than --block-mb {csv.block_bytes >> 20}; "
                            "raise --block-mb")
    return SpamjobError(f"cannot read {source.path}{where}: {message}")


def _csv_schema(source: Source, csv: CsvOptions, block: int) -> pa.Schema:
    # Closed explicitly: a reader left to the garbage collector can keep a native read-ahead
    # thread busy past the interpreter's teardown (see spamjob.cli.run_standalone).
    with _open_stream(source) as f, contextlib.closing(pacsv.open_csv(
            f, read_options=read_options(csv, block), parse_options=parse_options(source, csv, lambda row: "skip"),
            convert_options=pacsv.ConvertOptions(auto_dict_encode=False))) as reader:
        return reader.schema


def read_options(csv: CsvOptions, block: int, encoding: str | None = None) -> pacsv.ReadOptions:
    # Single-threaded parsing: rejected rows then carry their row number, and blocks
    # (work units) are the same on every run.
    return pacsv.ReadOptions(use_threads=False, block_size=block, encoding=encoding or csv.encoding)


def parse_options(source: Source, csv: CsvOptions, handler) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter=csv.delimiter_for(source), newlines_in_values=True,
                              invalid_row_handler=handler)


@dataclass
class Chunk:
    """Rows of one work unit as they stream in: a record batch and the rows that could not be parsed."""

    batch: pa.RecordBatch
    first_row: int  # index of batch row 0 among the input's parsed records (0 for a byte block: unknown)
    rejects: list[dict] = field(default_factory=list)


def parquet_layout(source: Source) -> tuple[int, int]:
    """(row groups, rows) from the footer alone; an empty file has neither."""
    if source.size == 0:
        return 0, 0
    meta = pq.ParquetFile(source.path).metadata
    return meta.num_row_groups, meta.num_rows


def parquet_units(source: Source) -> list[int]:
    """Row-group indices (a file without row groups is one empty unit, so it is still accounted for)."""
    return list(range(max(parquet_layout(source)[0], 1)))


def parquet_bounds(source: Source, column: str) -> list | None:
    """[smallest, largest] value of a top-level column, from the footer's statistics alone; None
    when a row group has none."""
    meta = pq.ParquetFile(source.path).metadata
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        chunk = next((group.column(j) for j in range(group.num_columns) if group.column(j).path_in_schema == column), None)
        stats = chunk.statistics if chunk is not None else None
        if stats is None or (not stats.has_min_max and stats.null_count != group.num_rows):
            return None
        if stats.has_min_max:
            lows.append(stats.min)
            highs.append(stats.max)
    return [min(lows), max(highs)] if lows else []


def iter_parquet_unit(source: Source, row_group: int, columns: list[str], batch_rows: int) -> Iterator[Chunk]:
    """Record batches of one row group (only the needed columns)."""
    if source.size == 0:
        return
    pf = pq.ParquetFile(source.path)
    if pf.metadata.num_row_groups == 0:
        return
    first = sum(pf.metadata.row_group(i).num_rows for i in range(row_group))
    batches = pf.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, EOFError) as e:  # a corrupt page shows only when it is read
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SpamjobError(f"cannot read {source.path} (row group {row_group}): {message}") from None
        yield Chunk(batch, first)
        first += batch.num_rows


def iter_csv_blocks(source: Source, csv: CsvOptions, column_types: dict[str, pa.DataType]
                    ) -> Iterator[tuple[int, Chunk]]:
    """(block index, chunk) for every block of a CSV/TSV file read whole, rejects attached to the
    block that met them (a block without rows joins the one before). The file is read with
    `end_line` after it (`settle_end`), so blocks are handed out one behind the reader: the last
    is settled once the end line has been parsed.
    """
    if source.size == 0:
        return
    pending: list[dict] = []

    def on_invalid(row) -> str:
        pending.append(csv_reject(source, row))
        return "skip"

    with _utf8_stream(source, csv) as raw:
        f = _WithEndLine(raw, end_line(csv.delimiter_for(source), len(column_types)))
        try:
            reader = pacsv.open_csv(
                f, read_options=read_options(csv, csv.block_bytes, "utf8"),
                parse_options=parse_options(source, csv, on_invalid),
                convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False,
                                                     quoted_strings_can_be_null=False, auto_dict_encode=False),
            )
        except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
            raise read_error(source, str(e).splitlines()[0] if str(e) else type(e).__name__, csv) from None
        with contextlib.closing(reader):  # on every path, the generator's early close included (see schema_of)
            held, block, first = None, 0, 0
            for batch in _batches(reader, source, csv):
                if held is not None and not batch.num_rows:  # its rejects join the block before
                    held[1].rejects.extend(pending)
                    pending = []
                    continue
                if held is not None:
                    yield held
                held, pending = (block, Chunk(batch, first, pending)), []
                first += batch.num_rows
                block += 1
    if held is None:
        held = (0, Chunk(pa.RecordBatch.from_pylist([], schema=pa.schema(list(column_types.items()))), 0))
    last = settle_end(source, Chunk(held[1].batch, held[1].first_row, held[1].rejects + pending), f.added)
    if last.batch.num_rows or last.rejects:  # (a block of the end line alone is none)
        yield held[0], last


def _utf8_stream(source: Source, csv: CsvOptions):
    """The file's bytes as UTF-8 (decompressed, transcoded from --encoding), so that the end line
    can be added in UTF-8 whatever the file's encoding."""
    stream = _open_stream(source)
    if codecs.lookup(csv.encoding).name == "utf-8":
        return stream
    return contextlib.closing(pa.transcoding_input_stream(stream, csv.encoding, "utf-8"))


END_MARK = b"\x1fspamjob: end of input\x1f"


def end_line(delimiter: str, columns: int) -> bytes:
    """A line parsed after an input's own bytes: it comes out as a row of its own (its first field
    END_MARK) only when those bytes end outside any quoted field."""
    return END_MARK + delimiter.encode() * (columns - 1) + b"\n"


def ends_clean(batch: pa.RecordBatch) -> bool:
    """The end line came out as the last row (see `end_line`)."""
    return batch.num_rows > 0 and batch.column(0)[batch.num_rows - 1].as_py() == END_MARK


def settle_end(source: Source, chunk: Chunk, added: bytes) -> Chunk:
    """The last chunk of an input read with `added` (a newline if it lacked one, then `end_line`)
    after it: the end line dropped; or, when a quote opened in the last record never closes (it took
    the end line into its field), that record moved to the rejects without what was added. It is
    the last reject (its field count is off) or else the last row."""
    batch, rejects = chunk.batch, chunk.rejects
    if ends_clean(batch):
        return Chunk(batch.slice(0, batch.num_rows - 1), chunk.first_row, rejects)
    cut = len(added) - len(added.lstrip(b"\n"))  # the newline added before the end line, if any
    if rejects and END_MARK.decode() in rejects[-1]["text"]:
        text = rejects[-1]["text"]
        text = text[: text.rfind(END_MARK.decode()) - cut]
        return Chunk(batch, chunk.first_row, [*rejects[:-1], unterminated_reject(source, text)])
    if not batch.num_rows:
        return chunk
    last = batch.column(batch.num_columns - 1)[batch.num_rows - 1].as_py()
    text = last[: last.rfind(END_MARK) - cut].decode("utf-8", "replace")
    return Chunk(batch.slice(0, batch.num_rows - 1), chunk.first_row, [*rejects, unterminated_reject(source, text)])


def csv_reject(source: Source, row, from_byte: int | None = None) -> dict:
    """A line Arrow could not parse (`pyarrow.csv.InvalidRow`). `line` is the record's number, 1 for
    the header; in a block read on its own (`from_byte`), counted from the block's first byte."""
    where = {"line": row.number} if from_byte is None else {"line": row.number, "from_byte": from_byte}
    return {"file": source.path, **where, "reason": f"expected {row.expected_columns} fields, found {row.actual_columns}",
            "text": row.text}


def unterminated_reject(source: Source, text: str) -> dict:
    return {"file": source.path, "line": None, "text": text[:1000],
            "reason": "unterminated quote: the last field runs to the end of the file"}


def _batches(reader, source: Source, csv: CsvOptions) -> Iterator[pa.RecordBatch]:
    block = 0
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
            raise read_error(source, str(e).splitlines()[0], csv, f" (block {block})") from None
        block += 1


class _WithEndLine:
    """A file object over an Arrow input stream that adds `end` after the last byte (a newline
    before it when the input does not end with one); `added` is what it added."""

    closed = False

    def __init__(self, stream, end: bytes):
        self.stream, self.end, self.last, self.added = stream, end, b"\n", b""

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if data:
            self.last = data[-1:]
            return data
        if self.added:
            return b""
        self.added = (b"" if self.last in (b"\n", b"\r") else b"\n") + self.end
        return self.added


class PartWriter:
    """Writes one part file (Parquet or CSV) under a temporary name; `commit()` renames it into place."""

    def __init__(self, dest: Path, fmt: str):
        self.dest, self.fmt = dest, fmt
        self.tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        self._writer = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.tmp, table.schema)
            else:
                self._writer = pacsv.CSVWriter(self.tmp, table.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self, schema: pa.Schema) -> None:
        if self._writer is None:  # no rows: still a valid (empty) part with the output schema
            self.write(schema.empty_table())
        self._writer.close()
        fsync(self.tmp)  # the part is on disk before the rename that commits it
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.tmp.exists():
            self.tmp.unlink()
