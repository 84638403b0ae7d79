"""One block of a large uncompressed CSV file, read without reading the rest of the file.

Block k is bytes [k*B, (k+1)*B): its records run from the first record start at or after k*B
to the first at or after (k+1)*B. Whether a newline ends a record (it is outside quotes)
depends in general on everything before it, so the first record start of each block is
inferred from the bytes just after k*B (`record_start`), and the block before checks that
inference exactly: it parses its own bytes with Arrow followed by `spamjob.io.end_line`, which
comes out as a row of its own only when the parse ends outside any quoted field, that is, only
when the next block's inferred start is a real record start. Block 0 starts at byte 0 (the
header), so when every block's check passes, every start is right (by induction) and the
blocks together are exactly the file's records. A failed check raises SplitError: the scoring
job then reads that file whole (never a lost or doubled row)."""

from __future__ import annotations

import codecs
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from spamjob.errors import SpamjobError
from spamjob.io import Chunk, CsvOptions, Source, csv_reject, end_line, ends_clean, parse_options, read_error, \
    read_options, settle_end

LOOK = 1 << 16  # bytes looked at after k*B to infer the first record start (more when none is found)
QUOTE, LF, CR = ord('"'), ord("\n"), ord("\r")
SPLIT_ENCODINGS = {"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"}  # (codecs names) newline, quote: one byte


class SplitError(SpamjobError):
    """A block's check failed: the file must be read whole."""


def block_count(source: Source, csv: CsvOptions) -> int:
    """Byte blocks of a file read in blocks; 0 for a file read whole (compressed, small, another encoding)."""
    if (not csv.split or source.kind != "csv" or source.compression is not None or source.size <= csv.block_bytes
            or codecs.lookup(csv.encoding).name not in SPLIT_ENCODINGS):
        return 0
    return math.ceil(source.size / csv.block_bytes)


def read_block(source: Source, csv: CsvOptions, names: list[str], column_types: dict[str, pa.DataType],
               k: int) -> Chunk:
    """The records of block k (only its bytes and a little after are read), checked as the module says."""
    delimiter = csv.delimiter_for(source)
    with open(source.path, "rb") as f:
        start, stop = (_start(f, source, csv, delimiter, k * csv.block_bytes) if k else 0,
                       _start(f, source, csv, delimiter, (k + 1) * csv.block_bytes))
        if start >= stop:
            return Chunk(pa.RecordBatch.from_pylist([], schema=pa.schema(list(column_types.items()))), 0)
        data, added = _read_with_end_line(f, start, stop, end_line(delimiter, len(names)))
    rejects: list[dict] = []
    table = _parse(source, csv, data, names if k else None, column_types, rejects, start if k else None)
    chunk = Chunk(table.combine_chunks().to_batches()[0] if table.num_rows else
                  pa.RecordBatch.from_pylist([], schema=table.schema), 0, rejects)
    if stop < source.size and not ends_clean(chunk.batch):
        raise SplitError(f"block {k} does not end at a record's end (byte {stop}): quotes that no CSV writer "
                         "makes hide where records start; read whole")
    return settle_end(source, chunk, added)


def _read_with_end_line(f, start: int, stop: int, end: bytes) -> tuple[bytearray, bytes]:
    """Bytes [start, stop) and then (after a newline, if they lack one) `end`, read in place."""
    data = bytearray(stop - start + 1 + len(end))
    f.seek(start)
    n = f.readinto(memoryview(data)[: stop - start])
    added = (b"" if data[n - 1] in b"\n\r" else b"\n") + end
    data[n: n + len(added)] = added
    del data[n + len(added):]
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
    raise SpamjobError(f"{source.path}: no record starts in bytes {pos}..{end}: a row is longer than --block-mb "
                       f"{csv.block_bytes >> 20}; raise --block-mb")


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
    fits = [bool(may_open[p::2].all() and may_close[1 - p::2].all()) for p in (0, 1)]  # state at pos: out, in
    if fits == [True, True] and len(quote) and not final:
        return None
    state = fits.index(True) if fits.count(True) == 1 else len(quote) % 2 if eof and all(fits) else None
    lines = idx[(buf[1:n] == LF) | ((buf[1:n] == CR) & (nxt[1:n] != LF))]
    if state is not None:  # newlines after an even number of quotes in that state; all, when none is left
        outside = lines[(state + np.searchsorted(quote, lines)) % 2 == 0]
        lines = outside if len(outside) or not final else lines
    return int(lines[0]) + 1 if len(lines) else None


def _parse(source: Source, csv: CsvOptions, data: bytearray, names: list[str] | None,
           column_types: dict[str, pa.DataType], rejects: list[dict], from_byte: int | None) -> pa.Table:
    def on_invalid(row) -> str:
        rejects.append(csv_reject(source, row, from_byte))
        return "skip"

    options = read_options(csv, len(data) + 1)
    if names is not None:
        options.column_names = names
    try:
        return pacsv.read_csv(pa.BufferReader(pa.py_buffer(data)), read_options=options,
                              parse_options=parse_options(source, csv, on_invalid),
                              convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False,
                                                                   quoted_strings_can_be_null=False,
                                                                   auto_dict_encode=False))
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        where = f" (bytes from {from_byte})" if from_byte is not None else ""
        raise read_error(source, str(e).splitlines()[0] if str(e) else type(e).__name__, csv, where) from None
