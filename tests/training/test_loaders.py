"""spamjob.training.loaders: the prefix cache's packing, the reference's loaders, evaluation sums."""

from __future__ import annotations

import contextlib

import torch

from spamjob.config import GPTConfig
from spamjob.model import GPTModel
from spamjob.training.loaders import PrefixCache, RankSlice, make_loader

IDS = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15], [16, 17, 18, 19], [20], [21, 22, 23], [24, 25]]


def rank_slice(ids=IDS) -> RankSlice:
    return RankSlice("train", ids, torch.tensor([i % 2 for i in range(len(ids))]), n_total=len(ids), truncated_total=0)


def tiny_gpt() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(GPTConfig(context_length=16, emb_dim=8, n_heads=2, n_layers=3)).eval()


def test_prefix_cache_holds_each_example_as_if_run_alone():
    gpt, widths = tiny_gpt(), [len(s) for s in IDS]
    cache = PrefixCache.build(gpt, IDS, widths, 2, torch.device("cpu"), contextlib.nullcontext, batch_tokens=6)
    assert cache.rows.shape == (sum(widths), 8) and cache.megabytes == sum(widths) * 8 * 4 / 2**20
    with torch.no_grad():
        for i, ids in enumerate(IDS):
            x = gpt.embed(torch.tensor([ids]))
            for block in gpt.transformer_blocks[:2]:
                x = block(x)
            got = cache.rows[cache.offsets[i] : cache.offsets[i] + widths[i]]
            torch.testing.assert_close(got, x[0], atol=1e-6, rtol=0)
    one_batch = PrefixCache.build(gpt, IDS, widths, 2, torch.device("cpu"), contextlib.nullcontext, batch_tokens=10**6)
    torch.testing.assert_close(one_batch.rows, cache.rows, atol=1e-6, rtol=0)


def test_gather_pads_by_repeating_the_last_row():
    rows = torch.arange(6.0)[:, None].repeat(1, 2)  # example 0: rows 0-2, example 1: rows 3-4, example 2: row 5
    cache = PrefixCache(rows, torch.tensor([3, 2, 1]), start=1)
    got = cache.gather([2, 0, 1])
    assert got.shape == (3, 3, 2)
    assert got[:, :, 0].tolist() == [[5, 5, 5], [0, 1, 2], [3, 4, 4]]


def test_loaders_follow_the_reference():
    torch.manual_seed(123)
    train = list(make_loader(rank_slice(), 3, "dynamic", 4, train=True))
    torch.manual_seed(123)
    again = list(make_loader(rank_slice(), 3, "dynamic", 4, train=True))
    assert len(train) == 2  # 8 rows, batches of 3, last partial batch dropped
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(train, again))  # seeded shuffle
    evaluation = list(make_loader(rank_slice(), 3, "fixed", 4, train=False))
    assert [len(b["labels"]) for b in evaluation] == [3, 3, 2]  # every row, in order
    assert evaluation[0]["input_ids"].tolist() == [[5, 6, 7, 50256], [8] + [50256] * 3, [9, 10, 11, 12]]
    assert evaluation[0]["lengths"].tolist() == [3, 1, 4] and evaluation[0]["labels"].tolist() == [0, 1, 0]
    dynamic = next(iter(make_loader(rank_slice(), 2, "dynamic", 4, train=False)))
    assert dynamic["input_ids"].shape == (2, 3)  # padded to the batch's longest row only
    assert len(list(make_loader(rank_slice(), 2, "dynamic", 4, train=True, n_rows=5))) == 2


def test_cached_loader_hands_out_activations():
    s = rank_slice(IDS[:3])
    s.cache = PrefixCache(torch.randn(9, 4), torch.tensor([3, 1, 5]), start=2)
    b = next(iter(make_loader(s, 3, "dynamic", 8, train=False)))
    assert set(b) == {"hidden", "lengths", "start", "labels"} and b["hidden"].shape == (3, 5, 4) and b["start"] == 2


class Syncs:
    """Counts the ops that make the host wait for the device (a value read back, a data-dependent shape)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        calls = self.calls = []
        watched = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func in watched:
                    calls.append(str(func))
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_a_cached_training_step_has_no_sync_point():
    """Batch from the cached loader, forward, loss, backward, fused AdamW step: nothing read back."""
    from accelerate import Accelerator

    from spamjob.model import SpamClassifier, freeze, replace_head
    from spamjob.training.job import train_step

    gpt = tiny_gpt()
    replace_head(gpt, 2, seed=1)
    freeze(gpt, "last-block")
    s = rank_slice()
    s.cache = PrefixCache.build(gpt, s.ids, [len(x) for x in s.ids], 2, torch.device("cpu"), contextlib.nullcontext)
    accelerator = Accelerator(cpu=True)
    classifier = SpamClassifier(gpt, "last-token").train()
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=1e-3, fused=True)
    classifier, optimizer = accelerator.prepare(classifier, optimizer)
    batches = iter(make_loader(s, 4, "dynamic", 16, train=True))
    train_step(classifier, optimizer, accelerator, next(batches))  # the first step creates the optimizer state
    with Syncs() as syncs:
        loss = train_step(classifier, optimizer, accelerator, next(batches))
    assert syncs.calls == []
    with Syncs() as syncs:
        loss.item()  # what the loop did twice per step before
    assert syncs.calls == ["aten._local_scalar_dense.default"]


def test_prefix_cache_can_keep_bf16_rows_at_half_the_memory():
    """On a GPU with bf16 the cache keeps what bf16 computed, in bf16 (the train loop asks for it there)."""
    gpt, widths = tiny_gpt(), [len(s) for s in IDS]
    fp32 = PrefixCache.build(gpt, IDS, widths, 2, torch.device("cpu"), contextlib.nullcontext)
    bf16 = PrefixCache.build(gpt, IDS, widths, 2, torch.device("cpu"), contextlib.nullcontext, dtype=torch.bfloat16)
    assert bf16.rows.dtype == torch.bfloat16 and bf16.megabytes == fp32.megabytes / 2
    torch.testing.assert_close(bf16.gather([2, 0]).float(), fp32.gather([2, 0]), atol=0.05, rtol=0.02)
