"""Every command block in README.md and docs/, executed in order as a newcomer would type it.

The network is replaced by local servers: a stand-in Hub serving a tiny random GPT-2 as
`openai-community/gpt2` (with the real tokenizer files), the tokenizer files, a zip of
the real SMS Spam Collection at the dataset URL, and an S3 endpoint (moto) holding the
manual's bucket. Nothing else is changed in the commands.
The install block and the default test command are run by tests/test_new_user.py; `.ci/run`
runs both test commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from support import Server, asset_routes, asset_urls, hub_headers, tiny_hf_model, tokenizer_bytes, write_hf_dir

REPO = Path(__file__).resolve().parents[1]
# The install block and the default test command: tests/test_new_user.py; the slow command runs this module.
COVERED_ELSEWHERE = ("<!-- doc-test: install -->", "<!-- test-command -->", "<!-- test-command: slow -->")


# README.md, then the manual in its reading order (later pages use what earlier ones made).
PAGES = (
    "README.md",
    *(
        f"docs/{p}.md"
        for p in (
            "training",
            "scoring",
            "reports",
            "engines",
            "export",
            "cluster-jobs",
            "offline",
            "troubleshooting",
            "architecture",
            "extending",
        )
    ),
)


def readme_blocks() -> list[tuple[str, str]]:
    """(marker line before the block, block text) for every ```bash block of README.md and docs/."""
    blocks = []
    for page in PAGES:
        text = (REPO / page).read_text()
        for m in re.finditer(r"(?:^(<!--[^\n]*-->)\n)?```bash\n(.*?)```", text, flags=re.M | re.S):
            blocks.append((m.group(1) or "", m.group(2)))
    return blocks


def test_every_page_of_the_manual_is_read():
    """A page added to docs/ is run too: PAGES lists every Markdown file there."""
    assert sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")) == sorted(PAGES[1:])


def test_readme_blocks_are_found():
    blocks = readme_blocks()
    markers = [m for m, _ in blocks if m]
    assert markers == list(COVERED_ELSEWHERE)
    assert len(blocks) >= 10 and any("spamjob run --out runs/demo" in b for _, b in blocks)


@pytest.fixture(scope="module")
def network(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("net")
    ckpt = write_hf_dir(tiny_hf_model(seed=21, n_layer=2, n_embd=32, n_head=2, n_positions=256), root / "ckpt")
    tok = tokenizer_bytes(assets)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    files.update({"vocab.json": tok["encoder.json"], "merges.txt": tok["vocab.bpe"]})
    routes = {f"/openai-community/gpt2/resolve/main/{n}": b for n, b in files.items()}
    routes.update(asset_routes(assets))
    with Server(routes, headers=lambda p: hub_headers(p, routes) if p.startswith("/openai") else {}) as srv:
        yield srv


@pytest.fixture(scope="module")
def bucket():
    """The manual's bucket, s3://spamjob-demo, on a local S3 endpoint (moto's server)."""
    from store_servers import MotoS3

    server = MotoS3()
    server.bucket("spamjob-demo")
    yield server.env()
    server.stop()


@pytest.mark.slow
def test_every_readme_command_runs(network, bucket, tmp_path):
    sandbox = tmp_path / "work"
    sandbox.mkdir()
    for name in ("jobs", "accelerate_config.yaml", "benchmarks"):
        (sandbox / name).symlink_to(REPO / name)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR", "SPAMJOB_OFFLINE", "HF_HUB_OFFLINE")
    }
    env.update(
        {
            "HF_ENDPOINT": network.url,
            "HF_HOME": str(tmp_path / "hf"),
            "SPAMJOB_CACHE": str(tmp_path / "cache"),
            **asset_urls(network),
            **bucket,
        }
    )
    ran = 0
    for marker, block in readme_blocks():
        if marker in COVERED_ELSEWHERE:
            continue
        r = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block],
            cwd=sandbox,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, f"README block failed:\n{block}\n{r.stdout[-2000:]}\n{r.stderr[-12000:]}"
        ran += 1
    assert ran == len(readme_blocks()) - len(COVERED_ELSEWHERE)

    # What the README says these commands leave behind.
    run = json.loads((sandbox / "runs" / "demo" / "run.json").read_text())
    assert run["test_accuracy"] is not None and (sandbox / "runs" / "demo" / "scored" / "report.png").exists()
    trained = json.loads((sandbox / "runs" / "r1" / "metrics.json").read_text())
    scored = json.loads((sandbox / "scored" / "test" / "report.json").read_text())
    assert scored["accuracy"] == trained["operating_point"]["test"]["accuracy"]  # at the threshold training chose
    assert scored["labels"]["at_0.5"]["accuracy"] == trained["test"]["accuracy"]
    assert (sandbox / "exports" / "r1-onnx" / "model.int8.onnx").exists()
    assert (sandbox / "exports" / "r1-hf" / "model.safetensors").exists()
    for d in ("two-ranks", "two-ranks-b"):
        assert json.loads((sandbox / "runs" / d / "metrics.json").read_text())["num_processes"] == 2
    assert json.loads((sandbox / "runs" / "reference" / "config.json").read_text())["pooling"] == "last"
    assert (sandbox / "bundle" / "bundle.json").exists() and (sandbox / "runs" / "offline" / "run.json").exists()
    assert (sandbox / "data-parquet" / "test.parquet").exists()
    strict = json.loads((sandbox / "scored" / "r1-strict" / "report.json").read_text())
    assert strict["rows"]["scored"] == 300 and strict["accuracy"] is not None  # agreement with scored/r1
    assert "input_prediction" in strict["output"]["columns"]
