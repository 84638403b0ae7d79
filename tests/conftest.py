"""Hermetic test environment: tokenizer and data from ../shared, caches in a temp dir, no network."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from support import SHARED  # noqa: E402

_tmp = Path(tempfile.mkdtemp(prefix="spamjob-tests-"))
os.environ.update(
    {
        "TIKTOKEN_CACHE_DIR": str(SHARED / "tiktoken-cache"),
        "SPAMJOB_TOKENIZER": str(SHARED / "gpt2-tokenizer"),
        "SPAMJOB_CACHE": str(_tmp / "spamjob-cache"),
        "HF_HOME": str(_tmp / "hf-home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # any accidental Hub call fails at once
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
for var in ("SPAMJOB_OFFLINE", "HF_HUB_OFFLINE"):
    os.environ.pop(var, None)

import pytest  # noqa: E402

SMS = SHARED / "data" / "SMSSpamCollection"


@pytest.fixture(scope="session")
def sms_path() -> Path:
    """The real UCI SMSSpamCollection from ../shared (CI always has it)."""
    assert SMS.is_file(), f"tests need {SMS}: ../shared must sit beside the repository"
    return SMS


@pytest.fixture(scope="session")
def data_dir(sms_path, tmp_path_factory) -> Path:
    """Reference splits prepared once per session."""
    from spamjob.data import prepare

    out = tmp_path_factory.mktemp("data")
    prepare(sms_path, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer():
    from spamjob.text import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def classifier_dir(data_dir, tmp_path_factory) -> Path:
    """A tiny classifier trained for one epoch on the reference splits (shared by scoring tests)."""
    from spamjob.config import TrainConfig
    from spamjob.train import main

    out = tmp_path_factory.mktemp("clf") / "run"
    main(TrainConfig(data=str(data_dir), out=str(out), weights="random", n_layers=2, emb_dim=32, n_heads=2, epochs=1))
    return out


def pytest_collection_modifyitems(config, items):
    """Inside the new-user check's own run of the suite, leave that check out (no recursion)."""
    if os.environ.get("SPAMJOB_NEW_USER_NESTED") == "1":
        keep = [i for i in items if "test_new_user" not in i.nodeid]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
