"""A newcomer's path, for real: clone into a folder with no ../shared beside it, a fresh virtual
environment, the README's install and test commands, then the main job offline.

The network is a stand-in server for UCI (the dataset zip) and OpenAI's blob store (the
tokenizer files): the clone's test run finds no assets anywhere, fetches them once into its
spamjob cache through spamjob's own download code, and the offline main job then reads that
cache. Package registries are the only other network the install uses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import DATA_ROUTE, TOKENIZER_ROUTE, Server, asset_routes, asset_urls

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(re.escape(marker) + r"\n```bash\n(.*?)```", text, flags=re.S)
    assert m, f"README.md has no bash block after {marker}"
    return m.group(1).strip()


def _sh(cmd: str, cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"`{cmd}` failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_clone_install_test_and_run_the_main_job(assets, tmp_path):
    clone = tmp_path / "spamjob"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert not (clone.parent / "shared").exists()
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    venv_bin = tmp_path / "venv" / "bin"
    cache = tmp_path / "spamjob-cache"  # the newcomer's spamjob cache: empty
    hidden = ("VIRTUAL_ENV", "PYTHON", "SPAMJOB_", "TIKTOKEN_", "HF_")  # nothing of this test session leaks in
    env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
    env.update(
        {
            "PATH": f"{venv_bin}:{env['PATH']}",
            "VIRTUAL_ENV": str(tmp_path / "venv"),
            "SPAMJOB_CACHE": str(cache),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
    )

    _sh(_block("<!-- doc-test: install -->"), clone, env, timeout=1500)
    assert Path(_sh("command -v spamjob", clone, env, 60).stdout.strip()).parent == venv_bin
    with Server(asset_routes(assets)) as srv:
        tests = _sh(_block("<!-- test-command -->"), clone, {**env, **asset_urls(srv)}, timeout=1500)
        fetched = dict(srv.hits)
    assert re.search(r"\d+ passed", tests.stdout) and " failed" not in tests.stdout
    # Fetched once into the spamjob cache, from the stand-in sources.
    assert fetched == {DATA_ROUTE: 1, f"{TOKENIZER_ROUTE}/encoder.json": 1, f"{TOKENIZER_ROUTE}/vocab.bpe": 1}
    assert (cache / "data" / "SMSSpamCollection").is_file() and (cache / "gpt2-tokenizer" / "vocab.bpe").is_file()

    # The main job, offline (no server now): the dataset and tokenizer the tests fetched, tiny random weights.
    job = tmp_path / "job"
    _sh(
        f"spamjob --offline run --out {job} --train-args '--weights random --n-layers 2 --emb-dim 32 "
        "--n-heads 2 --epochs 1'",
        clone,
        env,
        timeout=600,
    )
    report = json.loads((job / "scored" / "report.json").read_text())
    assert report["rows"]["read"] == 300 and report["accuracy"] is not None
    assert (job / "scored" / "report.md").exists() and (job / "model" / "model.safetensors").exists()
