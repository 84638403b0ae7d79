"""Streamed HTTP downloads: one process per file at a time, progress bar, timeout, retries with
resume, temp name + rename, sizes and checksums checked and recorded."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from spamjob import __version__
from spamjob.console import note
from spamjob.errors import SpamjobError, redact
from spamjob.fsutil import locked, read_json, sha256_file, write_json

CHUNK = 1 << 20  # 1 MiB reads keep memory flat for multi-GB checkpoints


def is_offline() -> bool:
    """True when SPAMJOB_OFFLINE or HF_HUB_OFFLINE forbids network access."""
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in truthy for v in ("SPAMJOB_OFFLINE", "HF_HUB_OFFLINE"))


def is_url(source: str | os.PathLike) -> bool:
    """True for http(s):// sources."""
    return str(source).startswith(("http://", "https://"))


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool = True,
    fetch_hint: str | None = None,
) -> Path:
    """Download `url` to `dest` unless a complete (and, with `sha256`, verified) copy is there.

    Every process that wants the file (the ranks of a job, other jobs sharing the cache) takes
    the file's lock first, so one downloads while the others wait and then only check its copy
    (`_damage`). A copy that no longer matches the sha256 pinned or recorded for it is fetched
    again with one `note:` line (offline: one error line). The body is streamed to `dest.part`
    and renamed onto `dest` only when every announced byte has arrived and matches `sha256` and
    the server's Content-MD5, if any; without a pinned `sha256`, its size and sha256 are then
    recorded (`.cache/spamjob/<name>.json` beside it; the lock there is removed when released,
    and the folder when empty). A dropped
    connection is retried up to `retries` times, resuming with a Range request; so is a `.part`
    left by a killed process (no live one writes it: we hold the lock). Raises SpamjobError with
    one line on any failure.
    """
    dest = Path(dest)
    if (damage := _damage(dest, sha256)) is None:  # no lock: a read-only copy (a bundle) needs none
        return dest
    if is_offline():
        hint = f"; {fetch_hint}" if fetch_hint else ""
        raise SpamjobError(f"offline (SPAMJOB_OFFLINE/HF_HUB_OFFLINE set) and {dest} is {damage}{hint}")
    if damage != "missing":
        note(f"{dest} is {damage}; fetching it again")
    try:
        with locked(_bookkeeping(dest, ".lock"), remove=True):
            if _damage(dest, sha256) is not None:  # another process may have fetched it while we waited
                dest.unlink(missing_ok=True)  # a bad copy, fetched again
                _fetch_into(url, dest, sha256, timeout=timeout, retries=retries, progress=progress)
    finally:
        for folder in (_bookkeeping(dest, "").parent, _bookkeeping(dest, "").parent.parent):
            with contextlib.suppress(OSError):  # not empty (a record, another lock), or gone already
                folder.rmdir()
    return dest


def _fetch_into(url: str, dest: Path, sha256: str | None, *, timeout: float, retries: int, progress: bool) -> None:
    """Download, verify and rename into place (the caller holds the file's lock); a file with no
    pinned hash gets a record of its size and sha256."""
    part = dest.with_name(dest.name + ".part")
    try:
        md5 = _fetch(url, part, timeout=timeout, retries=retries, progress=progress)
        _verify(url, part, sha256, md5)
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
    if sha256 is None:
        record = {"url": redact(url), "size": dest.stat().st_size, "sha256": sha256_file(dest)}
        write_json(_bookkeeping(dest, ".json"), record)


def _bookkeeping(dest: Path, suffix: str) -> Path:
    """Where the lock (while a process fetches or checks the file) and the record of a downloaded
    file live, as huggingface_hub keeps its own beside a local_dir download: hidden, so that the
    folder still holds only the files themselves."""
    return dest.parent / ".cache" / "spamjob" / f"{dest.name}{suffix}"


def _damage(dest: Path, sha256: str | None) -> str | None:
    """None when `dest` is there and whole: its pinned sha256, else the sha256 recorded when it was
    fetched (a file put there by hand, with neither, is taken as it is). Else why not: "missing",
    or how it differs (a partial copy, a disk error, a bad restore of a cache volume)."""
    if not dest.exists():
        return "missing"
    record = _bookkeeping(dest, ".json")
    try:
        want = sha256 or (read_json(record).get("sha256") if record.is_file() else None)
    except SpamjobError:
        return "unverifiable (the record of its sha256 is damaged)"
    if want is None or (got := sha256_file(dest)) == want:
        return None
    made = "its pinned" if sha256 else "the one recorded when it was fetched"
    return f"damaged (sha256 {got[:12]}..., not {made}, {want[:12]}...)"


def _fetch(url: str, part: Path, *, timeout: float, retries: int, progress: bool) -> str | None:
    """Fill `part` with the whole body (resuming what it holds); returns the server's MD5, if any."""
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2.0**attempt * 0.25, 8.0))
        try:
            done, md5 = _fetch_once(url, part, timeout=timeout, progress=progress)
            if done:
                return md5
            last_error = "connection closed before the whole file arrived"
        except urllib.error.HTTPError as e:
            if e.code in (408, 425, 429) or e.code >= 500:
                last_error = f"HTTP {e.code} {e.reason}"
                continue
            raise SpamjobError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last_error = str(getattr(e, "reason", e)) or type(e).__name__
    raise SpamjobError(f"could not download {url} after {retries + 1} attempts: {last_error}")


def _verify(url: str, part: Path, sha256: str | None, md5: str | None) -> None:
    if sha256 is not None and (actual := sha256_file(part)) != sha256:
        raise SpamjobError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}")
    if md5 is not None and (actual := _md5_base64(part)) != md5:
        raise SpamjobError(f"checksum mismatch for {url}: the server's Content-MD5 is {md5}, the file's {actual}")


def _md5_base64(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool) -> tuple[bool, str | None]:
    """One request, appending to `part` when it holds a start. Returns (complete, the whole
    file's MD5 as the server states it: Azure Blob storage's x-ms-blob-content-md5, or a full
    response's Content-MD5)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"spamjob/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: nothing after `have`, e.g. killed before the rename
            raise
        total = e.headers.get("Content-Range", "").rpartition("/")[2]
        if total != str(have):
            part.unlink()
            raise
        return True, e.headers.get("x-ms-blob-content-md5")
    with resp:
        if have and resp.status != 206:
            have = 0  # server ignored the Range header: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        md5 = resp.headers.get("x-ms-blob-content-md5") or (resp.headers.get("Content-MD5") if not have else None)
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=redact(Path(url).name)[:40],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            got = have
            while block := resp.read(CHUNK):
                f.write(block)
                got += len(block)
                bar.update(len(block))
    return total is None or got == total, md5
