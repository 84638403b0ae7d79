"""What a scoring job resolves before any row is scored (`setup`): the process group, the
inputs and their columns, the one output schema, the scorer (model loaded once), the plan
checked against --out, and this process's place among all processes of all --shard tasks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import torch
from tqdm import tqdm

from spamjob import processes
from spamjob.errors import SpamjobError
from spamjob.scoring import drift, formats
from spamjob.scoring import plan as job_plan
from spamjob.scoring.columns import Columns, output_fields, renamed_for_output, resolve_columns
from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.core import BatchScorer
from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.inputs import find, say_skipped, schema_of, versioned
from spamjob.scoring.output import OutputFolder, open_output, runs
from spamjob.scoring.output.lookup import check_out
from spamjob.scoring.output.names import unit_name
from spamjob.scoring.output.runs import Run
from spamjob.scoring.schema import as_csv_text, common_type
from spamjob.scoring.source import Source
from spamjob.threads import apply_threads, tokenizer_workers


@dataclass(frozen=True)
class Input:
    """An input file with what `setup` read of it: its schema (None: empty file) and resolved columns."""

    source: Source
    schema: pa.Schema | None
    columns: Columns | None

    def kept_names(self, renamed: dict[str, str]) -> dict[str, str]:
        """Output name -> input name of each kept column (`renamed`: see columns.renamed_for_output)."""
        return {renamed.get(c, c): c for c in (self.columns.keep if self.columns is not None else ())}

    def kept_fields(self, renamed: dict[str, str]) -> list[pa.Field]:
        """The kept columns as they come in (Parquet's as they are, CSV fields as text), under their
        output names."""
        return [
            pa.field(name, self.schema.field(c).type if formats.of(self.source).typed else pa.large_string())
            for name, c in self.kept_names(renamed).items()
        ]


def output_schema(inputs: list[Input], fmt: str, renamed: dict[str, str]) -> pa.Schema:
    """One schema for every part, so that the output folder reads as one dataset: the union of the
    kept columns (in order of first appearance; an input without one gets nulls), each of a type
    that every input's values convert to exactly (spamjob.scoring.schema; CSV parts: bytes as text), then the
    four scoring adds."""
    by_name: dict[str, list[tuple[str, pa.DataType]]] = {}
    for inp in inputs:
        for f in inp.kept_fields(renamed):
            by_name.setdefault(f.name, []).append((inp.source.path, f.type))
    sources = {inp.source.path: inp.source for inp in inputs}
    kept = [
        pa.field(name, common_type(name, found, lambda path, col: formats.of(sources[path]).bounds(sources[path], col)))
        for name, found in by_name.items()
    ]
    if fmt == "csv":
        kept = [f.with_type(as_csv_text(f.type)) for f in kept]
    return pa.schema(kept + output_fields())


@dataclass
class Agreement:
    """bf16 or int8 against fp32 (reported, never used for the output): on a sample of this job's
    first window, or as checked when the runtime's model was made (ONNX Runtime's int8 graph,
    OpenVINO's bf16 compile: at no cost to the job, on the classifier's test messages)."""

    rows: int = 0
    same: int = 0
    max_abs_diff: float = 0.0
    measured_on: str = "the first rows of this job's first window"

    @classmethod
    def of(cls, scorer: BatchScorer) -> Agreement:
        check = scorer.checked
        if check is None:
            return cls()
        rows = check["messages"]
        return cls(rows, round(check["agreement"] * rows), check["max_abs_diff"], check["measured_on"])

    def report(self, precision: str) -> dict:
        return {
            "precision": precision,
            "rows_compared": self.rows,
            "same_prediction": self.same / self.rows if self.rows else None,
            "max_abs_probability_diff": self.max_abs_diff,
            "measured_on": self.measured_on,
        }


@dataclass
class Steady:
    """Rows this process scored after its first window, from the moment that window was collected: the
    rate without start-up (model load, CUDA init, tokenizer processes, first-window warm-up)."""

    rows: int = 0
    start: float | None = None

    def add(self, rows: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.rows += rows

    def rate(self) -> float:
        seconds = time.perf_counter() - self.start if self.start is not None else 0.0
        return self.rows / seconds if self.rows and seconds > 0 else 0.0


@dataclass
class ScoreJob:
    """What `setup` resolves before any row is scored."""

    cfg: ScoreConfig
    accelerator: object
    out: OutputFolder
    scorer: BatchScorer
    inputs: list[Input]
    schema: pa.Schema  # of every part
    csv: CsvOptions
    plan: dict
    agreement: Agreement | None
    me: int  # this process's place among every process of every --shard task...
    total: int  # ...and their number: unit k is done by process k % total
    threads: dict = field(default_factory=dict)  # torch's threads (or model workers) in this process, and why
    renamed: dict = field(default_factory=dict)  # kept input columns named as an output column -> input_<name>
    skipped: dict = field(default_factory=dict)  # files met under the inputs and not read: path -> why
    reference: dict | None = None  # the drift reference's profile (spamjob.scoring.drift)
    run: Run | None = None  # --incremental, on the main process: this run, claimed
    run_number: int | None = None  # --incremental: this run's number (in every unit it commits)
    in_blocks: list[Input] = field(default_factory=list)  # CSV inputs read in byte blocks when the job started
    windows: int = 0  # windows written by this process (the crash tests' kill point counts them)
    steady: Steady = field(default_factory=Steady)
    bar: tqdm | None = field(default=None, repr=False)


def setup(cfg: ScoreConfig) -> ScoreJob:
    """The scorer (model loaded once), the inputs and their columns, the plan checked against --out."""
    gpu = torch.cuda.is_available()
    accelerator = processes.accelerator(cpu=not gpu)
    world, out = accelerator.num_processes, open_output(cfg.out)
    # CPU: one single-threaded model worker per CPU (torch.compile'd models keep one caller).
    threads = apply_threads(cfg.threads, workers=not gpu and not cfg.compile)
    tok_workers = cfg.tokenize_workers if cfg.tokenize_workers is not None else tokenizer_workers(gpu)
    csv = CsvOptions(cfg.delimiter, cfg.encoding, cfg.block_mb << 20, in_blocks=cfg.csv_blocks == "auto")
    inputs, skipped = read_inputs(cfg, csv)  # bad inputs fail here, before the model is loaded
    renamed = renamed_for_output(c for i in inputs if i.columns is not None for c in i.columns.keep)
    schema = output_schema(inputs, cfg.format, renamed)
    # The tokenizer processes (GPU) start first and load their tokenizers while the model loads.
    scorer = scorer_for(cfg, accelerator.device, threads.get("workers", 1), tok_workers)
    reference = drift_reference(cfg, scorer)
    plan = _plan(cfg, scorer, inputs)
    run = _prepare(cfg, out, plan, schema, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    # With --shard K/N, this run's processes are ranks K*world .. K*world+world-1 of N*world.
    k, n = map(int, (cfg.shard or "0/1").split("/"))
    job = ScoreJob(
        cfg,
        accelerator,
        out,
        scorer,
        inputs,
        schema,
        csv,
        plan,
        Agreement.of(scorer) if scorer.reference is not None or scorer.checked is not None else None,
        me=k * world + accelerator.process_index,
        total=n * world,
        threads=threads,
        renamed=renamed,
        skipped=skipped,
        run=run,
        reference=reference,
        run_number=runs.current(out) if cfg.incremental else None,
    )
    job.bar = _progress_bar(cfg, out, inputs, accelerator)
    return job


def scorer_for(cfg: ScoreConfig, device, workers: int, tokenize_workers: int = 0, dedup: bool | None = None):
    """The job's BatchScorer, as its options ask (`dedup`: other than --dedup's, e.g. for --dry-run)."""
    return BatchScorer(
        cfg.model,
        device=device,
        mixed_precision=cfg.mixed_precision,
        batch_tokens=cfg.batch_tokens,
        quantize=cfg.quantize,
        compile=cfg.compile,
        tokenize_workers=tokenize_workers,
        workers=workers,
        threshold=cfg.threshold,
        runtime=cfg.runtime,
        dedup=cfg.dedup if dedup is None else dedup,
    )


def _progress_bar(cfg: ScoreConfig, out: OutputFolder, inputs: list[Input], accelerator) -> tqdm:
    """The main process's bar over the rows known from metadata; an incremental run's counts the
    files no earlier run committed (their first unit's sidecar)."""
    done_before = {i.source.path for i in inputs if cfg.incremental and out.sidecar(unit_name(i.source.key, 0))}
    rows = sum(
        formats.of(i.source).rows(i.source) or 0
        for i in inputs
        if i.columns is not None and i.source.path not in done_before
    )
    return tqdm(
        total=(rows // accelerator.num_processes) or None,
        unit="rows",
        desc=f"scoring (rank {accelerator.process_index})",
        disable=not (cfg.progress and accelerator.is_main_process),
        leave=False,
    )


def _prepare(cfg: ScoreConfig, out: OutputFolder, plan: dict, schema: pa.Schema, main: bool) -> Run | None:
    """--out checked against the plan (and, --incremental, the run claimed) by the main process;
    an incremental output's schema checked by every process."""
    if not cfg.incremental:
        if main:
            out.prepare(plan, cfg.overwrite)
        return None
    if not cfg.overwrite:
        runs.check_schema(out, schema)
    return runs.begin(out, lambda: out.prepare(plan, cfg.overwrite)) if main else None


def drift_reference(cfg: ScoreConfig, scorer: BatchScorer) -> dict | None:
    """The profile drift is measured against; with --fail-on-drift, there must be one."""
    found = drift.reference(cfg.drift_reference, scorer.folder)
    if found is None and cfg.fail_on_drift is not None:
        raise SpamjobError(
            f"--fail-on-drift needs a drift reference: {cfg.model} has no {drift.PROFILE} (trained by an older "
            "spamjob); pass --drift-reference OUT (an earlier scoring output)"
        )
    return found


def _plan(cfg: ScoreConfig, scorer: BatchScorer, inputs: list[Input]) -> dict:
    """The job's plan, with the settings the scorer resolved (what `auto` picked on this machine)."""
    loaded = scorer.loaded
    settings = job_plan.prediction_settings(scorer.mixed_precision, scorer.quantize, scorer.threshold, loaded.settings)
    fingerprints = [i.source.fingerprint() for i in inputs]
    return job_plan.build(cfg, scorer.classifier.config.get("model_sha256"), fingerprints, settings)


def read_inputs(cfg: ScoreConfig, csv: CsvOptions) -> tuple[list[Input], dict[str, str]]:
    """The inputs found, --out checked against them, each with its schema and resolved columns;
    the files skipped on the way, with why (said on the main process with --verbose)."""
    found = find(cfg.inputs)
    if cfg.incremental:
        found.sources = versioned(found.sources)
    check_out(cfg.out, [s.path for s in found.sources])
    say_skipped(found.skipped, cfg.verbose)
    inputs = [
        Input(source, schema, resolve_columns(source, schema, cfg))
        for source in found.sources
        for schema in [schema_of(source, csv)]
    ]
    return inputs, found.skipped
