"""Model architecture settings and the four published GPT-2 sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from spamjob.errors import SpamjobError


@dataclass(frozen=True)
class GPTConfig:
    """GPT-2 architecture (the reference's field names)."""

    vocab_size: int = 50257
    """Token vocabulary: 50,000 BPE merges + 256 byte tokens + <|endoftext|>."""
    context_length: int = 1024
    """Number of learned positions; inputs longer than this cannot be embedded."""
    emb_dim: int = 768
    """Width of the residual stream."""
    n_heads: int = 12
    """Attention heads per block; must divide emb_dim."""
    n_layers: int = 12
    """Transformer blocks."""
    drop_rate: float = 0.0
    """Dropout after embeddings, in attention and on both residual branches."""
    qkv_bias: bool = True
    """Bias on W_q/W_k/W_v (OpenAI's checkpoints have one)."""
    ln_eps: float = 1e-5
    """LayerNorm epsilon (GPT-2 uses 1e-5)."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be a positive integer, got {getattr(self, name)!r}"
            for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1
        ]
        if not problems and self.emb_dim % self.n_heads:
            problems.append(f"emb_dim {self.emb_dim} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.drop_rate < 1.0:
            problems.append(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if problems:
            raise SpamjobError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Inverse of to_dict; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise SpamjobError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)

    def shape(self) -> str:
        """`768 dims, 12 layers, 12 heads` for messages."""
        return f"{self.emb_dim} dims, {self.n_layers} layers, {self.n_heads} heads"


# Published GPT-2 sizes: name -> (emb_dim, n_layers, n_heads).
MODEL_SIZES = {
    "gpt2-small": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
OPENAI_NAMES = {"gpt2-small": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
HF_REPOS = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
SIZE_CHOICES = [*MODEL_SIZES, *OPENAI_NAMES.values()]


def canonical_size(name: str) -> str:
    """`124M` -> `gpt2-small`; unknown names are an error listing the choices."""
    by_alias = {v.lower(): k for k, v in OPENAI_NAMES.items()}
    key = name.strip().lower()
    if key in MODEL_SIZES:
        return key
    if key in by_alias:
        return by_alias[key]
    raise SpamjobError(f"unknown model size {name!r}; choose one of {', '.join(SIZE_CHOICES)}")


def config_for(size: str = "gpt2-small", **overrides) -> GPTConfig:
    """GPTConfig of a named size, with any field overridden (None values ignored)."""
    emb_dim, n_layers, n_heads = MODEL_SIZES[canonical_size(size)]
    values = {"emb_dim": emb_dim, "n_layers": n_layers, "n_heads": n_heads}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GPTConfig(**values)


def matches_size(cfg: GPTConfig, size: str) -> bool:
    """True if cfg has the width, depth and heads of the named size."""
    return (cfg.emb_dim, cfg.n_layers, cfg.n_heads) == MODEL_SIZES[canonical_size(size)]
