"""Input discovery: files, folders and globs -> `Source`s in a stable order, each with its schema
read from metadata or the header alone. Below a folder, prefix or glob base, a path with a name
starting with `_` or `.` is skipped, as Spark, Hadoop and pyarrow.dataset skip it (their
bookkeeping: `_temporary/`, `_SUCCESS`, `.crc`, `_committed_*`); so are files of other types and
scoring outputs met on a walk (named, their predictions are scored again). A file named on the
command line is read whatever its name. What was skipped, and why, is kept (`Found.skipped`)."""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pa_fs

from spamjob import stores
from spamjob.console import say
from spamjob.errors import SpamjobError, first_line
from spamjob.scoring import formats
from spamjob.scoring.csv_reader import CsvOptions, read_error
from spamjob.scoring.formats import format_of, unknown_type
from spamjob.scoring.output.lookup import scoring_output_of, uri_output_of
from spamjob.scoring.output.names import PLAN, PREDICTIONS
from spamjob.scoring.source import Source

HIDDEN, UNKNOWN_TYPE, SCORING_OUTPUT = "hidden", "unknown type", "scoring output"  # why a file was skipped


def hidden(relative: PurePath) -> bool:
    """Whether a path below the folder, prefix or glob base given has a component starting with `_`
    or `.` (hive-style `key=value` folders do not): pyarrow.dataset's and Spark's rule."""
    return any(part.startswith(("_", ".")) for part in relative.parts)


@dataclass
class Found:
    """The input files, and the files met on the way that are not read, with why (path -> reason)."""

    sources: list[Source] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, sources: list[Source]) -> None:
        """`sources` not found already (a file two patterns name is read once)."""
        known = {s.path for s in self.sources}
        for source in sources:
            if source.path not in known:
                known.add(source.path)
                self.sources.append(source)


def skipped_counts(skipped: dict[str, str]) -> dict[str, int] | None:
    """How many files were skipped, by reason (None: none), as the report gives it."""
    return dict(sorted(Counter(skipped.values()).items())) or None


def say_skipped(skipped: dict[str, str], verbose: bool) -> None:
    """With --verbose, each file skipped under the inputs, and why (on the main process)."""
    if verbose:
        for path, why in skipped.items():
            say(f"skipped ({why}): {path}")


def discover(patterns: list[str] | tuple[str, ...]) -> list[Source]:
    """`find`'s sources."""
    return find(patterns).sources


def find(patterns: list[str] | tuple[str, ...]) -> Found:
    """Files, folders (searched recursively for known suffixes) and globs -> sources, in a stable order.

    A pattern that matches nothing, or a file of an unknown type, is an error. A scoring output
    (a folder holding PLAN) is skipped when a folder or glob is walked, so that an output
    inside an input folder is never read; its parts are scored again only when named: a part, or
    the output's predictions/ folder, of a finished job (`scored_input`).
    """
    found = Found()
    marked = functools.lru_cache(maxsize=None)(lambda folder: (folder / PLAN).is_file())  # this call only
    for pattern in map(stores.local_path, patterns):
        if stores.is_uri(pattern):
            found.add(uri_sources(pattern, found.skipped))
            continue
        p = Path(pattern).expanduser()
        if p.is_file():
            if format_of(p) is None:
                raise SpamjobError(unknown_type(str(p)))
            scored_input(p, p.parent)
            candidates = [p]
        elif p.is_dir():
            scored_input(p, p)
            candidates = _readable(sorted(_walk(p)), p, p, found.skipped, marked)
            if not candidates:
                raise SpamjobError(f"folder {p} holds no {formats.suffixes()} files{_besides(found.skipped)}")
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            candidates = _readable(matches, _glob_base(p), None, found.skipped, marked)
            if not candidates:
                raise SpamjobError(f"no input matches {pattern!r}{_besides(found.skipped)}")
        found.add([_local_source(c) for c in candidates])
    return found


def why_skipped(relative: PurePath, in_output) -> str | None:
    """Why a file met below a folder, prefix or glob base (at `relative` to it) is not read, if it is
    not: the one rule for local paths and every store. `in_output()`: whether it lies in a scoring output."""
    if hidden(relative):
        return HIDDEN
    if format_of(relative) is None:
        return UNKNOWN_TYPE
    return SCORING_OUTPUT if in_output() else None


