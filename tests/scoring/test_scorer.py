"""spamjob.scorer: the engine-neutral scoring core (Arrow table in, table + four columns out)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from spamjob.errors import SpamjobError
from spamjob.scorer import BatchScorer
from spamjob.scoring.runtimes.pytorch import spam_probability

TEXTS = [
    "WINNER!! claim your free prize now",
    None,
    "   ",
    "see you at lunch",
    "hi <|endoftext|> there",
    "call me " * 80,
]


@pytest.fixture(scope="module")
def scorer(classifier_dir):
    s = BatchScorer(classifier_dir, device="cpu")
    yield s
    s.close()


def test_score_table_adds_the_four_columns(scorer):
    table = pa.table({"id": list(range(6)), "text": TEXTS})
    out = scorer.score_table(table)
    assert out.column_names == ["id", "text", "prediction", "spam_probability", "truncated", "error"]
    assert out.column("id").to_pylist() == list(range(6))  # rows stay in input order
    assert out.column("error").to_pylist() == [None, "null text", "empty text", None, None, None]
    assert out.column("truncated").to_pylist() == [False, False, False, False, False, True]
    probs = out.column("spam_probability").to_pylist()
    assert [p is None for p in probs] == [False, True, True, False, False, False]
    labels = out.column("prediction").to_pylist()
    assert labels[1] is None and labels[2] is None
    t = scorer.threshold
    assert t == scorer.classifier.config["operating_point"]["threshold"]  # chosen in training (rule f1)
    assert all(label == ("spam" if p > t else "ham") for label, p in zip(labels, probs) if p is not None)
    scored = [t for t in TEXTS if t and t.strip()]
    alone, _ = spam_probability(scorer.classifier, scored)
    np.testing.assert_allclose([p for p in probs if p is not None], alone, atol=1e-6, rtol=0)


def test_batch_independent_and_record_batches(scorer):
    table = pa.table({"message": TEXTS * 3})
    whole = scorer.score_table(table).column("spam_probability").to_pylist()
    parts = [scorer.score_table(b).column("spam_probability").to_pylist() for b in table.to_batches(max_chunksize=4)]
    np.testing.assert_allclose(np.array(sum(parts, []), dtype=float), np.array(whole, dtype=float), atol=1e-6)


def test_bytes_that_are_not_utf8_are_flagged(scorer):
    table = pa.table({"body": pa.array([b"free entry now", b"caf\xe9 \xff", None], type=pa.binary())})
    out = scorer.score_table(table, text_column="body")
    assert out.column("error").to_pylist() == [None, "invalid UTF-8 in text", "null text"]
    assert out.column("body").to_pylist() == [b"free entry now", b"caf\xe9 \xff", None]  # kept as it was


def test_bad_tables_are_one_line_errors(scorer):
    with pytest.raises(SpamjobError, match="no text column"):
        scorer.score_table(pa.table({"body": ["x"]}))
    with pytest.raises(SpamjobError, match="no text column 'msg'"):
        scorer.score_table(pa.table({"text": ["x"]}), text_column="msg")
    with pytest.raises(SpamjobError, match="prediction would collide with the output"):
        scorer.score_table(pa.table({"text": ["x"], "prediction": ["ham"]}))
    assert scorer.score_table(pa.table({"text": pa.array([], type=pa.string())})).num_rows == 0


def test_int8_keeps_an_fp32_reference(classifier_dir):
    s = BatchScorer(classifier_dir, device="cpu", quantize="int8")
    assert s.reference is not None and s.predictor.model is not s.reference.model
    out = s.score_table(pa.table({"text": ["free prize", "hello"]}))
    assert out.column("spam_probability").null_count == 0


def test_a_repeated_text_is_tokenized_and_scored_once(classifier_dir):
    """Duplicates within a window (exact match after decoding, bytes or text alike): one token row
    each, every row present with its text's probability; as each row scored on its own. A later
    window runs none of the texts the scorer has seen."""
    base = ["WINNER!! claim your prize", "see you at lunch", "call me " * 80, "ok"]
    texts = [base[i % 4] for i in (0, 1, 0, 2, 0, 3, 1, 2)] + [None, "  "]
    scorer = BatchScorer(classifier_dir, device="cpu")
    window = scorer.prepare(pa.array(texts))
    assert len(window.ids) == 4 and window.repeats.rows_of.tolist() == [0, 1, 0, 2, 0, 3, 1, 2]
    as_bytes = scorer.prepare(pa.array([t.encode() if t else t for t in texts], pa.binary()))
    assert as_bytes.repeats.rows_of.tolist() == window.repeats.rows_of.tolist()
    got = scorer.score_table(pa.table({"text": texts}))
    again = scorer.prepare(pa.array(texts))
    assert len(again.ids) == 0 and scorer.score_table(pa.table({"text": texts}), window=again).equals(got)
    each = BatchScorer(classifier_dir, device="cpu", dedup=False)
    try:
        alone = each.score_table(pa.table({"text": texts}))
        assert len(each.prepare(pa.array(texts)).ids) == 8
    finally:
        each.close(), scorer.close()
    p, q = got.column("spam_probability").to_pylist(), alone.column("spam_probability").to_pylist()
    assert p[0] == p[2] == p[4] and p[1] == p[6] and p[3] == p[7] and p[8] is None and p[9] is None
    np.testing.assert_allclose(p[:8], q[:8], atol=1e-6, rtol=0)
    assert got.column("truncated").to_pylist() == alone.column("truncated").to_pylist()
    assert got.column("prediction").to_pylist() == alone.column("prediction").to_pylist()
    assert got.column("error").to_pylist() == alone.column("error").to_pylist()
