"""Settings, declared once: GPT-2 architecture and sizes, the fine-tuning options, every choice list.
The scoring options are spamjob.scoring.config; how an option is declared, spamjob.fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

from spamjob.errors import SpamjobError
from spamjob.fields import field_problems, option
from spamjob.operating import parse_rule


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
    def from_dict(cls, d: dict) -> GPTConfig:
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


LABELS = ("ham", "spam")  # class names; the index is the class id

# Every choice list, once: the dataclasses below, their validation, the CLI and the model use these.
Trainable = Literal["head", "last-block", "last-two-blocks", "all", "lora"]
Pooling = Literal["last", "last-token"]
Padding = Literal["fixed", "dynamic"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
PrefixCacheMode = Literal["auto", "off"]
Compute = Literal["fast", "reference"]
OutputFormat = Literal["parquet", "csv"]
Quantize = Literal["int8"]
CsvBlocks = Literal["auto", "off"]
Calibration = Literal["temperature", "none"]
ReportTo = Literal["tensorboard", "mlflow", "wandb", "all", "none"]

PRESETS = {
    # The book's recipe: last padded position, padding to the longest training message,
    # last block + final norm, fp32, and its compute (no frozen-prefix cache).
    "reference": {
        "pooling": "last",
        "padding": "fixed",
        "trainable": "last-block",
        "prefix_cache": "off",
        "compute": "reference",
        "mixed_precision": "no",
        "threshold_rule": "argmax",
        "calibration": "none",
    },
    # Better and cheaper: the last real token, batches padded to their own longest row,
    # frozen blocks run once per example, the last block on the pooled row only; bf16 on GPU.
    "default": {
        "pooling": "last-token",
        "padding": "dynamic",
        "trainable": "last-block",
        "prefix_cache": "auto",
        "compute": "fast",
        "mixed_precision": "auto",
        "threshold_rule": "f1",
        "calibration": "temperature",
    },
}
Preset = Literal[tuple(PRESETS)]


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a fine-tuning run (recorded in the classifier's config.json).

    Fields left None take their value from `preset` (see PRESETS) in `resolved()`.
    """

    out: str = option("runs/spamjob", folder=True)
    """Run folder: the classifier artifact, metrics, history, plots, checkpoints/."""
    data: str | None = option(None, folder=True)
    """Folder written by `spamjob prepare` (train/validation/test)."""
    source: str | None = option(None, metavar="URL|ZIP|FILE")
    """Without --data: prepare from this source (URL, zip or file) into OUT/data [the UCI zip]."""
    model: str | None = option(None, sizes=True)
    """GPT-2 size [gpt2-small]; with a weights folder, a check against the checkpoint's own config."""
    weights: str = option("hf", metavar="hf|openai|random|DIR")
    """Pretrained GPT-2 from the Hub (hf) or OpenAI (openai), random initialisation, or a local folder
    in either layout."""
    n_layers: int | None = option(None, min=1)
    """Custom depth (random weights only)."""
    emb_dim: int | None = option(None, min=1)
    """Custom width (random weights only)."""
    n_heads: int | None = option(None, min=1)
    """Custom heads (random weights only)."""
    context_length: int | None = option(None, min=1)
    """Custom context (random weights only)."""
    preset: Preset = "default"
    """reference: the book's recipe exactly (last padded position, fixed padding, fp32, no cache); fills
    the options below that are not given."""
    trainable: Trainable | None = None
    """What trains [last-block: the last transformer block and the final norm; always the head]."""
    lora_rank: int = option(16, min=1)
    """LoRA rank (with --trainable lora)."""
    lora_alpha: float = 16.0
    """LoRA alpha (with --trainable lora)."""
    pooling: Pooling | None = None
    """Position read: the last padded one, or the last real token [default preset: last-token]."""
    padding: Padding | None = None
    """Pad every row to max_length, or each batch to its longest row [default preset: dynamic]."""
    max_length: int | None = option(None, min=1)
    """Tokens kept per message [the longest training message]."""
    epochs: int = option(5, min=1)
    """Passes over the training split."""
    batch_size: int = option(8, min=1)
    """Per process; the global batch is batch_size x processes x grad_accum."""
    lr: float = 5e-5
    """AdamW learning rate."""
    weight_decay: float = option(0.1, min=0)
    """AdamW weight decay."""
    grad_accum: int = option(1, min=1)
    """Gradient accumulation steps."""
    seed: int = 123
    """Seed of random weights, the head, shuffling (the reference seeds before each)."""
    eval_freq: int = option(50, min=1)
    """Evaluate every N steps..."""
    eval_iter: int = option(5, min=1)
    """...on N train and N validation batches."""
    mixed_precision: MixedPrecision | None = None
    """auto: bf16 on a GPU, or on a CPU with a bf16 matrix unit (AMX, AVX512-BF16) for a model at
    least 768 dims wide; else no [reference preset: no]."""
    prefix_cache: PrefixCacheMode | None = None
    """auto: run the frozen blocks once per example and reuse them [default preset: auto]."""
    compute: Compute | None = None
    """fast: last block and head on the pooled row only, fused AdamW; reference: every position through
    every block each step and torch's default AdamW, as the book runs [default preset: fast]."""
    threads: int | None = option(None, min=1)
    """CPU threads per process [the CPUs this process may use (affinity mask, cgroup CPU quota) divided by
    the job's processes on this machine]."""
    threshold_rule: str | None = option(None, metavar="RULE")
    """How the spam threshold is picked on the validation split: f1 (best F1), precision>=X (most recall
    with at least that precision), recall>=X (most precision with at least that recall) or argmax (0.5);
    saved in config.json, used by score and classify [default preset: f1; reference: argmax]."""
    calibration: Calibration | None = None
    """Calibrate P(spam) after training: temperature (one scalar fitted on the validation split, kept in
    config.json and applied by every runtime and export; the threshold is picked on calibrated
    scores) or none [default preset: temperature; reference: none]."""
    report_to: ReportTo = "none"
    """Log the run to experiment trackers through accelerate: tensorboard, mlflow, wandb, all (every one
    installed) or none; the options as hyperparameters, losses and accuracies at each evaluation, the
    final figures, and (MLflow) the classifier folder as an artifact (`pip install 'spamjob[mlflow]'`...)."""
    tracking_dir: str | None = option(None, folder=True)
    """Where TensorBoard's event files (and, without $MLFLOW_TRACKING_URI, MLflow's SQLite store) go [OUT/tracking]."""
    cache_budget_mb: int = option(4096, min=0)
    """Largest prefix cache per process; over it the frozen blocks run every step."""
    tokenizer: str | None = option(None, folder=True)
    """Folder with encoder.json + vocab.bpe [the weights folder, $SPAMJOB_TOKENIZER, caches]."""
    weights_cache: str | None = option(None, folder=True)
    """Cache folder for downloaded weights."""
    resume: bool = False
    """Continue from the last completed epoch in OUT/checkpoints."""
    scoring_graphs: bool = False
    """Also make the classifier's ONNX Runtime scoring graphs (fp32, int8) into this machine's cache, so
    that its first `--runtime onnxruntime` or `--quantize int8` job does not pay their export
    (`pip install 'spamjob[onnx]'`; `spamjob env --model OUT` says whether they are ready), and,
    where `spamjob score` would run OpenVINO, its compiled model and bf16 check."""

    def __post_init__(self) -> None:
        problems = field_problems(self)
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        custom = [n for n in ("n_layers", "emb_dim", "n_heads", "context_length") if getattr(self, n) is not None]
        if custom and self.weights != "random":
            problems.append(f"{', '.join('--' + n.replace('_', '-') for n in custom)} only apply to --weights random")
        if self.data is not None and self.source is not None:
            problems.append("give --data or --source, not both")
        if self.threshold_rule is not None:
            try:
                parse_rule(self.threshold_rule)
            except SpamjobError as e:
                problems.append(str(e).replace("threshold rule", "threshold-rule"))
        if problems:
            raise SpamjobError("; ".join(problems))

    @property
    def width(self) -> int:
        """The model's width: --emb-dim, else its size's (a weights folder's own must match it)."""
        return self.emb_dim or MODEL_SIZES[canonical_size(self.model or "gpt2-small")][0]

    def resolved(self) -> TrainConfig:
        """A copy with every preset-controlled field filled in."""
        preset = PRESETS[self.preset]
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


