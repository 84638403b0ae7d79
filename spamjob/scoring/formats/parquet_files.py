"""Parquet as an input format: a unit per row group, read by spamjob.scoring.parquet."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.parquet import iter_parquet_unit, parquet_bounds, parquet_layout, parquet_schema, parquet_units
from spamjob.scoring.source import Chunk, Source


class ParquetFormat:
    name = "parquet"
    suffixes = (".parquet", ".pq")
    compressible = False  # compressed inside, by column chunk
    typed = True
    streams = False

    def schema(self, source: Source, csv: CsvOptions) -> pa.Schema | None:
        return parquet_schema(source) if source.size else None

    def rows(self, source: Source) -> int | None:
        return parquet_layout(source)[1]

    def bounds(self, source: Source, column: str) -> list | None:
        return parquet_bounds(source, column)

    def unit_count(self, source: Source, csv: CsvOptions) -> int:
        return len(parquet_units(source))

    def read_unit(
        self, source: Source, index: int, schema: pa.Schema, needed: list[str], csv: CsvOptions, rows: int
    ) -> Iterator[Chunk]:
        return iter_parquet_unit(source, index, needed, rows)

    def stream(self, source: Source, csv: CsvOptions, schema: pa.Schema) -> Iterator[tuple[int, Chunk]]:
        raise NotImplementedError("Parquet units are its row groups, known from the footer")


FORMAT = ParquetFormat()