def _readable(files: list[Path], base: Path, stop: Path | None, skipped: dict[str, str], marked) -> list[Path]:
    """The files below `base` that are read; the others go into `skipped` with why (a scoring output:
    a folder holding PLAN, looked for up to `stop`)."""
    readable = []
    for f in files:
        why = why_skipped(f.relative_to(base), lambda f=f: scoring_output_of(f, stop, marked) is not None)
        if why is None:
            readable.append(f)
        else:
            skipped.setdefault(str(f.resolve()), why)
    return readable


def _glob_base(pattern: Path) -> Path:
    """The folder a glob's wildcards start below."""
    parts = pattern.parts
    literal = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:literal]) if literal else Path(".")


def _besides(skipped: dict[str, str]) -> str:
    """What an "is empty" error adds when files were skipped."""
    counts = skipped_counts(skipped)
    return f" (skipped: {', '.join(f'{n} {why}' for why, n in counts.items())})" if counts else ""


def _local_source(path: Path) -> Source:
    """The file at `path` (its real path: a file linked twice is read once), of the type its name says."""
    st = path.stat()
    return _source(str(path.resolve()), path, st.st_size, st.st_mtime_ns)


def _source(where: str, name: PurePath, size: int, mtime_ns: int) -> Source:
    fmt, compression = format_of(name)  # type: ignore[misc]
    return Source(where, fmt.name, compression, size, mtime_ns)


def versioned(sources: list[Source]) -> list[Source]:
    """The sources with their content's version, for --incremental: a local file's size, mtime and
    inode (a file rewritten in place or replaced by a rename has another), an object's size and
    ETag (S3, Azure) or generation (GCS), else its mtime (no s3fs/gcsfs installed: a rewrite within
    the same second and size is then not seen)."""
    tags = stores.versions([s.path for s in sources if stores.is_uri(s.path)])
    out = []
    for s in sources:
        if stores.is_uri(s.path):
            version = f"{s.size}:{tags.get(s.path) or s.mtime_ns}"
        else:
            version = f"{s.size}:{s.mtime_ns}:{os.stat(s.path).st_ino}"
        out.append(dataclasses.replace(s, version=version))
    return out


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


def uri_sources(pattern: str, skipped: dict[str, str] | None = None) -> list[Source]:
    """The objects a URI names (one object, a prefix listed recursively, or a glob), by the same
    rules as local paths: hidden names below the prefix, other types and scoring outputs met on
    the way skipped (into `skipped`), a named one's predictions only."""
    skipped = {} if skipped is None else skipped
    has_plan = functools.lru_cache(maxsize=None)(lambda prefix: stores.exists(stores.join(prefix, PLAN)))
    if stores.GLOB.search(pattern):
        base = stores.glob_base(pattern)
        listed = stores.glob_files(pattern)
        outputs = tuple(o + "/" for o in {uri_output_of(stores.parent(u), has_plan) for u, _, _ in listed} if o)
        empty = f"no input matches {pattern!r}"
    elif (info := stores.info(pattern)).type == pa_fs.FileType.File:
        if format_of(PurePosixPath(pattern)) is None:
            raise SpamjobError(unknown_type(pattern))
        scored_uri(pattern, stores.parent(pattern))
        return [_source(pattern, PurePosixPath(pattern), info.size, info.mtime_ns or 0)]
    else:
        scored_uri(pattern, pattern)
        base, listed = pattern.rstrip("/"), stores.list_files(pattern)
        outputs = tuple(stores.parent(u) + "/" for u, _, _ in listed if u.endswith("/" + PLAN))
        empty = f"{pattern}: no such object, and no {formats.suffixes()} objects under it"
    sources = []
    for uri, size, mtime in listed:
        why = why_skipped(PurePosixPath(uri[len(base) :].lstrip("/")), lambda uri=uri: uri.startswith(outputs))
        if why is None:
            sources.append(_source(uri, PurePosixPath(uri), size, mtime))
        else:
            skipped.setdefault(uri, why)
    if not sources:
        raise SpamjobError(empty + _besides(skipped))
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
        return formats.of(source).schema(source, csv)
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        raise read_error(source, first_line(e), csv) from None
