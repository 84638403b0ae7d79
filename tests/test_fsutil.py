"""spamjob.fsutil: files are complete or absent."""

from __future__ import annotations

import os

import pytest

from spamjob.errors import SpamjobError
from spamjob.fsutil import atomic_path, read_json, sha256_file, write_json


def test_atomic_path_renames_only_on_success(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    with atomic_path(dest) as tmp:
        tmp.write_text("done")
        assert not dest.exists()  # invisible while being written
    assert dest.read_text() == "done" and oct(dest.stat().st_mode & 0o777) != oct(0o600)
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert dest.read_text() == "done" and os.listdir(dest.parent) == ["out.txt"]


def test_json_round_trip_and_errors(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}
    assert len(sha256_file(tmp_path / "a.json")) == 64
    with pytest.raises(SpamjobError, match="not found"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpamjobError, match="is not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_locked_is_exclusive_between_processes(tmp_path):
    import subprocess
    import sys

    from spamjob.fsutil import locked

    code = "import sys; from spamjob.fsutil import locked\nwith locked(sys.argv[1], wait=False) as got: print(got)"
    with locked(tmp_path / "u.lock") as held:
        assert held
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "u.lock")], capture_output=True, text=True)
        assert other.stdout.strip() == "False"
    after = subprocess.run([sys.executable, "-c", code, str(tmp_path / "u.lock")], capture_output=True, text=True)
    assert after.stdout.strip() == "True"


def test_a_lock_removed_as_it_is_released_stays_exclusive(tmp_path):
    """Processes taking a lock that each holder deletes on release never hold it together (a
    waiter on the deleted file notices and takes the new one)."""
    import subprocess
    import sys

    code = (
        "import sys, time; from spamjob.fsutil import locked\n"
        "for _ in range(30):\n"
        "    with locked(sys.argv[1], remove=True):\n"
        "        with open(sys.argv[2], 'a') as f: f.write('(')\n"
        "        time.sleep(0.002)\n"
        "        with open(sys.argv[2], 'a') as f: f.write(')')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d" / "f.lock"), str(tmp_path / "log")])
        for _ in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert (tmp_path / "log").read_text() == "()" * 120 and not (tmp_path / "d" / "f.lock").exists()
