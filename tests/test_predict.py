"""spamjob.predict: token-budgeted batches with input order restored, the prefetch thread, the tokenizer pool."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from spamjob.artifact import load_classifier
from spamjob.predict import Predictor, TokenizerPool, prefetch
from spamjob.text import encode

TEXTS = ["free entry to win a car", "", "ok see you", "URGENT! call now " * 20, "hi <|endoftext|>", "yes"] * 7


@pytest.fixture(scope="module")
def clf(classifier_dir):
    return load_classifier(classifier_dir)


@pytest.mark.parametrize("batch_tokens", [1, 37, 1024, 10**6])
def test_predictor_matches_one_at_a_time_in_input_order(clf, batch_tokens):
    ids = encode(clf.tokenizer, TEXTS)
    got = Predictor(clf, torch.device("cpu"), "no", batch_tokens)(ids)
    alone = [clf.spam_probability([t])[0][0] for t in TEXTS]
    np.testing.assert_allclose(got, alone, atol=1e-6, rtol=0)
    assert Predictor(clf, torch.device("cpu"), "no", 64)([]).shape == (0,)


def test_prefetch_runs_ahead_keeps_order_and_reraises():
    seen = []

    def items():
        for i in range(5):
            seen.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert seen == [0, 1, 2, 3]  # one handed out, two queued, one waiting to be queued
    assert list(it) == [1, 2, 3, 4]

    def failing():
        yield 1
        raise ValueError("bad block")

    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad block"):
        next(it)


def test_prefetch_thread_stops_when_the_consumer_does():
    before = threading.active_count()
    it = prefetch(iter(range(1000)), depth=1)
    assert next(it) == 0
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_tokenizer_pool_equals_the_plain_loop(clf, classifier_dir):
    texts = [f"message {i} " + TEXTS[i % len(TEXTS)] for i in range(5000)]
    plain = TokenizerPool(clf.tokenizer, classifier_dir / "tokenizer", workers=0)
    pooled = TokenizerPool(clf.tokenizer, classifier_dir / "tokenizer", workers=2)
    try:
        assert pooled(texts) == plain(texts) == encode(clf.tokenizer, texts)
        assert pooled(texts[:10]) == plain(texts[:10])  # small windows stay in the calling thread
    finally:
        pooled.close()
