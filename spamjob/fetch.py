"""Streamed HTTP downloads: progress bar, timeout, retries with resume, temp name + rename, sha256."""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from spamjob import __version__
from spamjob.errors import SpamjobError
from spamjob.fsutil import sha256_file

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

    The body is streamed to `dest.part` and renamed onto `dest` only when every byte
    announced by Content-Length has arrived and the checksum matches. A dropped
    connection is retried up to `retries` times, resuming with a Range request when
    the server supports it. Raises SpamjobError with one line on any failure.
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is None:
            return dest  # only ever renamed into place when complete
        actual = sha256_file(dest)
        if actual == sha256:
            return dest
        dest.unlink()  # stale or corrupt copy: fetch again
    if is_offline():
        hint = f"; {fetch_hint}" if fetch_hint else ""
        raise SpamjobError(f"offline (SPAMJOB_OFFLINE/HF_HUB_OFFLINE set) and {dest} is missing{hint}")

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.exists():
        part.unlink()  # a leftover of an earlier process: its origin is unknown
    last_error = ""
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt * 0.25, 8.0))
            try:
                if _fetch_once(url, part, timeout=timeout, progress=progress):
                    break
                last_error = "connection closed before the whole file arrived"
            except urllib.error.HTTPError as e:
                if e.code in (408, 425, 429) or e.code >= 500:
                    last_error = f"HTTP {e.code} {e.reason}"
                    continue
                raise SpamjobError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last_error = str(getattr(e, "reason", e)) or type(e).__name__
        else:
            raise SpamjobError(f"could not download {url} after {retries + 1} attempts: {last_error}")
        if sha256 is not None:
            actual = sha256_file(part)
            if actual != sha256:
                raise SpamjobError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
    return dest


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool) -> bool:
    """One request; appends to `part` when resuming. Returns True once the file is complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"spamjob/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if have and resp.status != 206:
            have = 0  # server ignored the Range header: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as f, tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=Path(url).name[:40],
            disable=not progress,
            leave=False,
        ) as bar:
            got = have
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                got += len(block)
                bar.update(len(block))
    return total is None or got == total
