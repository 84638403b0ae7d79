"""spamjob.assets and the tests' own asset resolution (conftest.py) with no ../shared anywhere:
found in a folder, else fetched once from stand-in sources on 127.0.0.1, verified, cached."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import DATA_ROUTE, TOKENIZER_ROUTE, Server, asset_routes, asset_urls, locate_assets

from spamjob import assets as lib
from spamjob.errors import SpamjobError

TESTS = Path(__file__).resolve().parent
CLOSED = {
    "SPAMJOB_DATA_URL": "http://127.0.0.1:9" + DATA_ROUTE,  # nothing listens on port 9
    "SPAMJOB_TOKENIZER_URL": "http://127.0.0.1:9" + TOKENIZER_ROUTE,
}


def layout(assets: dict, root: Path) -> Path:
    """A folder laid out like ../shared (and like the spamjob cache), holding copies."""
    (root / "data").mkdir(parents=True)
    shutil.copyfile(assets["SMS"], root / "data" / "SMSSpamCollection")
    shutil.copytree(assets["SPAMJOB_TOKENIZER"], root / "gpt2-tokenizer")
    return root


def test_find_needs_every_file_and_checks_hashes(assets, tmp_path):
    root = layout(assets, tmp_path / "a")
    found = lib.find(root)
    assert found == lib.Assets(dataset=root / "data" / "SMSSpamCollection", tokenizer=root / "gpt2-tokenizer")
    (root / "gpt2-tokenizer" / "vocab.bpe").unlink()
    assert lib.find(root) is None
    assert lib.find(tmp_path / "nothing") is None
    root = layout(assets, tmp_path / "b")
    with open(root / "data" / "SMSSpamCollection", "ab") as f:
        f.write(b"ham\textra line\n")
    with pytest.raises(SpamjobError, match=r"SMSSpamCollection has sha256 [0-9a-f]{64}, expected 7d039a24"):
        lib.find(root)


def test_locate_order_then_fetch_once_then_cache(assets, tmp_path, monkeypatch):
    first, cache = layout(assets, tmp_path / "first"), tmp_path / "cache"
    assert locate_assets([None, tmp_path / "missing", first], cache=cache).dataset.parent.parent == first
    with Server(asset_routes(assets)) as srv:
        for k, v in asset_urls(srv).items():
            monkeypatch.setenv(k, v)
        fetched = locate_assets([tmp_path / "missing"], cache=cache, progress=False)
        assert locate_assets([], cache=cache, progress=False) == fetched  # the cache answers
        assert srv.hits == {DATA_ROUTE: 1, f"{TOKENIZER_ROUTE}/encoder.json": 1, f"{TOKENIZER_ROUTE}/vocab.bpe": 1}
    assert fetched == lib.find(cache)


def test_locate_without_network_names_the_fetch_command(tmp_path, monkeypatch):
    for k, v in CLOSED.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SpamjobError) as e:
        locate_assets([tmp_path / "a"], cache=tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "run `spamjob download --tokenizer --data` where there is network" in msg
    assert str(tmp_path / "a") in msg and str(tmp_path / "cache") in msg


def _checkout(root: Path) -> Path:
    """A checkout holding the real tests/conftest.py (and support.py) and two tests, with no ../shared beside it."""
    tests = root / "checkout" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", tests)
    shutil.copy(TESTS / "support.py", tests)
    (tests / "test_uses_assets.py").write_text(
        "def test_it(sms_path, tokenizer):\n"
        "    assert sms_path.stat().st_size == 477907 and tokenizer.encode_ordinary('hello world') == [31373, 995]\n"
    )
    (tests / "test_plain.py").write_text("def test_it():\n    assert 1 + 1 == 2\n")
    assert not (root / "shared").exists()
    return tests


def _pytest(tests: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SPAMJOB_", "TIKTOKEN_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tests)],
        cwd=tests.parent,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_conftest_without_shared_fetches_once_then_uses_the_cache(assets, tmp_path):
    tests = _checkout(tmp_path)
    user = {"SPAMJOB_CACHE": str(tmp_path / "user-cache")}
    with Server(asset_routes(assets)) as srv:
        first = _pytest(tests, {**user, **asset_urls(srv)})
        assert first.returncode == 0, first.stdout + first.stderr
        assert srv.hits == {DATA_ROUTE: 1, f"{TOKENIZER_ROUTE}/encoder.json": 1, f"{TOKENIZER_ROUTE}/vocab.bpe": 1}
        again = _pytest(tests, {**user, **asset_urls(srv)})
        assert again.returncode == 0 and "2 passed" in again.stdout
        assert sum(srv.hits.values()) == 3  # no request the second time
    assert lib.find(tmp_path / "user-cache") is not None


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_conftest_with_nothing_and_no_network_stops_at_collection(assets, tmp_path):
    tests = _checkout(tmp_path)
    env = {"SPAMJOB_CACHE": str(tmp_path / "empty-cache"), **CLOSED}
    r = _pytest(tests, env)
    assert r.returncode != 0 and "passed" not in r.stdout and "Traceback" not in r.stdout + r.stderr
    said = [line for line in (r.stdout + r.stderr).splitlines() if "spamjob download --tokenizer --data" in line]
    assert len(said) == 1 and "test assets:" in said[0]
    plain = _pytest(tests, env, "-k", "plain")  # tests that need no assets do not wait for them
    assert plain.returncode == 0 and "1 passed" in plain.stdout
    # A folder laid out like ../shared, named by SPAMJOB_TEST_ASSETS, is used as it is.
    given = _pytest(tests, {**env, "SPAMJOB_TEST_ASSETS": str(layout(assets, tmp_path / "given"))})
    assert given.returncode == 0 and "2 passed" in given.stdout
    assert not [p for p in (tmp_path / "empty-cache").rglob("*") if p.is_file()]  # nothing half-fetched


def test_download_command_fetches_the_test_assets(assets, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from spamjob.cli import cli

    with Server(asset_routes(assets)) as srv:
        for k, v in asset_urls(srv).items():
            monkeypatch.setenv(k, v)
        both = CliRunner().invoke(cli, ["download", "--tokenizer", "--data", "--dir", str(tmp_path / "both")])
        monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
        data = CliRunner().invoke(cli, ["download", "--data"])
    assert both.exit_code == 0 and data.exit_code == 0, both.output + data.output
    assert lib.find(tmp_path / "both") is not None  # the layout SPAMJOB_TEST_ASSETS and the cache use
    assert f"ready: {tmp_path / 'cache' / 'data' / 'SMSSpamCollection'}\n" in data.output  # after the bar
    assert lib.find(tmp_path / "cache") is None and (tmp_path / "cache" / "data" / "SMSSpamCollection").is_file()
