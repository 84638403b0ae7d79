"""GPT-2 tokenizer and the one encode -> truncate -> pad path shared by training and scoring."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str as GPT2_PAT  # GPT-2's pre-tokenizer regex

from spamjob.config import Padding
from spamjob.errors import SpamjobError
from spamjob.fetch import download, is_offline
from spamjob.fields import choices
from spamjob.fsutil import cache_dir, sha256_file
from spamjob.tokens import TokenIds

if TYPE_CHECKING:  # torch is imported where tensors are made, so tokenizer processes run without it
    import torch

PAD_ID = 50256  # <|endoftext|>, the reference's padding token
ENDOFTEXT = "<|endoftext|>"
# OpenAI's GPT-2 BPE files (the hashes tiktoken pins for its `gpt2` encoding).
TOKENIZER_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
TOKENIZER_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
# Hugging Face model folders carry the same two files under other names.
_HF_NAMES = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}


def tokenizer_cache() -> Path:
    """Where `spamjob download` puts encoder.json + vocab.bpe."""
    return cache_dir() / "gpt2-tokenizer"


def find_tokenizer_dir(*candidates: str | os.PathLike | None) -> Path | None:
    """First folder among candidates, $SPAMJOB_TOKENIZER and the spamjob cache that holds the BPE files."""
    for c in (*candidates, os.environ.get("SPAMJOB_TOKENIZER"), tokenizer_cache()):
        if c and _bpe_files(Path(c)) is not None:
            return Path(c)
    return None


def tokenizer_files(*search: str | os.PathLike | None) -> tuple[Path, Path] | None:
    """(encoder.json, vocab.bpe) behind the tokenizer `load_tokenizer(search=...)` would build, if on disk.

    Also finds them in tiktoken's cache, where they are named by the sha1 of their URL.
    """
    found = find_tokenizer_dir(*search)
    if found is not None:
        return _bpe_files(found)
    import tempfile

    for cache in (
        os.environ.get("TIKTOKEN_CACHE_DIR"),
        os.environ.get("DATA_GYM_CACHE_DIR"),
        os.path.join(tempfile.gettempdir(), "data-gym-cache"),
    ):
        if not cache:
            continue
        paths = [Path(cache) / key for key in tiktoken_cache_names().values()]
        if all(p.is_file() for p in paths):
            return paths[0], paths[1]
    return None


def tiktoken_cache_names() -> dict[str, str]:
    """encoder.json / vocab.bpe -> the name tiktoken's cache gives each (the sha1 of its download URL)."""
    import hashlib

    return {n: hashlib.sha1(f"{TOKENIZER_URL}/{n}".encode()).hexdigest() for n in TOKENIZER_FILES}


def _bpe_files(folder: Path) -> tuple[Path, Path] | None:
    for enc, bpe in (("encoder.json", "vocab.bpe"), (_HF_NAMES["encoder.json"], _HF_NAMES["vocab.bpe"])):
        if (folder / enc).is_file() and (folder / bpe).is_file():
            return folder / enc, folder / bpe
    return None


def load_tokenizer(
    folder: str | os.PathLike | None = None, *, search: Sequence[str | os.PathLike] = ()
) -> tiktoken.Encoding:
    """The GPT-2 tokenizer, offline where possible.

    Looks in `folder` (an error if it lacks the files), then `search` folders (e.g. a
    weights folder), $SPAMJOB_TOKENIZER, the spamjob cache; else tiktoken's own `gpt2`
    (which reads $TIKTOKEN_CACHE_DIR or downloads).
    """
    if folder is not None:
        if _bpe_files(Path(folder)) is None:
            raise SpamjobError(f"tokenizer folder {folder} lacks encoder.json + vocab.bpe (or vocab.json + merges.txt)")
        return _from_folder(Path(folder))
    found = find_tokenizer_dir(*search)
    if found is not None:
        if found == tokenizer_cache():  # the cache's copy: checked, a damaged one fetched again
            fetch_tokenizer(found, progress=False)
        return _from_folder(found)
    if is_offline() and not os.environ.get("TIKTOKEN_CACHE_DIR"):
        raise SpamjobError(
            "GPT-2 tokenizer files not found offline: set SPAMJOB_TOKENIZER to a folder with encoder.json + vocab.bpe, "
            "or fetch them with `spamjob download --tokenizer`"
        )
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken raises requests/OS/hash errors when it cannot fetch
        raise SpamjobError(
            f"cannot load the GPT-2 tokenizer ({type(e).__name__}): set SPAMJOB_TOKENIZER to a folder with "
            "encoder.json + vocab.bpe, or TIKTOKEN_CACHE_DIR, or run `spamjob download --tokenizer`"
        ) from None


