"""The options of the smaller commands, declared once as dataclass fields (spamjob.fields), as
`train`'s (spamjob.config.TrainConfig) and `score`'s (spamjob.scoring.config.ScoreConfig) are:
the CLI is generated from them (spamjob.options) and each docstring is its option's help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spamjob.config import MixedPrecision, Quantize
from spamjob.errors import SpamjobError
from spamjob.fields import field_problems, option
from spamjob.scoring.runtimes import RuntimeChoice


class _Checked:
    """Bad values (choices, bounds, URIs for folders) are one error line naming every option."""

    def __post_init__(self) -> None:
        if problems := field_problems(self):
            raise SpamjobError("; ".join(problems))


@dataclass(frozen=True)
class PrepareConfig(_Checked):
    """`spamjob prepare`."""

    source: str | None = option(None, metavar="URL|ZIP|FILE")
    """UCI zip URL [default], a local zip, or an extracted labeled file (TSV label<TAB>text, or CSV/TSV
    with `label` and `text` header)."""
    out: str = option("data", folder=True)
    """Folder for train/validation/test files and prepare.json."""
    format: Literal["csv", "parquet"] = "csv"
    """parquet writes .parquet files beside the CSVs."""
    seed: int = 123
    """Seed of balancing and shuffling."""
    train_frac: float = 0.7
    """Share of the rows in the train split."""
    val_frac: float = 0.1
    """Share of the rows in the validation split (the test split has the rest)."""
    balance: bool = option(True, flag="--no-balance")
    """Undersample ham to the spam count, as the reference does; --no-balance keeps every row."""
    sha256: str | None = option(None, metavar="HEX|none")
    """Expected sha256 of the extracted file. Default: the UCI file's for zip sources, none for plain files."""
    delimiter: str | None = None
    """Field separator [tab; comma for .csv]."""
    cache_dir: str | None = option(None, folder=True)
    """Where downloads and extracted files are kept [$SPAMJOB_CACHE/data]."""


@dataclass(frozen=True)
class DownloadConfig(_Checked):
    """`spamjob download`: what to fetch, and where."""

    model: str = option("gpt2-small", sizes=True)
    """GPT-2 size."""
    source: Literal["hf", "openai"] = "hf"
    """hf: Hugging Face Hub safetensors; openai: OpenAI's TensorFlow checkpoint files."""
    dir: str | None = option(None, folder=True)
    """Write a self-contained folder usable as --weights DIR (default: the cache only)."""
    cache_dir: str | None = option(None, folder=True)
    """Cache folder [hf: $HF_HUB_CACHE; openai: $SPAMJOB_CACHE/openai]."""
    tokenizer: bool = False
    """Fetch only the GPT-2 tokenizer files (encoder.json, vocab.bpe), into --dir or the cache."""
    data: bool = False
    """Fetch only the UCI dataset (verified SMSSpamCollection), into --dir or the cache. With --tokenizer:
    both, --dir laid out as a spamjob cache (what the tests need)."""
    all: bool = False
    """Weights, tokenizer and the UCI dataset into one folder (--dir, default the spamjob cache) laid out
    as a spamjob cache: copy it to an air-gapped cluster and use `spamjob --offline --cache DIR ...`."""


@dataclass(frozen=True)
class GenerateConfig(_Checked):
    """`spamjob generate`: greedy text from GPT-2 weights."""

    prompt: str = option(argument=True)
    """The text to continue."""
    weights: str = option("hf", metavar="hf|openai|random|DIR")
    """Pretrained source or a local folder (HF or OpenAI layout)."""
    model: str | None = option(None, sizes=True)
    """GPT-2 size [gpt2-small; read from a folder's config]."""
    max_new_tokens: int = option(50, min=0)
    """Tokens to add to the prompt."""
    tokenizer: str | None = option(None, folder=True)
    """Folder with encoder.json + vocab.bpe [the weights folder, $SPAMJOB_TOKENIZER, cache]."""
    cache_dir: str | None = option(None, folder=True)
    """Weights cache folder."""
    seed: int = 123
    """Seed of --weights random."""
    json: bool = False
    """Print prompt, token ids and text as JSON."""


