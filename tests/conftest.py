"""Hermetic test environment: caches in a temp dir, no Hub, and the dataset + tokenizer files
resolved once, like the product resolves them.

Assets (the SMS Spam Collection and the GPT-2 tokenizer files) come from the first of
$SPAMJOB_TEST_ASSETS (a folder laid out like ../shared), ../shared beside the repository, and
your spamjob cache; when none has them they are fetched once into that cache, verified
(`spamjob.assets`). Only tests that use the `assets` fixture (directly or through `sms_path`,
`data_dir`, `tokenizer`, ...) wait for them, and only those see them: every other test runs
with no tokenizer configured, so a test that needs one and does not say so fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).parent))

from spamjob.errors import SpamjobError  # noqa: E402
from spamjob.fsutil import cache_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
USER_CACHE = cache_dir()  # read before the tests point SPAMJOB_CACHE at a temp dir
ASSET_FOLDERS = (os.environ.get("SPAMJOB_TEST_ASSETS"), REPO.parent / "shared")
ASSET_VARS = ("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR")
# Where the assets are fetched from (a mirror the user set, else the public sources); only the
# asset resolution sees these: no test reaches a real source by accident.
SOURCE_VARS = {k: os.environ.pop(k) for k in ("SPAMJOB_DATA_URL", "SPAMJOB_TOKENIZER_URL") if k in os.environ}

_tmp = Path(tempfile.mkdtemp(prefix="spamjob-tests-"))
os.environ.update(
    {
        "SPAMJOB_CACHE": str(_tmp / "spamjob-cache"),
        "HF_HOME": str(_tmp / "hf-home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # any accidental Hub call fails at once
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TOKENIZERS_PARALLELISM": "false",
        # One CPU for every test whatever runs them: no bf16 matrix unit, so `auto` is fp32 here as
        # on most CPUs (tests of the other path set their own, spamjob.hardware).
        "SPAMJOB_CPU_FEATURES": "avx2",
    }
)
for var in ("SPAMJOB_OFFLINE", "HF_HUB_OFFLINE", *ASSET_VARS):
    os.environ.pop(var, None)

import pytest  # noqa: E402

_resolved: dict[str, str] = {}


def _asset_env():
    """SPAMJOB_TOKENIZER and a seeded TIKTOKEN_CACHE_DIR for the located assets (located once)."""
    if not _resolved:
        from support import locate_assets

        from spamjob.text import tiktoken_cache_names

        with mock.patch.dict(os.environ, SOURCE_VARS):
            found = locate_assets(ASSET_FOLDERS, cache=USER_CACHE)
        tiktoken_cache = _tmp / "tiktoken-cache"  # tiktoken's own `gpt2`, the independent reference
        tiktoken_cache.mkdir(exist_ok=True)
        for name, key in tiktoken_cache_names().items():
            shutil.copyfile(found.tokenizer / name, tiktoken_cache / key)
        _resolved.update(
            SMS=str(found.dataset), SPAMJOB_TOKENIZER=str(found.tokenizer), TIKTOKEN_CACHE_DIR=str(tiktoken_cache)
        )
    return _resolved


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only the tests that will run count
def pytest_collection_modifyitems(config, items):
    """Locate (or fetch) the assets at collection when a selected test needs them; stop in one line if impossible."""
    if any("assets" in item.fixturenames for item in items):
        try:
            _asset_env()
        except SpamjobError as e:
            pytest.exit(f"test assets: {e}", returncode=4)


@pytest.fixture(autouse=True)
def _assets_only_where_asked(request, monkeypatch):
    """Tests that do not ask for the assets run without them (no tokenizer path set)."""
    if "assets" not in request.fixturenames:
        for var in ASSET_VARS:
            monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Jobs run in the test process set torch's threads for the process (CPU scoring: 1 per model
    worker); later tests get the count back."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def assets() -> dict[str, str]:
    """The located assets, also exported as SPAMJOB_TOKENIZER and TIKTOKEN_CACHE_DIR for subprocesses."""
    env = _asset_env()
    os.environ.update({k: env[k] for k in ASSET_VARS})
    return env


@pytest.fixture(scope="session")
def sms_path(assets) -> Path:
    """The real UCI SMSSpamCollection (sha256-verified)."""
    return Path(assets["SMS"])


@pytest.fixture(scope="session")
def data_dir(sms_path, tmp_path_factory) -> Path:
    """Reference splits prepared once per session."""
    from spamjob.data import prepare

    out = tmp_path_factory.mktemp("data")
    prepare(sms_path, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer(assets):
    from spamjob.text import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def classifier_dir(data_dir, tmp_path_factory) -> Path:
    """A tiny classifier trained for one epoch on the reference splits (shared by scoring tests)."""
    from spamjob.config import TrainConfig
    from spamjob.training.job import main

    out = tmp_path_factory.mktemp("clf") / "run"
    main(TrainConfig(data=str(data_dir), out=str(out), weights="random", n_layers=2, emb_dim=32, n_heads=2, epochs=1))
    return out


@pytest.fixture
def machine(monkeypatch):
    """Set this process's CPU features (spamjob.hardware's override), read again: `machine("amx_bf16")`."""
    from spamjob import hardware

    def set_to(features: str) -> hardware.Cpu:
        monkeypatch.setenv(hardware.ENV, features)
        hardware.cpu.cache_clear()
        return hardware.cpu()

    yield set_to
    hardware.cpu.cache_clear()
