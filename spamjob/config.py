"""Settings, declared once: GPT-2 architecture and sizes, the fine-tuning and scoring options, their choices."""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from spamjob.errors import SpamjobError
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
CsvSplit = Literal["auto", "off"]
Engine = Literal["spamjob", "ray"]

PRESETS = {
    # The book's recipe: last padded position, padding to the longest training message,
    # last block + final norm, fp32, and its compute (no frozen-prefix cache).
    "reference": {"pooling": "last", "padding": "fixed", "trainable": "last-block", "prefix_cache": "off",
                  "compute": "reference", "mixed_precision": "no", "threshold_rule": "argmax"},
    # Better and cheaper: the last real token, batches padded to their own longest row,
    # frozen blocks run once per example, the last block on the pooled row only; bf16 on GPU.
    "default": {"pooling": "last-token", "padding": "dynamic", "trainable": "last-block", "prefix_cache": "auto",
                "compute": "fast", "mixed_precision": "auto", "threshold_rule": "f1"},
}
Preset = Literal[tuple(PRESETS)]


def choices(hint) -> tuple[str, ...]:
    """The values a Literal type allows (empty for other types)."""
    return get_args(hint) if get_origin(hint) is Literal else ()


def option(default=MISSING, *, min: float | None = None, metavar: str | None = None, flag: str | None = None,
           folder: bool = False, sizes: bool = False, argument: bool = False):
    """A dataclass field with how it appears on the command line (the field's docstring is its help).

    `min`: smallest value (checked here and by the CLI); `flag`: another option name (a bool
    field named `--no-X` is set False by it); `folder`: a folder path; `sizes`: a GPT-2 size
    name; `argument`: positional arguments instead of an option.
    """
    meta = {k: v for k, v in {"min": min, "metavar": metavar, "flag": flag, "folder": folder, "sizes": sizes,
                              "argument": argument}.items() if v is not None and v is not False}
    return field(default=default, metadata=meta)


def field_problems(cfg) -> list[str]:
    """Values outside a field's Literal choices or below its `min`, one message each (option spelling)."""
    problems = []
    hints = field_types(type(cfg))
    for f in fields(cfg):
        value, name = getattr(cfg, f.name), f.name.replace("_", "-")
        allowed = choices(optional_type(hints[f.name]))
        if value is not None and allowed and value not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        low = f.metadata.get("min")
        if value is not None and low is not None and value < low:
            problems.append(f"{name} must be >= {low}, got {value}")
        if f.metadata.get("folder") and (uri := uri_problem("--" + name, value)):
            problems.append(uri)
    return problems


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def uri_problem(option: str, value) -> str | None:
    """A `scheme://` folder (s3://, gs://, abfs://...) that would otherwise be made locally as a
    folder named `s3:`; object stores are not supported for folders yet."""
    if isinstance(value, str) and _URI.match(value):
        return (f"{option} {value} is a URI; spamjob reads and writes local (or mounted) folders only, "
                "so give a local path")
    return None


def optional_type(hint):
    """`X | None` -> X; other hints unchanged."""
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if get_origin(hint) in (Union, UnionType) and len(args) == 1 else hint


