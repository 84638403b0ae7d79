"""A newcomer's path, for real: clone, fresh virtual environment, the README's install and
test commands, then the main job offline with the shared dataset and tiny random weights.

The test command run inside the clone collects this module too; there it is deselected
(conftest.py, SPAMJOB_NEW_USER_NESTED) so the check does not recurse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from support import SHARED

REPO = Path(__file__).resolve().parents[1]


def _block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(re.escape(marker) + r"\n```bash\n(.*?)```", text, flags=re.S)
    assert m, f"README.md has no bash block after {marker}"
    return m.group(1).strip()


def _sh(cmd: str, cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"`{cmd}` failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_clone_install_test_and_run_the_main_job(tmp_path):
    (tmp_path / "shared").symlink_to(SHARED)  # ../shared beside the clone, as in CI
    clone = tmp_path / "spamjob"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    venv_bin = tmp_path / "venv" / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update({"PATH": f"{venv_bin}:{env['PATH']}", "VIRTUAL_ENV": str(tmp_path / "venv"),
                "SPAMJOB_NEW_USER_NESTED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})

    _sh(_block("<!-- doc-test: install -->"), clone, env, timeout=1500)
    assert Path(_sh("command -v spamjob", clone, env, 60).stdout.strip()).parent == venv_bin
    tests = _sh(_block("<!-- test-command -->"), clone, env, timeout=1500)
    assert re.search(r"\d+ passed", tests.stdout) and " failed" not in tests.stdout

    # The main job, offline: the shared dataset, tiny random weights, the shared tokenizer.
    job = tmp_path / "job"
    _sh(f"spamjob --offline run --out {job} --source ../shared/data/SMSSpamCollection "
        "--train-args '--weights random --n-layers 2 --emb-dim 32 --n-heads 2 --epochs 1'",
        clone, {**env, "SPAMJOB_TOKENIZER": str(SHARED / "gpt2-tokenizer")}, timeout=600)
    report = json.loads((job / "scored" / "report.json").read_text())
    assert report["rows"]["read"] == 300 and report["accuracy"] is not None
    assert (job / "scored" / "report.md").exists() and (job / "model" / "model.safetensors").exists()
