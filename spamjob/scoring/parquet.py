"""Parquet inputs: one work unit per row group, read in record batches of the needed columns
only (`ParquetFile.iter_batches`), so memory stays flat however large the file; the footer
alone gives the layout and the statistics that the one-schema rule checks. An object in a store is
read by ranges: its footer once per process (`metadata`), then each unit's column chunks only."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from spamjob import stores
from spamjob.errors import SpamjobError, first_line
from spamjob.scoring.source import Chunk, Source


def parquet_file(source: Source) -> pq.ParquetFile:
    """The file opened with its footer read once (a local path as it is; an object by ranges)."""
    if not stores.is_uri(source.path):
        return pq.ParquetFile(source.path)
    return pq.ParquetFile(stores.open_input_file(source.path), metadata=metadata(source))


@functools.lru_cache(maxsize=256)
def metadata(source: Source) -> pq.FileMetaData:
    """The footer (a Source names one version of a file: its size and mtime are in it)."""
    if not stores.is_uri(source.path):
        return pq.read_metadata(source.path)
    with stores.store_errors(source.path), stores.open_input_file(source.path) as f:
        return pq.read_metadata(f)


def parquet_schema(source: Source) -> pa.Schema:
    return parquet_file(source).schema_arrow


def parquet_layout(source: Source) -> tuple[int, int]:
    """(row groups, rows) from the footer alone; an empty file has neither."""
    if source.size == 0:
        return 0, 0
    meta = metadata(source)
    return meta.num_row_groups, meta.num_rows


def parquet_units(source: Source) -> list[int]:
    """Row-group indices (a file without row groups is one empty unit, so it is still accounted for)."""
    return list(range(max(parquet_layout(source)[0], 1)))


def parquet_bounds(source: Source, column: str) -> list | None:
    """[smallest, largest] value of a top-level column, from the footer's statistics alone; None
    when a row group has none."""
    meta = metadata(source)
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        chunk = next(
            (group.column(j) for j in range(group.num_columns) if group.column(j).path_in_schema == column), None
        )
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
    pf = parquet_file(source)
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
            raise SpamjobError(f"cannot read {source.path} (row group {row_group}): {first_line(e)}") from None
        yield Chunk(batch, first)
        first += batch.num_rows
