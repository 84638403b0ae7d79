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


TRAINABLE = ("head", "last-block", "last-two-blocks", "all", "lora")
PRESETS = {
    # The book's recipe: last padded position, padding to the longest training message,
    # last block + final norm, fp32, and its compute (no frozen-prefix cache).
    "reference": {"pooling": "last", "padding": "fixed", "trainable": "last-block", "prefix_cache": "off",
                  "compute": "reference", "mixed_precision": "no"},
    # Better and cheaper: the last real token, batches padded to their own longest row,
    # frozen blocks run once per example, the last block on the pooled row only; bf16 on GPU.
    "default": {"pooling": "last-token", "padding": "dynamic", "trainable": "last-block", "prefix_cache": "auto",
                "compute": "fast", "mixed_precision": "auto"},
}


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a fine-tuning run (recorded in the classifier's config.json).

    Fields left None take their value from `preset` (see PRESETS) in `resolved()`.
    """

    out: str = "runs/spamjob"
    """Run folder: the classifier artifact, metrics, plots, checkpoints/."""
    data: str | None = None
    """Folder written by `spamjob prepare` (train/validation/test)."""
    source: str | None = None
    """Prepare on the fly from this source (URL, zip or file) into OUT/data, if --data is not given."""
    model: str | None = None
    """GPT-2 size [gpt2-small]; with a weights folder, a check against the checkpoint's own config."""
    weights: str = "hf"
    """hf | openai | random | a local folder in HF or OpenAI layout."""
    n_layers: int | None = None
    """Custom depth (random weights only)."""
    emb_dim: int | None = None
    """Custom width (random weights only)."""
    n_heads: int | None = None
    """Custom heads (random weights only)."""
    context_length: int | None = None
    """Custom context (random weights only)."""
    preset: str = "default"
    """default | reference; fills the fields below that are left None."""
    trainable: str | None = None
    """head | last-block | last-two-blocks | all | lora."""
    lora_rank: int = 16
    """LoRA rank (with trainable=lora)."""
    lora_alpha: float = 16.0
    """LoRA alpha (with trainable=lora)."""
    pooling: str | None = None
    """last (last padded position) | last-token (last real token)."""
    padding: str | None = None
    """fixed (every row to max_length) | dynamic (each batch to its longest row)."""
    max_length: int | None = None
    """Tokens kept per message; default: the longest training message."""
    epochs: int = 5
    batch_size: int = 8
    """Per process; the global batch is batch_size x processes x grad_accum."""
    lr: float = 5e-5
    weight_decay: float = 0.1
    grad_accum: int = 1
    seed: int = 123
    eval_freq: int = 50
    """Evaluate every this many steps..."""
    eval_iter: int = 5
    """...on this many train and validation batches."""
    mixed_precision: str | None = None
    """auto (bf16 on GPU, no on CPU) | no | bf16 | fp16."""
    prefix_cache: str | None = None
    """auto: run frozen blocks once per example and reuse them; off: run them every step."""
    compute: str | None = None
    """fast: last block and head on the pooled row only, fused AdamW; reference: every
    position through every block each step and torch's default AdamW, as the book runs."""
    cache_budget_mb: int = 4096
    """Largest prefix cache per process; over it the plain path runs."""
    tokenizer: str | None = None
    """Folder with encoder.json + vocab.bpe (default: weights folder, $SPAMJOB_TOKENIZER, caches)."""
    weights_cache: str | None = None
    """Cache folder for downloaded weights."""
    resume: bool = False
    """Continue from the last completed epoch in OUT/checkpoints."""

    def __post_init__(self) -> None:
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        choices = {
            "trainable": TRAINABLE, "pooling": ("last", "last-token"), "padding": ("fixed", "dynamic"),
            "mixed_precision": ("auto", "no", "bf16", "fp16"), "prefix_cache": ("auto", "off"),
            "compute": ("fast", "reference"),
        }
        for name, allowed in choices.items():
            v = getattr(self, name)
            if v is not None and v not in allowed:
                problems.append(f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {v!r}")
        for name in ("epochs", "batch_size", "grad_accum", "eval_freq", "eval_iter", "lora_rank"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 1:
            problems.append(f"max-length must be >= 1, got {self.max_length}")
        if self.lr <= 0 or self.weight_decay < 0 or self.cache_budget_mb < 0:
            problems.append("lr must be > 0, weight-decay and cache-budget-mb >= 0")
        custom = [n for n in ("n_layers", "emb_dim", "n_heads", "context_length") if getattr(self, n) is not None]
        if custom and self.weights != "random":
            problems.append(
                f"{', '.join('--' + n.replace('_', '-') for n in custom)} only apply to --weights random"
            )
        if self.data is not None and self.source is not None:
            problems.append("give --data or --source, not both")
        if problems:
            raise SpamjobError("; ".join(problems))

    def resolved(self) -> "TrainConfig":
        """A copy with every preset-controlled field filled in."""
        from dataclasses import replace

        preset = PRESETS[self.preset]
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)