@functools.cache
def field_types(cls) -> dict:
    """Resolved type hints of a dataclass's fields."""
    return get_type_hints(cls)


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
    """auto: bf16 on GPU, no on CPU [reference preset: no]."""
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
    cache_budget_mb: int = option(4096, min=0)
    """Largest prefix cache per process; over it the frozen blocks run every step."""
    tokenizer: str | None = option(None, folder=True)
    """Folder with encoder.json + vocab.bpe [the weights folder, $SPAMJOB_TOKENIZER, caches]."""
    weights_cache: str | None = option(None, folder=True)
    """Cache folder for downloaded weights."""
    resume: bool = False
    """Continue from the last completed epoch in OUT/checkpoints."""

    def __post_init__(self) -> None:
        problems = field_problems(self)
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        custom = [n for n in ("n_layers", "emb_dim", "n_heads", "context_length") if getattr(self, n) is not None]
        if custom and self.weights != "random":
            problems.append(
                f"{', '.join('--' + n.replace('_', '-') for n in custom)} only apply to --weights random"
            )
        if self.data is not None and self.source is not None:
            problems.append("give --data or --source, not both")
        if self.threshold_rule is not None:
            try:
                parse_rule(self.threshold_rule)
            except SpamjobError as e:
                problems.append(str(e).replace("threshold rule", "threshold-rule"))
        if problems:
            raise SpamjobError("; ".join(problems))

    def resolved(self) -> "TrainConfig":
        """A copy with every preset-controlled field filled in."""
        preset = PRESETS[self.preset]
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class ScoreConfig:
    """Every option of a scoring run; those that shape the output files are part of its plan."""

    inputs: tuple[str, ...] = option(argument=True)
    """Parquet/CSV/TSV files, folders (searched recursively) and globs; .gz, .bz2, .zst too."""
    model: str = option(folder=True)
    """Run folder of `spamjob train` (the classifier)."""
    out: str = option(folder=True)
    """Output folder (local or mounted): predictions/ (the parts), rejects/, report.json/.md/.png,
    _manifest.json, _SUCCESS."""
    format: OutputFormat = "parquet"
    """File format of the prediction parts."""
    text_column: str | None = None
    """Column holding the message [the first of Text, text, message, sms]."""
    id_column: str | None = None
    """Column kept first in the output."""
    label_column: str | None = None
    """ham/spam or 0/1 (any case): adds accuracy, precision, recall, F1 to the report."""
    keep_columns: tuple[str, ...] | None = option(None, metavar="A,B,...")
    """Input columns to keep [all]."""
    delimiter: str | None = None
    """CSV field separator [tab for .tsv, comma otherwise]."""
    encoding: str = "utf-8"
    """Encoding of CSV/TSV inputs."""
    block_mb: int = option(16, min=1)
    """CSV work-unit size (one part per block)."""
    csv_split: CsvSplit = "auto"
    """auto: each process reads only its own blocks of an uncompressed UTF-8/Latin-1 CSV file larger
    than one block (a file whose stray quotes hide where its records start is then read whole, as the
    report says); off: every process reads each CSV file whole, scoring its own blocks."""
    window_rows: int = option(16384, min=1)
    """Rows read, tokenized and length-sorted together (the bucketing window)."""
    batch_tokens: int | None = option(None, min=1)
    """Padded tokens per forward pass [512 on CPU, where each model worker's activations fit its core's
    cache (gpt2-small: 51 msg/s at 1024 vs 20 at 16384 with 2 shared threads); 65536 on GPU]."""
    mixed_precision: MixedPrecision = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    compile: bool = False
    """torch.compile the model."""
    quantize: Quantize | None = None
    """CPU only: dynamic int8 Linear layers; agreement with fp32 goes in the report."""
    threshold: float | None = option(None, metavar="P")
    """Spam when P(spam) > P [the classifier's operating point from training, config.json; 0.5 is the
    argmax of the two logits]."""
    threads: int | None = option(None, min=1)
    """CPU: model workers per process, one torch thread each, every worker on its own batches
    [the CPUs this process may use (affinity mask, cgroup CPU quota) divided by the job's
    processes on this machine]; GPU or --compile: torch's threads."""
    tokenize_workers: int | None = option(None, min=0)
    """Tokenizer processes [GPU: up to 8; CPU: 0 = in the reading thread]."""
    overwrite: bool = False
    """Replace an output folder made by another model/inputs/options."""
    shard: str | None = option(None, metavar="K/N")
    """Do only share K of N of the work units (e.g. a Slurm array task); every task writes into the same
    --out and the last to finish writes the report and _SUCCESS."""
    progress: bool = option(True, flag="--no-progress")
    """A progress bar on the main process; --no-progress turns it off."""
    engine: Engine = "spamjob"
    """spamjob: its own work units over accelerate's processes (resume, exactly-once parts, rejects/);
    ray: Ray Data actors on a Ray cluster (`pip install 'spamjob[ray]'`), inputs may be URIs
    (s3://, gs://), the same predictions/ folder and report."""
    ray_address: str | None = None
    """--engine ray: the cluster to join [$RAY_ADDRESS, else a local one on this machine's CPUs]."""

    def __post_init__(self) -> None:
        problems = field_problems(self) + self._csv_problems() + self._engine_problems()
        if not self.inputs:
            problems.append("give at least one input file, folder or glob")
        if self.threshold is not None and not 0 <= self.threshold < 1:
            problems.append(f"threshold must be in [0, 1), got {self.threshold}")
        if self.keep_columns is not None and len(set(self.keep_columns)) < len(self.keep_columns):
            problems.append(f"keep-columns names a column twice: {','.join(self.keep_columns)}")
        if self.shard is not None:
            m = re.fullmatch(r"([0-9]+)/([0-9]+)", self.shard)
            if not (m and int(m[1]) < int(m[2])):
                problems.append(f"shard must be K/N with 0 <= K < N, got {self.shard!r}")
            elif self.overwrite:
                problems.append("--overwrite cannot be combined with --shard: other tasks write into the same folder")
        if problems:
            raise SpamjobError("; ".join(problems))

    def _csv_problems(self) -> list[str]:
        problems = []
        if self.delimiter is not None and len(self.delimiter) != 1:
            problems.append(f"delimiter must be one character, got {self.delimiter!r} (a tab: --delimiter $'\\t', "
                            "or leave it out for .tsv files)")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            problems.append(f"encoding {self.encoding!r} is not one Python knows (e.g. utf-8, latin-1, cp1252)")
        return problems

    def _engine_problems(self) -> list[str]:
        if self.engine != "ray":
            return ["--ray-address needs --engine ray"] if self.ray_address else []
        unsupported = {"--format csv": self.format == "csv", "--shard": self.shard, "--compile": self.compile,
                       "--threads": self.threads, "--tokenize-workers": self.tokenize_workers,
                       f"--encoding {self.encoding}": self.encoding.lower() != "utf-8"}
        return [f"{name} is not supported with --engine ray" for name, used in unsupported.items() if used]

    def plan_options(self) -> dict:
        """What decides the output files: a rerun with other values is a different job."""
        keys = ("format", "text_column", "id_column", "label_column", "keep_columns", "delimiter", "encoding",
                "block_mb", "csv_split")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keys}


def resolve_mixed_precision(mixed_precision: str, gpu: bool) -> str:
    """`auto` -> bf16 on a GPU that has it, else no; other values unchanged."""
    if mixed_precision != "auto":
        return mixed_precision
    import torch

    return "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"
