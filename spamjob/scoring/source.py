"""An input file of a scoring job (`Source`: its format and fingerprint), the rows read from it
as they stream in (`Chunk`), and what a format raises for a unit it cannot read on its own
(`ReadWhole`). Formats themselves: spamjob.scoring.formats."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from spamjob.errors import SpamjobError

COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


@dataclass(frozen=True)
class Source:
    """One input file: its format and fingerprint (path, size, mtime; for --incremental, its version)."""

    path: str
    kind: str  # its format's name (spamjob.scoring.formats)
    compression: str | None
    size: int
    mtime_ns: int
    version: str = ""  # --incremental: what the store guarantees about the content (spamjob.scoring.inputs)

    @property
    def key(self) -> str:
        """Stable short id used in part names: sha1 of the absolute path (and of its version, so
        that each version of a file scored incrementally has parts of its own)."""
        version = b"\0" + self.version.encode() if self.version else b""
        return hashlib.sha1(self.path.encode() + version).hexdigest()[:12]

    def fingerprint(self) -> dict:
        version = {"version": self.version} if self.version else {}
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, **version}


@dataclass
class Chunk:
    """Rows of one work unit as they stream in: a record batch and the rows that could not be parsed."""

    batch: pa.RecordBatch
    first_row: int  # index of batch row 0 among the input's parsed records (0 for a byte block: unknown)
    rejects: list[dict] = field(default_factory=list)


def windows_of(chunk: Chunk, rows: int) -> Iterator[Chunk]:
    """Split a chunk into windows of `rows` rows (rejects ride with the first)."""
    b = chunk.batch
    if b.num_rows <= rows:
        yield chunk
        return
    for k, off in enumerate(range(0, b.num_rows, rows)):
        yield Chunk(b.slice(off, rows), chunk.first_row + off, chunk.rejects if k == 0 else [])


class ReadWhole(SpamjobError):
    """A unit read on its own failed its check: its file must be read whole (InputFormat.stream)."""
