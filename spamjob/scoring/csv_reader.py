"""CSV/TSV inputs, streamed: never a whole file in memory, never a lost or doubled record.

A file is read whole through Arrow's streaming reader (`pyarrow.csv.open_csv`), block by block
(one work unit per block), with an end line parsed after its bytes (`end_line`): it comes out
as a row of its own only when the file ends outside any quoted field, so an unterminated quote
is found exactly. Fields are read as bytes and decoded per value: bad bytes never crash.

A large uncompressed file is read in byte blocks instead, each by the process that owns it,
without reading the rest of the file. Block k is bytes [k*B, (k+1)*B): its records run from
the first record start at or after k*B to the first at or after (k+1)*B. Whether a newline
ends a record (it is outside quotes) depends in general on everything before it, so the first
record start of each block is inferred from the bytes just after k*B (`record_start`), and the
block before checks that inference exactly: it parses its own bytes followed by the end line,
which comes out as a row of its own only when the next block's inferred start is a real record
start. Block 0 starts at byte 0 (the header), so when every block's check passes, every start
is right (by induction) and the blocks together are exactly the file's records. A failed check
raises BlockError (a source.ReadWhole): the scoring job then reads that file whole.
"""

from __future__ import annotations

import codecs
import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from spamjob import stores
from spamjob.errors import SpamjobError, first_line
from spamjob.scoring.source import Chunk, ReadWhole, Source

LOOK = 1 << 16  # bytes looked at after k*B to infer the first record start (more when none is found)
BLOCK_ENCODINGS = {"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"}  # (codecs names) newline, quote: one byte
QUOTE, LF, CR = ord('"'), ord("\n"), ord("\r")


@dataclass(frozen=True)
class CsvOptions:
    """How CSV/TSV inputs are parsed."""

    delimiter: str | None = None  # None: tab for .tsv, comma otherwise
    encoding: str = "utf-8"
    block_bytes: int = 16 << 20  # one work unit per block
    in_blocks: bool = True  # large uncompressed files: each process reads only its byte blocks

    def delimiter_for(self, path: str) -> str:
        """--delimiter, else tab for a .tsv file (compressed too), comma for any other."""
        if self.delimiter:
            return self.delimiter
        name = path.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".zst")
        return "\t" if name.endswith(".tsv") else ","


def _open_stream(source: Source):
    return stores.open_input_stream(source.path, source.compression)


def csv_schema(source: Source, csv: CsvOptions, block: int) -> pa.Schema:
    # Closed explicitly: a reader left to the garbage collector can keep a native read-ahead
    # thread busy past the interpreter's teardown (see spamjob.cli.run_standalone).
    with (
        _open_stream(source) as f,
        contextlib.closing(
            pacsv.open_csv(
                f,
                read_options=read_options(csv, block),
                parse_options=parse_options(source, csv, lambda row: "skip"),
                convert_options=pacsv.ConvertOptions(auto_dict_encode=False),
            )
        ) as reader,
    ):
        return reader.schema


def read_error(source: Source, message: str, csv: CsvOptions, where: str = "") -> SpamjobError:
    if "codec can't decode" in message:  # a byte not valid in --encoding (files not UTF-8 are decoded whole)
        return SpamjobError(
            f"{source.path}{where}: not {csv.encoding} text ({message.rsplit(': ', 1)[-1]}); check --encoding"
        )
    if "straddl" in message:  # Arrow's words for a row longer than its block
        return SpamjobError(
            f"{source.path}{where}: a row is longer than --block-mb {csv.block_bytes >> 20}; raise --block-mb"
        )
    return SpamjobError(f"cannot read {source.path}{where}: {message}")


def read_options(csv: CsvOptions, block: int, encoding: str | None = None) -> pacsv.ReadOptions:
    # Single-threaded parsing: rejected rows then carry their row number, and blocks
    # (work units) are the same on every run.
    return pacsv.ReadOptions(use_threads=False, block_size=block, encoding=encoding or csv.encoding)


