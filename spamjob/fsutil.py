"""Files that are either complete or absent: temporary names, renames, checksums, cache folders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spamjob.errors import SpamjobError

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, finished files get the usual mode


def cache_dir() -> Path:
    """spamjob's cache folder: $SPAMJOB_CACHE, else $XDG_CACHE_HOME/spamjob, else ~/.cache/spamjob."""
    if os.environ.get("SPAMJOB_CACHE"):
        return Path(os.environ["SPAMJOB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "spamjob"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be several GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    A crash or an exception leaves no file that looks complete: the temporary file
    (hidden, suffixed `.part`) is removed on error, and `dest` is never half-written.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        fsync(tmp_path)  # on disk before the rename makes it visible: a power cut leaves old or new, whole
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indented, trailing newline)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def create_file(dest: str | os.PathLike, text: str) -> bool:
    """Write `dest` whole, only if it is absent (a hard link of a complete temporary file, which
    fails where a file is there); False when it was there."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.link(tmp, dest)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises SpamjobError naming it."""

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpamjobError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpamjobError(f"{path} is not valid JSON: {e}") from None


@contextlib.contextmanager
def locked(path: str | os.PathLike, wait: bool = True, remove: bool = False) -> Iterator[bool]:
    """Hold an advisory lock (flock) on `path`, created if needed, for the block. With `wait` off,
    yields False at once when another process holds it. Released when the process dies, however.
    With `remove`, the lock file is deleted as the block ends (still held, so that a process
    waiting on it sees that it is gone and takes a new one: the file's identity is checked)."""
    import fcntl

    path = Path(path)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        except FileNotFoundError:  # its folder was removed just now (see fetch.download): make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        if _same_file(fd, path):
            break
        os.close(fd)  # removed (or replaced) while we waited: lock the file that is there now
    try:
        yield True
    finally:
        if remove:
            path.unlink(missing_ok=True)
        os.close(fd)  # closing releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
