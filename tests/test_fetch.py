"""spamjob.fetch against a local HTTP server: progress, checksum, interruption, reuse, errors."""

from __future__ import annotations

import hashlib
import os

import pytest
from support import Server

from spamjob.errors import SpamjobError
from spamjob.fetch import download

BODY = os.urandom(3 * (1 << 20) + 123)  # several read chunks
SHA = hashlib.sha256(BODY).hexdigest()


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