def _exact(column_types: dict[str, pa.DataType]) -> pacsv.ConvertOptions:
    """Fields as the given types (bytes, for scoring), an empty field as empty, never as null."""
    return pacsv.ConvertOptions(
        column_types=column_types, strings_can_be_null=False, quoted_strings_can_be_null=False, auto_dict_encode=False
    )


def parse_options(source: Source, csv: CsvOptions, handler) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=csv.delimiter_for(source.path), newlines_in_values=True, invalid_row_handler=handler
    )


def iter_csv_blocks(
    source: Source, csv: CsvOptions, column_types: dict[str, pa.DataType]
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
        f = _WithEndLine(raw, end_line(csv.delimiter_for(source.path), len(column_types)))
        try:
            reader = pacsv.open_csv(
                f,
                read_options=read_options(csv, csv.block_bytes, "utf8"),
                parse_options=parse_options(source, csv, on_invalid),
                convert_options=_exact(column_types),
            )
        except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
            raise read_error(source, first_line(e), csv) from None
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


def _batches(reader, source: Source, csv: CsvOptions) -> Iterator[pa.RecordBatch]:
    block = 0
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
            raise read_error(source, first_line(e), csv, f" (block {block})") from None
        block += 1


def _utf8_stream(source: Source, csv: CsvOptions):
    """The file's bytes as UTF-8 (decompressed, transcoded from --encoding), so that the end line
    can be added in UTF-8 whatever the file's encoding."""
    stream = _open_stream(source)
    if codecs.lookup(csv.encoding).name == "utf-8":
        return stream
    return contextlib.closing(pa.transcoding_input_stream(stream, csv.encoding, "utf-8"))


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
    return {
        "file": source.path,
        **where,
        "reason": f"expected {row.expected_columns} fields, found {row.actual_columns}",
        "text": row.text,
    }


def unterminated_reject(source: Source, text: str) -> dict:
    return {
        "file": source.path,
        "line": None,
        "text": text[:1000],
        "reason": "unterminated quote: the last field runs to the end of the file",
    }


class BlockError(ReadWhole):
    """A byte block's check failed: the file must be read whole."""


def block_count(source: Source, csv: CsvOptions) -> int:
    """Byte blocks of a file read in blocks; 0 for a file read whole (compressed, small, another encoding)."""
    if (
        not csv.in_blocks
        or source.compression is not None
        or source.size <= csv.block_bytes
        or codecs.lookup(csv.encoding).name not in BLOCK_ENCODINGS
    ):
        return 0
    return math.ceil(source.size / csv.block_bytes)


def read_block(
    source: Source, csv: CsvOptions, names: list[str], column_types: dict[str, pa.DataType], k: int
) -> Chunk:
    """The records of byte block k (only its bytes and a little after are read), checked as the module says."""
    delimiter = csv.delimiter_for(source.path)
    with stores.open_input_file(source.path) as f:  # an object: ranged reads of its bytes alone
        start, stop = (
            _start(f, source, csv, delimiter, k * csv.block_bytes) if k else 0,
            _start(f, source, csv, delimiter, (k + 1) * csv.block_bytes),
        )
        if start >= stop:
            return Chunk(pa.RecordBatch.from_pylist([], schema=pa.schema(list(column_types.items()))), 0)
        data, added = _read_with_end_line(f, start, stop, end_line(delimiter, len(names)))
    rejects: list[dict] = []
    table = _parse(source, csv, data, names if k else None, column_types, rejects, start if k else None)
    chunk = Chunk(
        table.combine_chunks().to_batches()[0]
        if table.num_rows
        else pa.RecordBatch.from_pylist([], schema=table.schema),
        0,
        rejects,
    )
    if stop < source.size and not ends_clean(chunk.batch):
        raise BlockError(
            f"block {k} does not end at a record's end (byte {stop}): quotes that no CSV writer "
            "makes hide where records start; read whole"
        )
    return settle_end(source, chunk, added)


def _read_with_end_line(f, start: int, stop: int, end: bytes) -> tuple[bytearray, bytes]:
    """Bytes [start, stop) and then (after a newline, if they lack one) `end`, read in place."""
    data = bytearray(stop - start + 1 + len(end))
    f.seek(start)
    n = f.readinto(memoryview(data)[: stop - start])
    added = (b"" if data[n - 1] in b"\n\r" else b"\n") + end
    data[n : n + len(added)] = added
    del data[n + len(added) :]
    return data, added


def _start(f, source: Source, csv: CsvOptions, delimiter: str, pos: int) -> int:
    """The inferred first record start at or after `pos` (the file's size past its last record)."""
    if pos >= source.size:
        return source.size
    end = min(pos + csv.block_bytes, source.size)
    start = record_start(f, pos, end, ord(delimiter), eof=end == source.size)
    if start is not None:
        return start
    if end == source.size:
        return source.size
    raise SpamjobError(
        f"{source.path}: no record starts in bytes {pos}..{end}: a row is longer than --block-mb "
        f"{csv.block_bytes >> 20}; raise --block-mb"
    )


def record_start(f, pos: int, end: int, delimiter: int, eof: bool) -> int | None:
    """The first byte in [pos, end) (pos > 0) that follows a newline outside quotes as far as the bytes
    from pos on tell; None when there is none.

    The quote state at `pos` is inferred from the quotes after it: in a CSV file as writers make
    them (RFC 4180) a quote that opens a field follows a delimiter or a newline, and one that closes
    a field comes before one; when exactly one state at `pos` fits every quote in view, newlines are
    taken in that state, else (no quotes, or quotes no writer would make) the first newline is.
    Quotes that fit both states make the view grow (up to `end`); when it reaches the end of the
    file (`eof`), where no quoted field is open, the state at `pos` is the parity of the quotes after it.
    """
    look = LOOK
    while True:
        stop = min(pos + look, end)
        f.seek(pos - 1)
        buf = np.frombuffer(f.read(stop - pos + 2), np.uint8)  # the byte before pos, and the one after stop
        found = _first_boundary(buf, stop - pos + 1, delimiter, final=stop == end, eof=eof and stop == end)
        if found is not None:
            return pos - 1 + found
        if stop == end:
            return None
        look *= 4


def _first_boundary(buf: np.ndarray, n: int, delimiter: int, final: bool, eof: bool) -> int | None:
    """Index just after the first record-ending newline among buf[1:n] (see `record_start`); buf[n]
    is the next byte, absent only at the end of the file, which reads as a newline. None also when
    the quotes in view fit both states and more can be read (`final` false)."""
    nxt = np.append(buf[1:], np.uint8(LF))
    idx = np.arange(1, n)
    quote = idx[buf[1:n] == QUOTE]
    seps = np.array([delimiter, LF, CR, QUOTE], np.uint8)
    may_open, may_close = np.isin(buf[quote - 1], seps), np.isin(nxt[quote], seps)
    fits = [bool(may_open[p::2].all() and may_close[1 - p :: 2].all()) for p in (0, 1)]  # state at pos: out, in
    if fits == [True, True] and len(quote) and not final:
        return None
    state = fits.index(True) if fits.count(True) == 1 else len(quote) % 2 if eof and all(fits) else None
    lines = idx[(buf[1:n] == LF) | ((buf[1:n] == CR) & (nxt[1:n] != LF))]
    if state is not None:  # newlines after an even number of quotes in that state; all, when none is left
        outside = lines[(state + np.searchsorted(quote, lines)) % 2 == 0]
        lines = outside if len(outside) or not final else lines
    return int(lines[0]) + 1 if len(lines) else None


def _parse(
    source: Source,
    csv: CsvOptions,
    data: bytearray,
    names: list[str] | None,
    column_types: dict[str, pa.DataType],
    rejects: list[dict],
    from_byte: int | None,
) -> pa.Table:
    def on_invalid(row) -> str:
        rejects.append(csv_reject(source, row, from_byte))
        return "skip"

    options = read_options(csv, len(data) + 1)
    if names is not None:
        options.column_names = names
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=options,
            parse_options=parse_options(source, csv, on_invalid),
            convert_options=_exact(column_types),
        )
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        where = f" (bytes from {from_byte})" if from_byte is not None else ""
        raise read_error(source, first_line(e), csv, where) from None
