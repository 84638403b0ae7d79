"""The options of a scoring job, declared once (spamjob.fields); those that shape the output
files are part of its plan (spamjob.scoring.plan)."""

from __future__ import annotations

import codecs
import re
from dataclasses import asdict, dataclass

from spamjob.config import CsvBlocks, MixedPrecision, OutputFormat, Quantize
from spamjob.engines import EngineChoice
from spamjob.errors import SpamjobError
from spamjob.fields import field_problems, option
from spamjob.scoring.runtimes import RuntimeChoice


@dataclass(frozen=True)
class ScoreConfig:
    """Every option of a scoring run; those that shape the output files are part of its plan."""

    inputs: tuple[str, ...] = option(argument=True, store=True)
    """Parquet/CSV/TSV files, folders (searched recursively) and globs; .gz, .bz2, .zst too."""
    model: str = option(folder=True, store=True)
    """Run folder of `spamjob train` (the classifier), local or a URI (fetched once into the cache)."""
    out: str = option(folder=True, store=True)
    """Output folder, local or a URI (s3://, gs://, abfs://): predictions/ (the parts), rejects/, report.json/.md/.png,
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
    csv_blocks: CsvBlocks = option("auto", alias="--csv-split")
    """auto: each process reads only its own blocks of an uncompressed UTF-8/Latin-1 CSV file larger
    than one block (a file whose stray quotes hide where its records start is then read whole, as the
    report says); off: every process reads each CSV file whole, scoring its own blocks."""
    window_rows: int = option(16384, min=1)
    """Rows read, tokenized and length-sorted together (the bucketing window)."""
    batch_tokens: int | None = option(None, min=1)
    """Padded tokens per forward pass [512 on CPU, where each model worker's activations fit its core's
    cache (benchmarks/RESULTS.md); 65536 on GPU]."""
    mixed_precision: MixedPrecision = "auto"
    """auto: bf16 on a GPU, or on a CPU with a bf16 matrix unit (AMX, AVX512-BF16), its label
    agreement with fp32 in the report (sampled, or as checked once per classifier); else fp32 (`no`:
    fp32 always)."""
    compile: bool = False
    """torch.compile the model."""
    quantize: Quantize | None = None
    """CPU only: dynamic int8 Linear layers; agreement with fp32 goes in the report."""
    runtime: RuntimeChoice = "auto"
    """What runs the model. torch; onnxruntime (CPU, fp32 or --quantize int8; `pip install
    'spamjob[onnx]'`): the graph of spamjob's own ONNX export, made once per classifier into the
    cache and checked against torch within 1e-4; openvino (CPU, bf16 or fp32; `pip install
    'spamjob[openvino]'`): that graph compiled by OpenVINO; auto: onnxruntime for CPU --quantize int8,
    openvino for bf16 on an x86 CPU with a bf16 unit, each where installed, else torch."""
    threshold: float | None = option(None, min=0, below=1, metavar="P")
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
    incremental: bool = False
    """Score only what no earlier run into --out committed: new files, and files changed since (a new
    size, ETag/generation, mtime; their earlier rows superseded); each run commits as one more run of
    the same output, one run at a time (report.md: this run's rows; cumulative.md: every current row)."""
    shard: str | None = option(None, metavar="K/N")
    """Do only share K of N of the work units (e.g. a Slurm array task); every task writes into the same
    --out and the last to finish writes the report and _SUCCESS."""
    dedup: bool = option(True, flag="--no-dedup")
    """A text that comes again within a window (exact match) is tokenized and scored once, every row of
    it given that probability; --no-dedup scores each row on its own (same labels: for benchmarks)."""
    drift_reference: str | None = option(None, folder=True, store=True, metavar="OUT")
    """Measure drift against this earlier scoring output's rows (its cumulative report where it has one)
    instead of the classifier's training profile (profile.json)."""
    fail_on_drift: float | None = option(None, min=0, metavar="PSI")
    """Exit 3, after committing everything, when the population stability index of the scores against
    the drift reference exceeds PSI (0.25: a shift worth a look)."""
    metrics_file: str | None = option(None, metavar="PATH")
    """Also write the run's metrics (Prometheus text format, as OUT/metrics.prom) to PATH once it has
    succeeded, e.g. into node_exporter's textfile-collector folder (a `.prom` name)."""
    dry_run: bool = False
    """Write nothing, score nothing: list the work units and rows to score (from Parquet metadata and
    CSV sizes; with --incremental, only what is new), sample their token counts, calibrate the runtime
    for a few seconds and print the expected time on this machine, and per process for N shards or ranks."""
    progress: bool = option(True, flag="--no-progress")
    """A progress bar on the main process; --no-progress turns it off."""
    verbose: bool = False
    """Print each file skipped under the inputs, and why: a name (or a folder's on the way) starting
    with _ or . (Spark/Hadoop bookkeeping such as _temporary/, _SUCCESS, .crc), another file type,
    a scoring output. The report counts them; _manifest.json lists them."""
    engine: EngineChoice = "spamjob"
    """spamjob: its own work units over accelerate's processes (resume, exactly-once parts, rejects/);
    ray: Ray Data actors on a Ray cluster (`pip install 'spamjob[ray]'`), inputs may be URIs
    (s3://, gs://), the same predictions/ folder and report."""
    ray_address: str | None = None
    """--engine ray: the cluster to join [$RAY_ADDRESS, else a local one on this machine's CPUs]."""

    def __post_init__(self) -> None:
        problems = field_problems(self) + self._csv_problems() + self._engine_problems()
        if not self.inputs:
            problems.append("give at least one input file, folder or glob")
        if self.keep_columns is not None and len(set(self.keep_columns)) < len(self.keep_columns):
            problems.append(f"keep-columns names a column twice: {','.join(self.keep_columns)}")
        if self.shard is not None:
            m = re.fullmatch(r"([0-9]+)/([0-9]+)", self.shard)
            if not (m and int(m[1]) < int(m[2])):
                problems.append(f"shard must be K/N with 0 <= K < N, got {self.shard!r}")
            elif self.overwrite:
                problems.append("--overwrite cannot be combined with --shard: other tasks write into the same folder")
            elif self.incremental:
                problems.append("--incremental cannot be combined with --shard: one run at a time writes the output")
        if problems:
            raise SpamjobError("; ".join(problems))

    def _csv_problems(self) -> list[str]:
        problems = []
        if self.delimiter is not None and len(self.delimiter) != 1:
            problems.append(
                f"delimiter must be one character, got {self.delimiter!r} (a tab: --delimiter $'\\t', "
                "or leave it out for .tsv files)"
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            problems.append(f"encoding {self.encoding!r} is not one Python knows (e.g. utf-8, latin-1, cp1252)")
        return problems

    def _engine_problems(self) -> list[str]:
        if self.engine != "ray":
            return ["--ray-address needs --engine ray"] if self.ray_address else []
        unsupported = {
            "--format csv": self.format == "csv",
            "--shard": self.shard,
            "--incremental": self.incremental,
            "--dry-run": self.dry_run,
            "--drift-reference": self.drift_reference,
            "--fail-on-drift": self.fail_on_drift is not None,
            "--compile": self.compile,
            "--threads": self.threads,
            "--tokenize-workers": self.tokenize_workers,
            f"--encoding {self.encoding}": self.encoding.lower() != "utf-8",
        }
        return [f"{name} is not supported with --engine ray" for name, used in unsupported.items() if used]

    def plan_options(self) -> dict:
        """What decides the output files: a rerun with other values is a different job."""
        keys = (
            "format",
            "text_column",
            "id_column",
            "label_column",
            "keep_columns",
            "delimiter",
            "encoding",
            "block_mb",
            "csv_blocks",
        )
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keys}
