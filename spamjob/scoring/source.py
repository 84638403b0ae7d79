"""An input file of a scoring job (`Source`: its format and fingerprint) and the rows read from
it as they stream in (`Chunk`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import PurePath

import pyarrow as pa

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


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


@dataclass
class Chunk:
    """Rows of one work unit as they stream in: a record batch and the rows that could not be parsed."""

    batch: pa.RecordBatch
    first_row: int  # index of batch row 0 among the input's parsed records (0 for a byte block: unknown)
    rejects: list[dict] = field(default_factory=list)
