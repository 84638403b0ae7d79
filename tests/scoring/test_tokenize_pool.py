"""spamjob.scoring.tokenize_pool: scoring's tokenizer processes give the plain loop's ids and never import torch."""

from __future__ import annotations

import pytest

from spamjob.artifact import load_classifier
from spamjob.scoring.tokenize_pool import TokenizerPool
from spamjob.text import encode

TEXTS = ["free entry to win a car", "", "ok see you", "URGENT! call now " * 20, "hi <|endoftext|>", "yes"] * 7


@pytest.fixture(scope="module")
def clf(classifier_dir):
    return load_classifier(classifier_dir)


def as_lists(tokens) -> list[list[int]]:
    return [tokens.row(i).tolist() for i in range(len(tokens))]


def test_tokenizer_pool_equals_the_plain_loop(clf, classifier_dir):
    texts = [f"message {i} " + TEXTS[i % len(TEXTS)] for i in range(5000)]
    plain = TokenizerPool(clf.tokenizer, classifier_dir / "tokenizer", workers=0)
    pooled = TokenizerPool(clf.tokenizer, classifier_dir / "tokenizer", workers=2)
    try:
        assert as_lists(pooled(texts)) == as_lists(plain(texts)) == encode(clf.tokenizer, texts)
        assert as_lists(pooled(texts[:10])) == as_lists(plain(texts[:10]))  # small windows stay in this thread
    finally:
        pooled.close()


def test_tokenizer_processes_never_import_torch(classifier_dir):
    """A worker imports the tokenizer and numpy only (torch: ~2 s and ~230 MB per process)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from spamjob.scoring.tokenize_pool import _worker_init

    with cf.ProcessPoolExecutor(
        1, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(str(classifier_dir / "tokenizer"),)
    ) as pool:
        # a builtin, so that the worker imports nothing of this test module (which imports torch)
        loaded = pool.submit(eval, "list(__import__('sys').modules)").result()
    assert "tiktoken" in loaded and "spamjob.scoring.tokenize_pool" in loaded and "torch" not in loaded


def test_a_process_that_cannot_start_or_dies_is_one_line(clf, tmp_path):
    """A tokenizer that cannot load (a folder without its files) or a process killed mid-job: one
    SpamjobError saying why, never concurrent.futures' BrokenProcessPool."""
    import os
    import signal

    from spamjob.errors import SpamjobError
    from spamjob.scoring.tokenize_pool import SMALL

    texts = ["a message"] * SMALL
    (tmp_path / "empty").mkdir()
    pool = TokenizerPool(clf.tokenizer, tmp_path / "empty", workers=1)
    try:
        with pytest.raises(SpamjobError, match=r"a tokenizer process could not load .*empty: tokenizer folder"):
            pool(texts)
    finally:
        pool.close()
    pool = TokenizerPool(clf.tokenizer, None, workers=1)
    try:
        assert len(pool(texts)) == SMALL
        for process in pool.pool._processes.values():
            os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(SpamjobError, match=r"a tokenizer process died \(killed.*--tokenize-workers 0"):
            pool(texts)
    finally:
        pool.close()
