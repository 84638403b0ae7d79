"""Part files: one per work unit, Parquet or CSV, written under a temporary name and renamed into
place when complete (spamjob.scoring.output commits it)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from spamjob.fsutil import fsync


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
