"""Where scoring outputs are: the output a path or URI lies in (a folder holding a plan), and
the check that --out neither holds an input nor lies inside another output."""

from __future__ import annotations

from pathlib import Path

from spamjob import stores
from spamjob.errors import SpamjobError
from spamjob.scoring.output.names import PLAN


def scoring_output_of(path: Path, stop: Path | None = None, has_marker=None) -> Path | None:
    """The spamjob scoring output folder that `path` is or lies in (looking up to `stop`), if any.

    `has_marker`: a cached folder -> bool test, for walks that ask about the same parents often.
    """
    has_marker = has_marker or (lambda folder: (folder / PLAN).is_file())
    path = path.resolve()
    stop = stop.resolve() if stop is not None else None
    for folder in [path, *path.parents] if path.is_dir() else list(path.parents):
        if has_marker(folder):
            return folder
        if folder == stop:
            return None
    return None


def uri_output_of(uri: str, has_plan=None) -> str | None:
    """`scoring_output_of` in an object store: the prefix holding PLAN that `uri` is or lies in, if
    any (one request per level; `has_plan`: a cached prefix -> bool test)."""
    has_plan = has_plan or (lambda prefix: stores.exists(stores.join(prefix, PLAN)))
    while True:
        if has_plan(uri):
            return uri
        up = stores.parent(uri)
        if up == uri:
            return None
        uri = up


def check_out(out: str, inputs: list[str]) -> None:
    """--out may neither hold an input (a rerun or --overwrite would change what it reads) nor lie
    inside another scoring output (its predictions/ would read as more rows)."""
    if stores.is_uri(out):
        inside = next((path for path in inputs if path.startswith(out.rstrip("/") + "/")), None)
        owner = uri_output_of(stores.parent(out))
    else:
        out = Path(out).expanduser().resolve()
        inside = next((path for path in inputs if not stores.is_uri(path) and Path(path).is_relative_to(out)), None)
        owner = scoring_output_of(out.parent) if out.parent.exists() else None
    if inside is not None:
        raise SpamjobError(f"input {inside} lies inside --out {out}; write the output elsewhere")
    if owner is not None:
        raise SpamjobError(f"--out {out} lies inside {owner}, another scoring output; write the output elsewhere")
