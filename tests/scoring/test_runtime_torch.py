"""spamjob.scoring.runtimes.pytorch and spamjob.scoring.tokenize_pool: token-budgeted batches with input
order restored, the bf16 scoring model, the tokenizer processes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spamjob.artifact import load_classifier
from spamjob.config import GPTConfig
from spamjob.scoring.runtimes.pytorch import TorchPredictor as Predictor
from spamjob.scoring.runtimes.pytorch import spam_probability
from spamjob.text import encode
from spamjob.tokens import TokenIds

TEXTS = ["free entry to win a car", "", "ok see you", "URGENT! call now " * 20, "hi <|endoftext|>", "yes"] * 7


@pytest.fixture(scope="module")
def clf(classifier_dir):
    return load_classifier(classifier_dir)


@pytest.mark.parametrize("batch_tokens", [1, 37, 1024, 10**6])
def test_predictor_matches_one_at_a_time_in_input_order(clf, batch_tokens):
    ids = encode(clf.tokenizer, TEXTS)
    got = Predictor(clf, torch.device("cpu"), "no", batch_tokens)(ids)
    alone = [spam_probability(clf, [t])[0][0] for t in TEXTS]
    np.testing.assert_allclose(got, alone, atol=1e-6, rtol=0)
    assert Predictor(clf, torch.device("cpu"), "no", 64)([]).shape == (0,)


def test_windows_launched_together_equal_one_at_a_time_on_workers(clf):
    """CPU workers take a window's batches behind the windows launched before (no wait for a
    window's last batch before the next window starts): each window still gets its own rows."""
    ids = encode(clf.tokenizer, TEXTS)
    windows = [ids[i : i + 9] for i in range(0, len(ids), 9)]
    p = Predictor(clf, torch.device("cpu"), "no", 37, workers=2)
    launched = [p.launch(w) for w in windows]
    for w, got in zip(windows, launched):
        np.testing.assert_allclose(got.result(), p(w), atol=1e-6, rtol=0)
    p.close()


def test_the_next_window_starts_while_this_one_ends(clf, monkeypatch):
    """Window A's third batch runs alone on one worker: window B's first batch takes the other."""
    import time

    spans = {}

    def forward(tokens, rows):
        start = time.monotonic()
        time.sleep(0.3)
        spans.setdefault(id(tokens), []).append((start, time.monotonic()))
        return torch.zeros(len(rows))

    p = Predictor(clf, torch.device("cpu"), "no", 1, workers=2)  # one row per batch
    monkeypatch.setattr(p, "_forward", forward)
    a, b = TokenIds.from_lists([[1, 2]] * 3), TokenIds.from_lists([[1, 2]] * 2)
    la, lb = p.launch(a), p.launch(b)
    la.result(), lb.result()
    p.close()
    assert min(s for s, _ in spans[id(b)]) < max(e for _, e in spans[id(a)])


def to_copies(model, layers_input) -> list:
    """The aten::_to_copy calls (dtype or device casts) of one forward, with their input shapes."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(*layers_input)
    return [e.input_shapes for e in prof.events() if e.name == "aten::_to_copy"]


def test_bf16_scoring_model_casts_no_weights():
    """bf16 scoring stores the model in bf16: no per-batch weight casts (autocast made ~20 per
    block); the few casts left (the pooled row to the fp32 head, scalars) do not grow with depth."""
    from spamjob.model import GPTModel, SpamClassifier, for_scoring, replace_head

    inputs = (torch.randint(0, 300, (4, 20)), torch.tensor([20, 5, 13, 1]))
    counts = {}
    for layers in (2, 6):
        gpt = GPTModel(GPTConfig(vocab_size=300, context_length=32, emb_dim=64, n_heads=2, n_layers=layers))
        replace_head(gpt, 2, seed=1)
        scoring = for_scoring(SpamClassifier(gpt, "last-token").eval(), torch.bfloat16)
        copies = to_copies(scoring, inputs)
        assert all(math.prod(s[0]) <= 4 * 64 for s in copies if s and s[0]), copies  # pooled rows, never a weight
        counts[layers] = len(copies)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = to_copies(SpamClassifier(gpt, "last-token").eval(), inputs)
        assert len(autocast) > 5 * layers  # the old way: weights re-cast every forward
    assert counts[2] == counts[6] <= 4
    assert scoring.gpt.out_head.weight.dtype == torch.float32 and scoring(*inputs).dtype == torch.float32


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A classifier that learned something (every layer, 3 epochs), so labels are not coin flips."""
    from spamjob.config import TrainConfig
    from spamjob.training.job import main

    out = tmp_path_factory.mktemp("trained") / "run"
    main(
        TrainConfig(
            data=str(data_dir),
            out=str(out),
            weights="random",
            n_layers=2,
            emb_dim=64,
            n_heads=2,
            epochs=3,
            trainable="all",
            lr=5e-4,
            eval_freq=1000,
        )
    )
    return load_classifier(out)


def test_bf16_labels_agree_with_fp32(trained, sms_path):
    import pandas as pd

    texts = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])["Text"].tolist()[:1000]
    ids = encode(trained.tokenizer, texts)
    fp32 = Predictor(trained, torch.device("cpu"), "no", 512)(ids)
    bf16 = Predictor(trained, torch.device("cpu"), "bf16", 512)(ids)
    for t in (0.5, trained.threshold):
        assert ((fp32 > t) == (bf16 > t)).mean() >= 0.995
    assert 0 < np.abs(fp32 - bf16).max() < 0.05  # bf16 did run, and stays close


def test_torch_int8_deprecation_is_one_line_and_other_warnings_pass(monkeypatch, capsys):
    """torch 2.13 warns that its quantized tensors are deprecated: the user sees spamjob's line
    (what to do instead) once, not torch's warning; any other warning still reaches them."""
    import warnings

    from spamjob.scoring.runtimes import pytorch as predictor

    def quantize_dynamic(model, *args, **kwargs):
        warnings.warn("torch.quantize_per_tensor ... are deprecated and will be removed", UserWarning, stacklevel=2)
        warnings.warn("torch.ao.quantization is deprecated and will be removed", DeprecationWarning, stacklevel=2)
        warnings.warn("something else", RuntimeWarning, stacklevel=2)
        return model

    monkeypatch.setattr(torch.ao.quantization, "quantize_dynamic", quantize_dynamic)
    with warnings.catch_warnings(record=True) as passed:
        warnings.simplefilter("always")
        predictor.dynamic_int8(torch.nn.Linear(2, 2))
    assert [str(w.message) for w in passed] == ["something else"]
    assert capsys.readouterr().out.count(predictor.INT8_DEPRECATED) == 1