def _from_folder(folder: Path) -> tiktoken.Encoding:
    """Build tiktoken's GPT-2 encoding from OpenAI's data-gym files (no network, no cache writes)."""
    enc_path, bpe_path = _bpe_files(folder)  # type: ignore[misc]
    for path, (canonical, expected) in zip((enc_path, bpe_path), TOKENIZER_FILES.items()):
        if path.name == canonical and (actual := sha256_file(path)) != expected:
            raise SpamjobError(f"{path} is not OpenAI's GPT-2 {canonical}: sha256 {actual}, expected {expected}")
    ranks = _data_gym_ranks(bpe_path.read_text(encoding="utf-8"), json.loads(enc_path.read_text(encoding="utf-8")))
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: PAD_ID},
        explicit_n_vocab=50257,
    )


def _data_gym_ranks(vocab_bpe: str, encoder: dict[str, int]) -> dict[bytes, int]:
    """GPT-2's printable-unicode byte encoding -> tiktoken's bytes -> rank table (as tiktoken.load does)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    rank_to_byte = list(printable)
    char_to_byte = {chr(b): b for b in printable}
    n = 0
    for b in range(256):
        if b not in char_to_byte.values():
            rank_to_byte.append(b)
            char_to_byte[chr(256 + n)] = b
            n += 1

    table = str.maketrans({c: chr(b) for c, b in char_to_byte.items()})

    def decode(s: str) -> bytes:
        return s.translate(table).encode("latin-1")  # chars 0-255 are exactly their byte values

    ranks = {bytes([b]): i for i, b in enumerate(rank_to_byte)}
    lines = [ln for ln in vocab_bpe.split("\n")[1:] if ln.strip()]  # line 0 is "#version: 0.2"
    for first, second in (ln.split() for ln in lines):
        ranks[decode(first) + decode(second)] = len(ranks)
    from_json = {decode(k): v for k, v in encoder.items() if k not in (ENDOFTEXT, "<|startoftext|>")}
    if ranks != from_json:
        raise SpamjobError("tokenizer files disagree: encoder.json does not match the merges in vocab.bpe")
    return ranks


def encode_flat(tokenizer: tiktoken.Encoding, texts: Sequence[str]) -> TokenIds:
    """`encode`, as flat arrays (what scoring hands from its tokenizer processes to the model)."""
    return TokenIds.from_lists(encode(tokenizer, texts))


def encode(tokenizer: tiktoken.Encoding, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text; special-token text such as `<|endoftext|>` is encoded as ordinary text.

    A plain loop: tiktoken's `encode_ordinary_batch` hands each text to a thread pool, and
    for message-sized texts that costs more than the encoding (3-4x slower measured here
    on SMS texts, with 1 or 4 threads). Parallel tokenization is scoring's process pool.
    """
    return [tokenizer.encode_ordinary(t) for t in texts]


@dataclass
class Batch:
    """Padded token ids and what padding hid: `input_ids` (B, T), `lengths` (B,), `truncated` (B,)."""

    input_ids: torch.Tensor
    lengths: torch.Tensor
    truncated: torch.Tensor


def pad_batch(
    ids: Sequence[Sequence[int]] | TokenIds, max_length: int, *, padding: str = "fixed", pad_id: int = PAD_ID
) -> Batch:
    """Truncate each sequence to `max_length` and right-pad with `pad_id`, in one vectorised step
    (a tensor assignment per row took ~15 us a row here: a ceiling near 65,000 rows/s for GPU scoring).

    `padding="fixed"` pads every row to `max_length` (the reference); `"dynamic"` pads
    only to the longest row of this batch (dynamic padding). Empty sequences keep
    length 0 and are padded like the others.
    """
    import torch  # here, not at the top: tokenizer processes import this module and never need torch

    if padding not in choices(Padding):
        raise ValueError(f"padding must be one of {choices(Padding)}, got {padding!r}")
    tokens = ids if isinstance(ids, TokenIds) else TokenIds.from_lists(ids)
    out, lengths = tokens.padded(np.arange(len(tokens)), max_length, padding, pad_id)
    return Batch(
        input_ids=torch.from_numpy(out),
        lengths=torch.from_numpy(lengths),
        truncated=torch.from_numpy(tokens.lengths > max_length),
    )


def rows_within(widths: Sequence[int], budget: int, start: int = 0) -> int:
    """Rows in the token-budgeted batch that begins at `start`: the most k with
    k x widths[start + k - 1] <= budget, at least 1. `widths` ascend, so a batch's last
    row is its widest and that product only grows with k: a binary search finds k."""
    lo, hi = 1, len(widths) - start
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid * int(widths[start + mid - 1]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fetch_tokenizer(dest: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """Download OpenAI's encoder.json + vocab.bpe (sha256-pinned) into `dest` or the spamjob cache."""
    dest = Path(dest) if dest is not None else tokenizer_cache()
    base = os.environ.get("SPAMJOB_TOKENIZER_URL", TOKENIZER_URL)
    for name, sha in TOKENIZER_FILES.items():
        download(
            f"{base.rstrip('/')}/{name}",
            dest / name,
            sha256=sha,
            progress=progress,
            fetch_hint="run `spamjob download --tokenizer` where there is network",
        )
    return dest
