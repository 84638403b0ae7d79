"""spamjob.model: attention, sizes, head, freezing policies, pooling and generation."""

from __future__ import annotations

import pytest
import torch

from spamjob.config import MODEL_SIZES, GPTConfig, canonical_size, config_for
from spamjob.errors import SpamjobError
from spamjob.model import (
    GPTModel,
    MultiHeadAttention,
    SpamClassifier,
    classify,
    count_params,
    first_trainable_block,
    freeze,
    generate_greedy,
    pooled_positions,
    replace_head,
)

TINY = GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=3)


def explicit_attention(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """The reference's attention: scores, -inf above the diagonal, softmax, weighted sum."""
    b, t, d = x.shape
    h, hd = mha.num_heads, mha.head_dim
    q = mha.W_q(x).view(b, t, h, hd).transpose(1, 2)
    k = mha.W_k(x).view(b, t, h, hd).transpose(1, 2)
    v = mha.W_v(x).view(b, t, h, hd).transpose(1, 2)
    scores = q @ k.transpose(2, 3)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    scores.masked_fill_(mask, -torch.inf)
    w = torch.softmax(scores / hd**0.5, dim=-1)
    return mha.out_proj((w @ v).transpose(1, 2).reshape(b, t, d))


def test_sdpa_equals_explicit_masked_softmax():
    torch.manual_seed(0)
    mha = MultiHeadAttention(48, 48, num_heads=6).eval()
    x = torch.randn(3, 17, 48)
    torch.testing.assert_close(mha(x), explicit_attention(mha, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_single_query_attention_equals_full_attention_and_its_gradients(qkv_bias):
    # attend_at folds W_k into the query and W_v after the weighted sum; values and the
    # gradients of every projection must match the full attention read at `pos`.
    torch.manual_seed(0)
    full = MultiHeadAttention(48, 48, num_heads=6, qkv_bias=qkv_bias)
    fast = MultiHeadAttention(48, 48, num_heads=6, qkv_bias=qkv_bias)
    fast.load_state_dict(full.state_dict())
    x = torch.randn(4, 19, 48)
    pos = torch.tensor([0, 18, 7, 12])
    rows = torch.arange(4)
    target = torch.randn(4, 48)
    y_full = full(x)[rows, pos]
    y_fast = fast.attend_at(x, pos)
    torch.testing.assert_close(y_fast, y_full, atol=1e-5, rtol=1e-5)
    (y_full * target).sum().backward()
    (y_fast * target).sum().backward()
    for (name, p), q in zip(full.named_parameters(), fast.parameters()):
        if name == "W_k.bias":  # shifts every score of a row equally: softmax ignores it (gradient ~0)
            assert q.grad.abs().max() < 1e-5 and p.grad.abs().max() < 1e-5
            continue
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_single_query_attention_runs_wrapped_projections_through_their_forward():
    # LoRA (peft) and int8 layers replace W_k / W_v with modules whose forward is not
    # x @ weight.T + bias: attend_at must call them, not read their .weight.
    class Shifted(torch.nn.Module):
        def __init__(self, inner: torch.nn.Linear):
            super().__init__()
            self.inner, self.weight = inner, inner.weight

        def forward(self, x):
            return self.inner(x) + 0.5 * x.flip(-1)

    torch.manual_seed(0)
    mha = MultiHeadAttention(24, 24, num_heads=3)
    mha.W_k, mha.W_v = Shifted(mha.W_k), Shifted(mha.W_v)
    x, pos = torch.randn(2, 9, 24), torch.tensor([3, 8])
    torch.testing.assert_close(mha.attend_at(x, pos), mha(x)[torch.arange(2), pos], atol=1e-5, rtol=1e-5)


def test_reference_module_names():
    names = dict(GPTModel(TINY).named_parameters())
    for n in (
        "token_emb.weight",
        "pos_emb.weight",
        "transformer_blocks.0.attention.W_q.weight",
        "transformer_blocks.0.attention.W_k.bias",
        "transformer_blocks.2.attention.out_proj.weight",
        "transformer_blocks.1.ffn.layers.0.weight",
        "transformer_blocks.1.ffn.layers.2.bias",
        "transformer_blocks.0.norm1.scale",
        "transformer_blocks.0.norm2.shift",
        "final_norm.scale",
        "out_head.weight",
    ):
        assert n in names, n
    m = GPTModel(TINY)
    assert m.transformer_blocks[0].drop_shortcut.p == 0.0 and m.drop_emb.p == 0.0


def test_sizes_and_aliases():
    assert canonical_size("124M") == "gpt2-small" and canonical_size("GPT2-XL") == "gpt2-xl"
    with pytest.raises(SpamjobError, match="unknown model size"):
        canonical_size("gpt3")
    for name, (d, n, h) in MODEL_SIZES.items():
        cfg = config_for(name)
        assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads, cfg.context_length, cfg.vocab_size) == (d, n, h, 1024, 50257)
    with torch.device("meta"):
        small = GPTModel(config_for("gpt2-small"))
    # The book's 163,009,536 (untied head, no qkv bias) + 12 blocks x 3 x 768 qkv biases.
    assert count_params(small) == 163_009_536 + 12 * 3 * 768
    assert config_for("124M", n_layers=2, emb_dim=64, n_heads=2).shape() == "64 dims, 2 layers, 2 heads"


def test_config_validation_reports_every_problem():
    with pytest.raises(SpamjobError) as e:
        GPTConfig(emb_dim=0, n_layers=-1)
    assert "emb_dim" in str(e.value) and "n_layers" in str(e.value)
    with pytest.raises(SpamjobError, match="not divisible"):
        GPTConfig(emb_dim=30, n_heads=4)


def test_context_overflow_is_an_error():
    with pytest.raises(SpamjobError, match="exceeds the model's context of 32"):
        GPTModel(TINY)(torch.zeros(1, 33, dtype=torch.long))


def test_freeze_policies():
    torch.manual_seed(0)
    model = replace_head(GPTModel(TINY))
    assert model.out_head.out_features == 2 and model.out_head.bias is not None

    def trainable():
        return {
            n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("transformer_blocks") else "")
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    freeze(model, "head")
    assert trainable() == {"out_head"} and first_trainable_block(model) == 3
    freeze(model, "last-block")
    assert trainable() == {"out_head", "final_norm", "transformer_blocks.2"} and first_trainable_block(model) == 2
    freeze(model, "last-two-blocks")
    assert trainable() == {"out_head", "final_norm", "transformer_blocks.1", "transformer_blocks.2"}
    assert first_trainable_block(model) == 1
    freeze(model, "all")
    assert all(p.requires_grad for p in model.parameters()) and first_trainable_block(model) == -1
    with pytest.raises(SpamjobError, match="unknown trainable policy"):
        freeze(model, "some")


def test_replace_head_is_seeded():
    a = replace_head(GPTModel(TINY), seed=123).out_head.weight
    b = replace_head(GPTModel(TINY), seed=123).out_head.weight
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pooling_and_padding_invariance():
    torch.manual_seed(0)
    model = replace_head(GPTModel(TINY)).eval()
    ids = torch.randint(0, 50000, (1, 7))
    lengths = torch.tensor([7])
    padded = torch.cat([ids, torch.full((1, 9), 50256)], dim=1)
    with torch.no_grad():
        short = classify(model, ids, lengths, "last-token")
        long = classify(model, padded, lengths, "last-token")
        torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)  # padding cannot change it
        full = model(padded)
        torch.testing.assert_close(classify(model, padded, lengths, "last"), full[:, -1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(long, full[:, 6], atol=1e-6, rtol=1e-6)
    assert pooled_positions(torch.tensor([2, 0]), 4, "last-token").tolist() == [1, 0]  # an empty row: position 0
    assert pooled_positions(torch.tensor([2, 0]), 4, "last").tolist() == [3, 3]
    with pytest.raises(ValueError):
        pooled_positions(torch.tensor([2]), 4, "mean")


def test_generate_greedy_crops_to_context():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    out = generate_greedy(model, torch.randint(0, 50000, (2, 30)), max_new_tokens=5)
    assert out.shape == (2, 35)
    with torch.no_grad():  # each new token is the argmax over the last `context` tokens
        nxt = model(out[:, 34 - 32 : 34])[:, -1].argmax(-1)
    assert out[:, 34].tolist() == nxt.tolist()


@pytest.mark.parametrize("pooling", ["last-token", "last"])
def test_fused_qkv_scoring_copy_equals_the_model_in_fp32(pooling):
    from spamjob.model import for_scoring

    torch.manual_seed(0)
    gpt = GPTModel(GPTConfig(vocab_size=300, context_length=32, emb_dim=32, n_heads=4, n_layers=3))
    replace_head(gpt, 2, seed=1)
    clf = SpamClassifier(gpt, pooling).eval()
    ids, lengths = torch.randint(0, 300, (5, 17)), torch.tensor([17, 3, 9, 1, 12])
    fused = for_scoring(clf, torch.float32)
    assert all(b.attention.W_qkv is not None and not hasattr(b.attention, "W_q") for b in fused.gpt.transformer_blocks)
    with torch.no_grad():
        torch.testing.assert_close(fused(ids, lengths), clf(ids, lengths), atol=1e-6, rtol=0)
        full = SpamClassifier(fused.gpt, pooling, pooled_only=False)  # every position through the last block
        torch.testing.assert_close(full(ids, lengths), clf(ids, lengths), atol=1e-6, rtol=0)
    assert gpt.transformer_blocks[0].attention.W_qkv is None  # the original is left as it was
