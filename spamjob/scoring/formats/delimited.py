"""CSV/TSV/text as an input format, read by spamjob.scoring.csv_reader: a large uncompressed file
in byte blocks dealt to every process, any other (or one whose block fails its check:
`ReadWhole`) whole, block by block. Every value comes in as bytes, decoded per value."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from spamjob.scoring.csv_reader import CsvOptions, block_count, csv_schema, iter_csv_blocks, read_block
from spamjob.scoring.source import Chunk, Source, windows_of


class CsvFormat:
    name = "csv"
    suffixes = (".csv", ".tsv", ".txt")
    compressible = True
    typed = False
    streams = True

    def schema(self, source: Source, csv: CsvOptions) -> pa.Schema | None:
        try:
            return csv_schema(source, csv, 1 << 16)  # a small block: setup stays cheap for many files
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return None
            if "straddl" not in str(e):
                raise
            return csv_schema(source, csv, csv.block_bytes)  # a first row longer than 64 KB

    def rows(self, source: Source) -> int | None:
        return None

    def bounds(self, source: Source, column: str) -> list | None:
        return None  # text

    def unit_count(self, source: Source, csv: CsvOptions) -> int:
        return block_count(source, csv)

    def read_unit(
        self, source: Source, index: int, schema: pa.Schema, needed: list[str], csv: CsvOptions, rows: int
    ) -> Iterator[Chunk]:
        chunk = read_block(source, csv, schema.names, _as_bytes(schema.names), index)  # BlockError: ReadWhole
        return windows_of(chunk, rows)

    def stream(self, source: Source, csv: CsvOptions, schema: pa.Schema) -> Iterator[tuple[int, Chunk]]:
        return iter_csv_blocks(source, csv, _as_bytes(schema.names))


def _as_bytes(names: list[str]) -> dict[str, pa.DataType]:
    return {name: pa.binary() for name in names}  # decoded per value: bad bytes never crash


FORMAT = CsvFormat()
