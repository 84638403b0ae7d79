"""GPT-2 as written from scratch (the reference's module names), classifier head, freezing, pooling."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from spamjob.config import GPTConfig, Pooling, Trainable
from spamjob.errors import SpamjobError
from spamjob.fields import choices

FREEZE_POLICIES = tuple(p for p in choices(Trainable) if p != "lora")  # LoRA: peft's adapters (train.py)
POOLINGS = choices(Pooling)
RANDOM_FILLS = frozenset(
    {"normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "trunc_normal_"}
)


class _SkipRandomFills(TorchFunctionMode):
    """Random initialisation of meta tensors skipped: torch runs it through Python decompositions
    that import torch._dynamo (about 1 s of a scoring process's start) for weights loaded next."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensor = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
        if getattr(func, "__name__", "") in RANDOM_FILLS and getattr(tensor, "is_meta", False):
            return tensor
        return func(*args, **kwargs)


@contextlib.contextmanager
def empty_modules() -> Iterator[None]:
    """Modules built inside have meta tensors, uninitialised: for weights assigned next."""
    with torch.device("meta"), _SkipRandomFills():
        yield


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with separate query/key/value projections."""

    def __init__(self, d_in: int, d_out: int, num_heads: int, dropout: float = 0.0, qkv_bias: bool = True):
        super().__init__()
        assert d_out % num_heads == 0, f"d_out {d_out} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_q = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_k = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_v = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = dropout
        self.W_qkv: nn.Linear | None = None  # set by fuse_qkv (scoring): one matmul instead of three

    def fuse_qkv(self) -> None:
        """Replace W_q, W_k, W_v by one Linear(d, 3d) holding the same weights (inference only)."""
        projections = (self.W_q, self.W_k, self.W_v)
        bias = projections[0].bias is not None
        fused = nn.Linear(
            projections[0].in_features,
            3 * projections[0].out_features,
            bias=bias,
            device=projections[0].weight.device,
            dtype=projections[0].weight.dtype,
        )
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in projections]))
            if bias:
                fused.bias.copy_(torch.cat([p.bias for p in projections]))
        del self.W_q, self.W_k, self.W_v
        self.W_qkv = fused

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of x (..., d), each (..., d)."""
        if self.W_qkv is not None:
            return self.W_qkv(x).chunk(3, dim=-1)
        return self.W_q(x), self.W_k(x), self.W_v(x)

    def qkv_params(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight, bias) of the query, key and value projections (views into W_qkv when fused)."""
        if self.W_qkv is not None:
            w, b = self.W_qkv.weight.chunk(3), self.W_qkv.bias
            return [(w[i], None if b is None else b.chunk(3)[i]) for i in range(3)]
        return [(p.weight, p.bias) for p in (self.W_q, self.W_k, self.W_v)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # (B, T, d) -> (B, nh, T, hs)
        q, k, v = (y.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2) for y in self.project(x))
        # Fused kernel (flash / memory-efficient on GPU); scale 1/sqrt(hs) as in GPT-2.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))

    def attend_at(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Attention output at one position per row: x (B, T, d), pos (B,) -> (B, d).

        Equal to `self(x)[rows, pos]` (keys after `pos` are masked, as causality hides
        them), computed without projecting every position. With a single query q_h per
        head, q_h . (W_k,h x_j + b_k,h) = (W_k,h^T q_h) . x_j + q_h . b_k,h, and the
        attention-weighted values are W_v,h (sum_j a_hj x_j) + b_v,h. So instead of two
        (T, d) x (d, d) projections per row, scores and weights cost T x d x heads: the
        trainable last block then costs almost nothing per cached token. Projections that
        are not plain `nn.Linear` (LoRA adapters, int8 layers) run as modules instead.
        """
        projections = [self.W_qkv] if self.W_qkv is not None else [self.W_q, self.W_k, self.W_v]
        if any(type(p) is not nn.Linear for p in projections):
            return self._attend_at_projected(x, pos)  # LoRA adapters, int8 layers: use their forward
        b, t, d = x.shape
        nh, hs = self.num_heads, self.head_dim
        rows = torch.arange(b, device=x.device)
        (wq, bq), (wk, bk), (wv, bv) = self.qkv_params()
        q = F.linear(x[rows, pos], wq, bq).view(b, nh, hs)
        u = torch.einsum("bhs,hsd->bhd", q, wk.view(nh, hs, d))  # keys folded into the query
        scores = torch.einsum("bhd,btd->bht", u, x)
        if bk is not None:
            scores = scores + torch.einsum("bhs,hs->bh", q, bk.view(nh, hs))[:, :, None]
        hidden = torch.arange(t, device=x.device)[None, None, :] > pos[:, None, None]
        weights = torch.softmax((scores * hs**-0.5).masked_fill(hidden, float("-inf")).float(), dim=-1)
        weights = F.dropout(weights, self.dropout, self.training).to(x.dtype)
        mixed = torch.einsum("bht,btd->bhd", weights, x)  # weighted inputs, then the value projection
        y = torch.einsum("bhd,hsd->bhs", mixed, wv.view(nh, hs, d))
        if bv is not None:
            y = y + bv.view(nh, hs)
        return self.out_proj(y.reshape(b, nh * hs))

    def _attend_at_projected(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """attend_at through the projection modules' own forward: keys and values at every position."""
        b, t, _ = x.shape
        rows = torch.arange(b, device=x.device)
        if self.W_qkv is None:  # keys and values at every position, the query at `pos` only
            q, k, v = self.W_q(x[rows, pos]), self.W_k(x), self.W_v(x)
        else:
            q, (_, k, v) = self.W_qkv(x[rows, pos]).chunk(3, dim=-1)[0], self.W_qkv(x).chunk(3, dim=-1)
        q = q.reshape(b, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, 1, hs)
        k, v = (y.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2) for y in (k, v))
        mask = (torch.arange(t, device=x.device)[None, :] <= pos[:, None]).view(b, 1, 1, t)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.reshape(b, -1))


