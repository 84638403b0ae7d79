"""spamjob.fetch against a local HTTP server: progress, checksum, interruption, reuse, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import Server, flip_byte

from spamjob.errors import SpamjobError
from spamjob.fetch import download

BODY = os.urandom(3 * (1 << 20) + 123)  # several read chunks
SHA = hashlib.sha256(BODY).hexdigest()


def files_in(folder) -> list[str]:
    """What a download left in `folder`, but for its hidden lock and record (.cache/spamjob/)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".cache")


def test_progress_bar_and_complete_file(tmp_path, capsys):
    with Server({"/f.bin": BODY}) as srv:
        out = download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA)
    assert out.read_bytes() == BODY
    err = capsys.readouterr().err
    assert "f.bin" in err and "3.00M" in err  # tqdm's byte counter reached the full size


def test_skip_when_present_and_verified(tmp_path):
    with Server({"/f.bin": BODY}) as srv:
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
        assert srv.hits["/f.bin"] == 1
        (tmp_path / "f.bin").write_bytes(b"corrupt")  # a bad copy is fetched again
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
        assert srv.hits["/f.bin"] == 2
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_checksum_mismatch_leaves_nothing(tmp_path):
    wrong = "0" * 64
    with Server({"/f.bin": BODY}) as srv, pytest.raises(SpamjobError) as e:
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=wrong, progress=False)
    assert wrong in str(e.value) and SHA in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_resumes(tmp_path):
    with Server({"/f.bin": BODY}) as srv:
        srv.truncate["/f.bin"] = 2  # the first two responses stop halfway
        out = download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False, retries=3)
        assert srv.hits["/f.bin"] == 3
    assert out.read_bytes() == BODY
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_interrupted_every_time_fails_cleanly(tmp_path):
    with Server({"/f.bin": BODY}) as srv, pytest.raises(SpamjobError, match="after 2 attempts"):
        srv.truncate["/f.bin"] = 10
        download(srv.url + "/f.bin", tmp_path / "f.bin", progress=False, retries=1)
    assert list(tmp_path.iterdir()) == []  # no partial file that looks complete


def test_http_404_is_not_retried(tmp_path):
    with Server({}) as srv, pytest.raises(SpamjobError, match="HTTP 404"):
        download(srv.url + "/missing", tmp_path / "m", progress=False)


def test_connection_refused(tmp_path):
    with pytest.raises(SpamjobError, match="could not download"):
        download("http://127.0.0.1:9/x", tmp_path / "x", progress=False, retries=0, timeout=2)


def test_offline_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    with pytest.raises(SpamjobError, match="offline .* is missing; fetch it here"):
        download("http://127.0.0.1:9/x", tmp_path / "x", fetch_hint="fetch it here")
    (tmp_path / "x").write_bytes(b"ok")  # a present file needs no network
    assert download("http://127.0.0.1:9/x", tmp_path / "x").read_bytes() == b"ok"


def _download_in_subprocess(url: str, dest, **env) -> subprocess.Popen:
    code = "import sys; from spamjob.fetch import download; download(sys.argv[1], sys.argv[2], progress=False)"
    return subprocess.Popen(
        [sys.executable, "-c", code, url, str(dest)], env={**os.environ, **env}, stderr=subprocess.PIPE, text=True
    )


def test_processes_that_want_one_file_fetch_it_once(tmp_path):
    """Four processes (the ranks of a job) at once: one downloads, the others wait for its lock and
    find the file whole."""
    with Server({"/f.bin": BODY}) as srv:
        srv.slow["/f.bin"] = 0.03  # long enough for every process to be waiting
        procs = [_download_in_subprocess(srv.url + "/f.bin", tmp_path / "f.bin") for _ in range(4)]
        assert [p.wait(timeout=120) for p in procs] == [0] * 4, [p.stderr.read() for p in procs]
        assert srv.hits == {"/f.bin": 1}
    assert (tmp_path / "f.bin").read_bytes() == BODY and files_in(tmp_path) == ["f.bin"]
    record = json.loads((tmp_path / ".cache" / "spamjob" / "f.bin.json").read_text())
    assert record == {"url": srv.url + "/f.bin", "size": len(BODY), "sha256": SHA}


