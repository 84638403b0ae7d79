"""The SMS dataset and the GPT-2 tokenizer files: found in a folder laid out like the spamjob
cache, else fetched into it from their public sources and verified; `bundle` adds the weights
for air-gapped machines (`spamjob download --all`).

The layout (the spamjob cache, a `spamjob download --all` bundle, a test-assets folder):

    data/SMSSpamCollection              sha256-pinned (the UCI file)
    gpt2-tokenizer/encoder.json         sha256-pinned (the hashes tiktoken pins)
    gpt2-tokenizer/vocab.bpe
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spamjob import __version__
from spamjob.config import OPENAI_NAMES, canonical_size
from spamjob.data import UCI_MEMBER, UCI_SHA256, resolve_source
from spamjob.errors import SpamjobError
from spamjob.fsutil import cache_dir, sha256_file, write_json
from spamjob.text import TOKENIZER_FILES, fetch_tokenizer
from spamjob.weights import fetch_hf, fetch_openai

DATASET = Path("data") / UCI_MEMBER
TOKENIZER = Path("gpt2-tokenizer")
FETCH_COMMAND = "spamjob download --tokenizer --data"


@dataclass(frozen=True)
class Assets:
    """Verified local copies: the extracted `SMSSpamCollection` and a folder with encoder.json + vocab.bpe."""

    dataset: Path
    tokenizer: Path


def find(root: str | os.PathLike) -> Assets | None:
    """`root`'s assets when it holds all three files, checked against their pinned sha256; else None.

    A file that is there with other content is an error, not a reason to look elsewhere.
    """
    root = Path(root)
    pinned = {root / DATASET: UCI_SHA256, **{root / TOKENIZER / n: h for n, h in TOKENIZER_FILES.items()}}
    if not all(path.is_file() for path in pinned):
        return None
    for path, expected in pinned.items():
        if (actual := sha256_file(path)) != expected:
            raise SpamjobError(f"{path} has sha256 {actual}, expected {expected}")
    return Assets(dataset=root / DATASET, tokenizer=root / TOKENIZER)


def fetch(root: str | os.PathLike | None = None, *, progress: bool = True) -> Assets:
    """Download both into `root` (default: the spamjob cache) through spamjob's own download code.

    Sources: the UCI zip ($SPAMJOB_DATA_URL, a mirror, else UCI) and OpenAI's tokenizer files
    ($SPAMJOB_TOKENIZER_URL, else OpenAI's blob store); each verified against its pinned sha256.
    Files already there and verified are not fetched again.
    """
    root = Path(root) if root is not None else cache_dir()
    tokenizer = fetch_tokenizer(root / TOKENIZER, progress=progress)
    dataset = resolve_source(None, cache=root / DATASET.parent, progress=progress)
    return Assets(dataset=dataset, tokenizer=tokenizer)


def bundle(dest: str | os.PathLike | None, size: str = "gpt2-small", source: str = "hf", progress: bool = True) -> Path:
    """Weights, tokenizer files and the dataset in one folder laid out as a spamjob cache.

    Copy the folder to an air-gapped machine and point SPAMJOB_CACHE (or `spamjob --cache`)
    at it: with `--offline` every lookup is answered from there.
    """
    root = (Path(dest) if dest is not None else cache_dir()).resolve()
    size = canonical_size(size)
    if source == "hf":
        weights = fetch_hf(size, local_dir=root / "hf" / size)
    else:
        weights = fetch_openai(size, root / "openai" / OPENAI_NAMES[size], progress=progress)
    found = fetch(root, progress=progress)
    files = [p for p in (*weights.iterdir(), *found.tokenizer.iterdir(), found.dataset) if p.is_file()]
    write_json(
        root / "bundle.json",
        {
            "spamjob_version": __version__,
            "model": size,
            "weights_source": source,
            "files": {str(p.relative_to(root)): sha256_file(p) for p in sorted(files)},
        },
    )
    return root


def download(cfg) -> str:
    """`spamjob download` (spamjob.command_config.DownloadConfig): fetch what it names; the line to print."""
    if cfg.all:
        folder = bundle(cfg.dir, cfg.model, cfg.source)
        return (
            f"ready: {folder} (weights, tokenizer, data; see {folder / 'bundle.json'}); "
            f"offline: spamjob --offline --cache {folder} run --out runs/job"
        )
    if cfg.tokenizer and cfg.data:
        found = fetch(cfg.dir)
        return f"ready: {found.dataset} and {found.tokenizer}"
    if cfg.data:
        folder = resolve_source(None, cache=cfg.dir)  # default: $SPAMJOB_CACHE/data
    elif cfg.tokenizer:
        folder = fetch_tokenizer(cfg.dir)
    elif cfg.source == "hf":
        folder = fetch_hf(cfg.model, cache=cfg.cache_dir, local_dir=cfg.dir)
    else:
        named = Path(cfg.cache_dir) / OPENAI_NAMES[canonical_size(cfg.model)] if cfg.cache_dir else None
        folder = fetch_openai(cfg.model, cfg.dir or named)
    return f"ready: {folder}"
