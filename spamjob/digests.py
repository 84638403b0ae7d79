"""Digests recorded when a cache entry is made, and checked before it is used: a partial copy, a
disk error or a bad restore of a cache volume is found before anything reads the entry.

Each kind of entry keeps its record where it is made: a fetched classifier's and an ONNX graph
folder's in a JSON file beside their files (`record`, `damaged`), a download's beside it
(spamjob.fetch), a Hugging Face cache file in its blob's name (`hub_blob_damage`), a bundle's in
its bundle.json (spamjob.assets). A damaged entry is made again once, with one `note:` line
(`remade`); where that is impossible (offline) the caller raises one error line.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from spamjob.console import note
from spamjob.fsutil import sha256_file

_SHA256, _GIT_SHA1 = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{40}")


def record(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """name -> sha256 of each file `names` lists in `folder` (names relative to it, with '/')."""
    return {name: sha256_file(Path(folder) / name) for name in sorted(names)}


def files_below(folder: str | os.PathLike) -> list[str]:
    """Every file under `folder`, relative to it (the names `record` takes)."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def damaged(folder: str | os.PathLike, recorded: dict[str, str]) -> list[str]:
    """The files of `recorded` that are missing from `folder` or whose sha256 is no longer the one recorded."""
    folder = Path(folder)
    return [n for n, want in recorded.items() if not (folder / n).is_file() or sha256_file(folder / n) != want]


def differ(bad: list[str], recorded: str) -> str | None:
    """What a check found, as a note or an error says it (None: nothing)."""
    return f"{', '.join(bad)} differ{'s' if len(bad) == 1 else ''} from {recorded}" if bad else None


def hub_blob_damage(path: str | os.PathLike) -> str | None:
    """How a file of the Hugging Face cache differs from the digest its blob is named after (the
    sha256 of an LFS file, git's blob sha1 of a small one); None when it matches, or when the file
    is not such a blob (a `local_dir` copy)."""
    blob = Path(path).resolve()
    if _SHA256.fullmatch(blob.name):
        got = sha256_file(blob)
    elif _GIT_SHA1.fullmatch(blob.name):
        data = blob.read_bytes()  # git-stored files are small (config.json, vocab.json)
        got = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    else:
        return None
    return None if got == blob.name else f"{path} does not match the digest its cache entry was stored under"


def remade(entry: str, why: str, again: str = "making it again") -> None:
    """The one `note:` line of a cache entry that failed its check and is made (or fetched) again."""
    note(f"{entry} in the cache is damaged ({why}); {again}")