class LayerNorm(nn.Module):
    """LayerNorm with the reference's parameter names `scale` and `shift` (biased variance)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class FeedForward(nn.Module):
    """Linear(d, 4d) -> GELU (tanh approximation, as GPT-2) -> Linear(4d, d)."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, 4 * emb_dim), nn.GELU(approximate="tanh"), nn.Linear(4 * emb_dim, emb_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attention = MultiHeadAttention(cfg.emb_dim, cfg.emb_dim, cfg.n_heads, cfg.drop_rate, cfg.qkv_bias)
        self.ffn = FeedForward(cfg.emb_dim)
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.ln_eps)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.ln_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.attention(self.norm1(x)))
        return x + self.drop_shortcut(self.ffn(self.norm2(x)))

    def forward_at(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Block output at one position per row, (B, T, d) -> (B, d); equal to `self(x)[rows, pos]`.

        For a classifier that reads one position, the last block's query, output
        projection and feed-forward run on that row only (about 1/T of their cost).
        """
        rows = torch.arange(x.shape[0], device=x.device)
        x_pos = x[rows, pos] + self.drop_shortcut(self.attention.attend_at(self.norm1(x), pos))
        return x_pos + self.drop_shortcut(self.ffn(self.norm2(x_pos)))


class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, N blocks, final norm, output head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.token_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.transformer_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.ln_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def embed(self, in_idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d) input of block 0."""
        t = in_idx.shape[1]
        if t > self.cfg.context_length:
            raise SpamjobError(f"sequence of {t} tokens exceeds the model's context of {self.cfg.context_length}")
        pos = torch.arange(t, device=in_idx.device)
        return self.drop_emb(self.token_emb(in_idx) + self.pos_emb(pos))

    def blocks(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Run blocks `start..N-1` and the final norm: (B, T, d) -> (B, T, d)."""
        for block in self.transformer_blocks[start:]:
            x = block(x)
        return self.final_norm(x)

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, out) logits at every position (the reference's forward)."""
        return self.out_head(self.blocks(self.embed(in_idx)))


def pooled_positions(lengths: torch.Tensor, width: int, pooling: str) -> torch.Tensor:
    """Position read per row, (B,): the last padded one (`last`, the reference) or the
    last real token (`last-token`, so right-padding never changes the result: under
    causal attention a position never sees the padding after it)."""
    if pooling == "last":
        return torch.full_like(lengths, width - 1)
    if pooling == "last-token":
        return (lengths - 1).clamp(min=0, max=width - 1)  # an empty row reads its first (pad) position
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def classify(
    model: GPTModel,
    in_idx: torch.Tensor | None,
    lengths: torch.Tensor | None,
    pooling: str,
    start: int = 0,
    x: torch.Tensor | None = None,
    pooled_only: bool = True,
) -> torch.Tensor:
    """Class logits (B, C) at the pooled position; equal to `model(in_idx)[rows, pos]`.

    With `x` (B, T, d), blocks from `start` run on those cached activations instead of
    embedding `in_idx`. With `pooled_only` the last block and the head run on the pooled
    row only; without, every position goes through them, as the reference computes it.
    """
    if x is None:
        x = model.embed(in_idx)
        start = 0
    if lengths is None:
        if pooling != "last":
            raise ValueError("last-token pooling needs the unpadded lengths")
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    pos = pooled_positions(lengths.to(x.device), x.shape[1], pooling)
    rows = torch.arange(x.shape[0], device=x.device)
    blocks = model.transformer_blocks[start:]
    head_dtype = model.final_norm.scale.dtype  # fp32 also in a bf16 scoring model (see for_scoring)
    if not pooled_only:
        for block in blocks:
            x = block(x)
        return model.out_head(model.final_norm(x.to(head_dtype)))[rows, pos]
    for block in blocks[:-1]:
        x = block(x)
    h = blocks[-1].forward_at(x, pos) if len(blocks) else x[rows, pos]
    return model.out_head(model.final_norm(h.to(head_dtype)))


class SpamClassifier(nn.Module):
    """GPT-2 with a class head read at one pooled position; the module DDP wraps in training.

    forward(input_ids, lengths) runs the whole model; forward(lengths=..., hidden=x,
    start=k) runs blocks k.. on cached activations of the frozen blocks below k.
    """

    def __init__(self, gpt: GPTModel, pooling: str, pooled_only: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise SpamjobError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.gpt = gpt
        self.pooling = pooling
        self.pooled_only = pooled_only

    def forward(self, input_ids=None, lengths=None, hidden=None, start: int = 0) -> torch.Tensor:
        return classify(self.gpt, input_ids, lengths, self.pooling, start=start, x=hidden, pooled_only=self.pooled_only)


def for_scoring(classifier: SpamClassifier, dtype: torch.dtype) -> SpamClassifier:
    """A copy for inference: query/key/value fused into one matmul per block, embeddings and blocks
    stored in `dtype` (no autocast, no per-batch weight casts), final norm and head kept fp32."""
    scoring = copy.deepcopy(classifier).eval()
    gpt = scoring.gpt
    for block in gpt.transformer_blocks:
        block.attention.fuse_qkv()
    for module in (gpt.token_emb, gpt.pos_emb, gpt.drop_emb, gpt.transformer_blocks):
        module.to(dtype)
    return scoring


def replace_head(model: GPTModel, num_classes: int = 2, seed: int | None = 123) -> GPTModel:
    """Swap the LM head for `Linear(emb_dim, num_classes)`, created right after `manual_seed(seed)`."""
    if seed is not None:
        torch.manual_seed(seed)
    device = model.token_emb.weight.device
    model.out_head = nn.Linear(model.cfg.emb_dim, num_classes).to(device)
    return model


def freeze(model: GPTModel, policy: str) -> GPTModel:
    """Set requires_grad by policy; the head is always trainable.

    head: head only; last-block: + last block + final norm; last-two-blocks: + last two
    blocks + final norm; all: everything.
    """
    if policy not in FREEZE_POLICIES:
        raise SpamjobError(f"unknown trainable policy {policy!r}; choose one of {', '.join(FREEZE_POLICIES)}")
    train_all = policy == "all"
    for p in model.parameters():
        p.requires_grad = train_all
    n_blocks = {"head": 0, "last-block": 1, "last-two-blocks": 2, "all": 0}[policy]
    trainable: list[nn.Module] = [model.out_head]
    if n_blocks:
        trainable += [*model.transformer_blocks[-n_blocks:], model.final_norm]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad = True
    return model


def first_trainable_block(model: GPTModel) -> int:
    """Index of the first block with a trainable parameter (n_layers if none, -1 if embeddings train)."""
    if any(p.requires_grad for m in (model.token_emb, model.pos_emb) for p in m.parameters()):
        return -1
    for i, block in enumerate(model.transformer_blocks):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(model.transformer_blocks)


@torch.no_grad()
def generate_greedy(model: GPTModel, idx: torch.Tensor, max_new_tokens: int, eos_id: int | None = None) -> torch.Tensor:
    """Append `max_new_tokens` argmax tokens to (B, T) `idx`, cropping to the context window."""
    model.eval()
    ctx = model.cfg.context_length
    for _ in range(max_new_tokens):
        h = model.blocks(model.embed(idx[:, -ctx:]))
        nxt = model.out_head(h[:, -1]).argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)
        if eos_id is not None and bool((nxt == eos_id).all()):
            break
    return idx


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
