"""The input-format seam: what spamjob reads (`InputFormat`), one module per format (its
`FORMAT`), and `REGISTRY`, in the order a file's name is matched against the formats.

A format knows files, not jobs: its suffixes, a file's schema from metadata or the header alone,
its rows when the metadata says, its work units and their rows as `Chunk`s. Discovery
(`scoring.inputs`), the one-schema rule (`scoring.setup`), the text column rules
(`scoring.columns`) and the unit scheduler (`scoring.units`) ask the format of a `Source`
(`of`) and never branch on its name. A format whose units are known before reading
(`unit_count` > 0) has them dealt to every process; one that `streams` can also be read whole,
its units known only once read, and a unit that raises `ReadWhole` sends its file there.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import PurePath
from typing import Protocol

import pyarrow as pa

from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.source import COMPRESSED, Chunk, Source

REGISTRY = {  # a format's name (a Source's `kind`) -> the module whose FORMAT reads it
    "parquet": "spamjob.scoring.formats.parquet_files",
    "csv": "spamjob.scoring.formats.delimited",
}


class InputFormat(Protocol):
    """One input file format."""

    name: str  # a Source's `kind`
    suffixes: tuple[str, ...]  # file name suffixes, lower case (".parquet")
    compressible: bool  # may also end in one of source.COMPRESSED (read through a decompressing stream)
    typed: bool  # its columns carry types (kept as they are); False: every value is text
    streams: bool  # can be read whole, as units known only once read (`stream`)

    def schema(self, source: Source, csv: CsvOptions) -> pa.Schema | None:
        """Column names and types from metadata or the header alone; None for a file without rows
        or header. Raises what its reader raises (pa.ArrowInvalid, OSError, ...) for a damaged one."""

    def rows(self, source: Source) -> int | None:
        """Its rows, where metadata alone says (the progress bar's total); None otherwise."""

    def bounds(self, source: Source, column: str) -> list | None:
        """[smallest, largest] value of a typed column from metadata alone (the one-schema rule
        narrows types by it); None when unknown."""

    def unit_count(self, source: Source, csv: CsvOptions) -> int:
        """Work units known before reading (dealt to every process); at least 1 for a format that
        does not stream; 0 for one that does: read whole (`stream`)."""

    def read_unit(
        self, source: Source, index: int, schema: pa.Schema, needed: list[str], csv: CsvOptions, rows: int
    ) -> Iterator[Chunk]:
        """Unit `index`'s rows in windows of `rows` rows: the `needed` columns (a format may read
        all of `schema`'s). Raises source.ReadWhole when the unit cannot be read on its own (a
        `streams` format: its file is then read whole)."""

    def stream(self, source: Source, csv: CsvOptions, schema: pa.Schema) -> Iterator[tuple[int, Chunk]]:
        """(unit index, its rows) for every unit of the whole file, in order (`streams` formats)."""


def get(name: str) -> InputFormat:
    return importlib.import_module(REGISTRY[name]).FORMAT


def of(source: Source) -> InputFormat:
    """The format a source was found to have."""
    return get(source.kind)


def format_of(path: PurePath) -> tuple[InputFormat, str | None] | None:
    """(format, compression) from a file's name; None for a name no format reads."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSED.get(suffixes[-1]) if suffixes else None
    base = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    found = next((f for f in map(get, REGISTRY) if base in f.suffixes), None)
    if found is None or (compression and not found.compressible):
        return None
    return found, compression


def suffixes() -> str:
    """What spamjob reads, for messages: ".parquet/.pq/.csv/..."."""
    return "/".join(s for f in map(get, REGISTRY) for s in f.suffixes)


def unknown_type(name: str) -> str:
    """The one line for a named file no format reads."""
    zipped = "/".join(f.name for f in map(get, REGISTRY) if f.compressible)
    return f"{name}: unknown input type; expected {suffixes()} ({zipped} also as .gz/.bz2/.zst)"