@dataclass(frozen=True)
class ClassifyConfig(_Checked):
    """`spamjob classify`: a few messages, from the command line or stdin."""

    texts: tuple[str, ...] = option(argument=True)
    """Messages to label (none: the lines of stdin)."""
    model: str = option(folder=True)
    """Run folder of `spamjob train`."""
    json: bool = False
    """One JSON object per text."""
    batch_tokens: int = option(1024, min=1)
    """Padded tokens per forward pass."""
    threshold: float | None = option(None, min=0, below=1, metavar="P")
    """Spam when P(spam) > P [the classifier's operating point; 0.5 is the argmax]."""
    runtime: RuntimeChoice = "torch"
    """torch, or onnxruntime (`pip install 'spamjob[onnx]'`; its first use exports the classifier's graph
    into the cache); auto picks as `spamjob score` does, which with no int8 here means torch."""


@dataclass(frozen=True)
class ExportConfig(_Checked):
    """`spamjob export`: the classifier in another library's layout."""

    run_dir: str = option(argument=True, folder=True)
    """Run folder of `spamjob train`."""
    out: str = option(folder=True)
    """Folder to write."""
    format: Literal["hf", "onnx"] = "hf"
    """hf: a transformers GPT2ForSequenceClassification folder (from_pretrained, pipeline); onnx: model.onnx
    with the pooling inside (ONNX Runtime, Triton), checked with onnxruntime."""
    quantize: Literal["int8"] | None = None
    """onnx: also model.int8.onnx (dynamic int8), with its agreement with fp32 spamjob."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quantize and self.format != "onnx":
            raise SpamjobError("--quantize is for --format onnx")


@dataclass(frozen=True)
class PushConfig(_Checked):
    """`spamjob push`: the classifier to the Hugging Face Hub."""

    run_dir: str = option(argument=True, folder=True)
    """Run folder of `spamjob train`."""
    repo_id: str = option(argument=True)
    """The Hub repository, OWNER/NAME."""
    private: bool = False
    """Create the repository private (an existing one keeps its visibility)."""


@dataclass(frozen=True)
class ReportConfig(_Checked):
    """`spamjob report`: a predictions folder recounted."""

    folder: str = option(argument=True, folder=True, store=True)
    """A scoring output folder, local or a URI (its predictions/ is counted)."""
    label_column: str | None = None
    """Column of ham/spam or 0/1 labels: adds accuracy, precision, recall, F1."""


@dataclass(frozen=True)
class RunConfig(_Checked):
    """`spamjob run`: the whole job, stage by stage."""

    out: str = option(folder=True)
    """Job folder: data/, model/, scored/ (predictions and report), run.json."""
    source: str | None = option(None, metavar="URL|ZIP|FILE")
    """Dataset [the UCI zip]."""
    train_args: str = option("", metavar="'OPTIONS'")
    """`spamjob train` options, quoted (e.g. '--epochs 3 --weights random')."""
    score_args: str = option("", metavar="'OPTIONS'")
    """`spamjob score` options, quoted (e.g. '--quantize int8')."""


@dataclass(frozen=True)
class SparkScoreConfig(_Checked):
    """`jobs/spark_score.py`: scoring on a Spark cluster."""

    inputs: tuple[str, ...] = option(argument=True)
    """Paths or URIs Spark reads (Parquet, or CSV with a header row)."""
    model: str = option(folder=True)
    """Run folder of `spamjob train`, readable by every executor."""
    out: str = option()
    """Output folder (local, hdfs://, s3a://, ...): predictions/ goes there."""
    format: Literal["parquet", "csv"] = "parquet"
    """Format of the inputs (CSV: with a header row)."""
    text_column: str | None = None
    """Column of message text [Text, text, message, sms]."""
    label_column: str | None = None
    """ham/spam or 0/1 labels: accuracy in the report."""
    mixed_precision: MixedPrecision = "auto"
    """auto: bf16 on GPU executors and on CPUs with a bf16 matrix unit (AMX, AVX512-BF16); else fp32."""
    quantize: Quantize | None = None
    """CPU executors: dynamic int8 Linear layers."""
    overwrite: bool = False
    """Replace OUT/predictions if it exists."""

    def __post_init__(self) -> None:
        problems = field_problems(self) + ([] if self.inputs else ["give at least one input path or URI"])
        if problems:
            raise SpamjobError("; ".join(problems))
