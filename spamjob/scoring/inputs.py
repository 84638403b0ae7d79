"""Input discovery: files, folders and globs -> `Source`s in a stable order, each with its schema
read from metadata or the header alone. Scoring outputs met on a walk are skipped; named, their
predictions are scored again."""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pa_fs

from spamjob import stores
from spamjob.errors import SpamjobError, first_line
from spamjob.scoring.csv import CsvOptions, csv_schema, read_error
from spamjob.scoring.outdir import PLAN, PREDICTIONS, scoring_output_of, uri_output_of
from spamjob.scoring.parquet import parquet_schema
from spamjob.scoring.source import Source, kind_of


def discover(patterns: list[str] | tuple[str, ...]) -> list[Source]:
    """Files, folders (searched recursively for known suffixes) and globs -> sources, in a stable order.

    A pattern that matches nothing, or a file of an unknown type, is an error. A scoring output
    (a folder holding PLAN) is skipped when a folder or glob is walked, so that an output
    inside an input folder is never read; its parts are scored again only when named: a part, or
    the output's predictions/ folder, of a finished job (`scored_input`).
    """
    seen: dict[str, Source] = {}
    marked = functools.lru_cache(maxsize=None)(lambda folder: (folder / PLAN).is_file())  # this call only
    for pattern in patterns:
        if stores.is_uri(pattern):
            seen.update((s.path, s) for s in uri_sources(pattern) if s.path not in seen)
            continue
        p = Path(pattern).expanduser()
        if p.is_file():
            candidates = [p]
            if kind_of(p) is None:
                raise SpamjobError(f"{p}: unknown input type; expected .parquet, .csv, .tsv or .txt (optionally .gz)")
            scored_input(p, p.parent)
        elif p.is_dir():
            scored_input(p, p)
            candidates = sorted(
                f for f in _walk(p) if kind_of(f) is not None and scoring_output_of(f, p, marked) is None
            )
            if not candidates:
                raise SpamjobError(f"folder {p} holds no .parquet/.csv/.tsv/.txt files")
        else:
            candidates = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            candidates = [
                c for c in candidates if kind_of(c) is not None and scoring_output_of(c, None, marked) is None
            ]
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
        raise SpamjobError(
            f"{named} is (inside) {output}, a spamjob scoring output; to score its predictions "
            f"again, name {output / PREDICTIONS} or parts in it"
        )
    if not (output / "_SUCCESS").is_file():
        raise SpamjobError(
            f"{named} belongs to an unfinished scoring job ({output} has no _SUCCESS); "
            "finish that job first (rerun its command)"
        )


def uri_sources(pattern: str) -> list[Source]:
    """The objects a URI names (one object, a prefix listed recursively, or a glob), by the same
    rules as local paths: scoring outputs met on the way skipped, a named one's predictions only."""
    has_plan = functools.lru_cache(maxsize=None)(lambda prefix: stores.exists(stores.join(prefix, PLAN)))
    if stores.GLOB.search(pattern):
        found = [f for f in stores.glob_files(pattern) if uri_output_of(stores.parent(f[0]), has_plan) is None]
        empty = f"no input matches {pattern!r}"
    elif (info := stores.info(pattern)).type == pa_fs.FileType.File:
        if kind_of(PurePosixPath(pattern)) is None:
            raise SpamjobError(f"{pattern}: unknown input type; expected .parquet, .csv, .tsv or .txt (optionally .gz)")
        scored_uri(pattern, stores.parent(pattern))
        found, empty = [(pattern, info.size, info.mtime_ns or 0)], ""
    else:
        scored_uri(pattern, pattern)
        listed = stores.list_files(pattern)
        outputs = tuple(stores.parent(u) + "/" for u, _, _ in listed if u.endswith("/" + PLAN))
        found = [f for f in listed if not f[0].startswith(outputs)]
        empty = f"{pattern}: no such object, and no .parquet/.csv/.tsv/.txt objects under it"
    kinds = {uri: kind_of(PurePosixPath(uri)) for uri, _, _ in found}
    sources = [Source(uri, *kinds[uri], size, mtime) for uri, size, mtime in found if kinds[uri]]
    if not sources:
        raise SpamjobError(empty)
    return sources


def scored_uri(named: str, folder: str) -> None:
    """`scored_input`'s rule for an object store."""
    output = uri_output_of(named)
    if output is None:
        return
    predictions = stores.join(output, PREDICTIONS)
    if folder.rstrip("/") != predictions:
        raise SpamjobError(
            f"{named} is (inside) {output}, a spamjob scoring output; to score its predictions "
            f"again, name {predictions} or parts in it"
        )
    if not stores.exists(stores.join(output, "_SUCCESS")):
        raise SpamjobError(
            f"{named} belongs to an unfinished scoring job ({output} has no _SUCCESS); "
            "finish that job first (rerun its command)"
        )


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


def schema_of(source: Source, csv: CsvOptions) -> pa.Schema | None:
    """Column names and types, reading only metadata / the header. None for an empty file."""
    if source.size == 0:
        return None
    try:
        if source.kind == "parquet":
            return parquet_schema(source)
        try:
            return csv_schema(source, csv, 1 << 16)  # a small block: setup stays cheap for many files
        except pa.ArrowInvalid as e:
            if "straddl" not in str(e):
                raise
            return csv_schema(source, csv, csv.block_bytes)  # a first row longer than 64 KB
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        message = first_line(e)
        if "Empty CSV file" in message:
            return None
        raise read_error(source, message, csv) from None