# CPU training under `auto`: bf16 only from this model width up, where it was measured faster
# than fp32 (benchmarks/RESULTS.md, "Training precision by width": 768 dims 1.6x; 512 on a par;
# 256 0.8x, its casts costing more than its small matrix products gain).
BF16_TRAINING_MIN_WIDTH = 768


def resolve_mixed_precision(mixed_precision: str, gpu: bool, width: int | None = None) -> str:
    """`auto` -> bf16 on a GPU that has it, or on a CPU with a bf16 matrix unit (spamjob.hardware;
    training: a model `width` wide, at least BF16_TRAINING_MIN_WIDTH); else no; other values unchanged."""
    return precision_choice(mixed_precision, gpu, width)[0]


def precision_choice(mixed_precision: str, gpu: bool, width: int | None = None) -> tuple[str, str]:
    """(the precision, why), as a report and `spamjob env` say it; `width`: a model trained on the CPU."""
    if mixed_precision != "auto":
        return mixed_precision, "asked for"
    if gpu:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return ("bf16", "auto: the GPU has bf16") if bf16 else ("no", "auto: the GPU has no bf16")
    from spamjob.hardware import cpu

    unit = cpu().bf16_unit
    if unit and width is not None and width < BF16_TRAINING_MIN_WIDTH:
        return (
            "no",
            f"auto: fp32 for a {width}-dim model (bf16 trains no faster on the CPU below {BF16_TRAINING_MIN_WIDTH})",
        )
    if unit:
        return "bf16", f"auto: the CPU multiplies bf16 natively ({unit})"
    return "no", "auto: the CPU has no bf16 matrix unit (AMX-BF16, AVX512-BF16): fp32"