def test_a_download_killed_midway_resumes_where_it_stopped(tmp_path):
    with Server({"/f.bin": BODY}) as srv:
        srv.slow["/f.bin"] = 0.02
        proc = _download_in_subprocess(srv.url + "/f.bin", tmp_path / "f.bin")
        part = tmp_path / "f.bin.part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= 1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        had = part.stat().st_size
        assert 0 < had < len(BODY) and not (tmp_path / "f.bin").exists()
        srv.slow.clear()
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
        assert srv.starts["/f.bin"] == [0, had]  # the second request asked only for the rest
    assert (tmp_path / "f.bin").read_bytes() == BODY and files_in(tmp_path) == ["f.bin"]


def test_a_part_killed_before_its_rename_is_finished_without_a_body(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BODY)
    with Server({"/f.bin": BODY}) as srv:
        download(srv.url + "/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
        assert srv.starts["/f.bin"] == [len(BODY)]  # answered 416: nothing left to send
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_the_servers_md5_is_checked(tmp_path):
    good = base64.b64encode(hashlib.md5(BODY).digest()).decode()
    md5 = {"/f.bin": good}
    with Server({"/f.bin": BODY}, headers=lambda path: {"Content-MD5": md5[path]}) as srv:
        download(srv.url + "/f.bin", tmp_path / "f.bin", progress=False)
        md5["/f.bin"] = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        with pytest.raises(SpamjobError, match="Content-MD5") as e:
            download(srv.url + "/f.bin", tmp_path / "g.bin", progress=False)
    assert "\n" not in str(e.value) and files_in(tmp_path) == ["f.bin"]


def test_a_copy_whose_size_differs_from_its_record_is_fetched_again(tmp_path):
    with Server({"/f.bin": BODY}) as srv:
        download(srv.url + "/f.bin", tmp_path / "f.bin", progress=False)  # no pinned hash: the size is checked
        with open(tmp_path / "f.bin", "r+b") as f:
            f.truncate(1000)
        download(srv.url + "/f.bin", tmp_path / "f.bin", progress=False)
        assert srv.hits["/f.bin"] == 2
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_a_whole_copy_is_used_without_the_lock(tmp_path, monkeypatch):
    """A finished copy in a read-only folder (an air-gapped bundle) needs no lock file there."""
    import spamjob.fetch as fetch

    (tmp_path / "f.bin").write_bytes(BODY)

    def no_lock(*args, **kwargs):
        raise AssertionError("took the lock")

    monkeypatch.setattr(fetch, "locked", no_lock)
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    assert download("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", sha256=SHA).read_bytes() == BODY
    assert list(tmp_path.iterdir()) == [tmp_path / "f.bin"]


def test_a_damaged_copy_is_fetched_again_with_a_note_and_offline_is_one_line(tmp_path, capsys, monkeypatch):
    """A copy whose bytes (not its size) changed since it was fetched: its recorded sha256, or its
    pinned one, no longer matches; it is fetched again once with a `note:` line; offline, one error."""
    with Server({"/f.bin": BODY}) as srv:
        for sha in (None, SHA):
            dest = tmp_path / f"pinned-{sha is not None}.bin"
            download(srv.url + "/f.bin", dest, sha256=sha, progress=False)
            flip_byte(dest)
            capsys.readouterr()
            download(srv.url + "/f.bin", dest, sha256=sha, progress=False)
            assert dest.read_bytes() == BODY
            assert f"note: {dest} is damaged (sha256 " in capsys.readouterr().out
        assert srv.hits["/f.bin"] == 4
    flip_byte(dest)
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    with pytest.raises(SpamjobError, match=r"^offline .* and .*pinned-True.bin is damaged \(sha256 .*its pinned"):
        download("http://127.0.0.1:9/f.bin", dest, sha256=SHA, progress=False)
