"""Bulk scoring: stream inputs through a trained classifier on every process, commit parts, report.

Work units are deterministic (Parquet: file x row group; CSV: file x block of the
streaming reader) and dealt round-robin to the processes, so each is done exactly once.
A unit writes its part under a temporary name and renames it when complete, then writes
its sidecar `_parts/part-*.json` (row counts and report counts): the sidecar is the commit.
Parts go to OUT/predictions/, one Parquet (or CSV) dataset (`pandas.read_parquet(OUT /
"predictions")`); unparsable CSV lines to OUT/rejects/; the report beside them.
A rerun after a kill skips every committed unit; the report is summed from all
sidecars, so it is the same as an uninterrupted run's. `_SUCCESS` is written last.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from spamjob import __version__
from spamjob.columns import OUTPUT_COLUMNS, OUTPUT_TYPES, Columns, labels_of, renamed_for_output, resolve_columns, \
    utf8_column
from spamjob.config import ScoreConfig
from spamjob.errors import SpamjobError
from spamjob.faults import kill_point, pause_point
from spamjob.fsutil import atomic_path, locked, read_json, sha256_file, write_json
from spamjob.csvsplit import SplitError, block_count, read_block
from spamjob.io import OUTPUT_MARKER, PREDICTIONS, Chunk, CsvOptions, PartWriter, Source, check_out, discover, \
    iter_csv_blocks, iter_parquet_unit, parquet_bounds, parquet_layout, parquet_units, schema_of
from spamjob.operating import threshold_record
from spamjob.report import Counts, count_rows, workers
from spamjob.schema import as_csv_text, common_type, conform
from spamjob.scorer import BatchScorer, Window
from spamjob.stages import Writer, prefetch
from spamjob.threads import apply_threads, tokenizer_workers

PLAN = OUTPUT_MARKER  # "_plan.json", written first: it makes --out a scoring output
INT8_SAMPLE = 512  # rows of the first window scored in fp32 too: the fp32 pass costs what it measures


@dataclass(frozen=True)
class Unit:
    """One work unit: a Parquet row group or a CSV block of one input; its part is named after it."""

    source: Source
    index: int
    split: bool = False  # a byte block of a CSV file, read on its own (spamjob.csvsplit)

    @property
    def name(self) -> str:
        return f"part-{self.source.key}-{self.index:06d}"


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
        return [pa.field(name, pa.large_string() if self.source.kind == "csv" else self.schema.field(c).type)
                for name, c in self.kept_names(renamed).items()]


OUTPUT_FIELDS = [pa.field(name, t) for name, t in OUTPUT_TYPES.items()]


def output_schema(inputs: list[Input], fmt: str, renamed: dict[str, str]) -> pa.Schema:
    """One schema for every part, so that the output folder reads as one dataset: the union of the
    kept columns (in order of first appearance; an input without one gets nulls), each of a type
    that every input's values convert to exactly (spamjob.schema; CSV parts: bytes as text), then the
    four scoring adds."""
    by_name: dict[str, list[tuple[str, pa.DataType]]] = {}
    for inp in inputs:
        for f in inp.kept_fields(renamed):
            by_name.setdefault(f.name, []).append((inp.source.path, f.type))
    sources = {inp.source.path: inp.source for inp in inputs}
    kept = [pa.field(name, common_type(name, found, lambda path, col: parquet_bounds(sources[path], col)))
            for name, found in by_name.items()]
    if fmt == "csv":
        kept = [f.with_type(as_csv_text(f.type)) for f in kept]
    return pa.schema(kept + OUTPUT_FIELDS)


@dataclass
class Agreement:
    """int8 against fp32 on a sample of the first window (reported, never used for the output)."""

    rows: int = 0
    same: int = 0
    max_abs_diff: float = 0.0

    def report(self) -> dict:
        return {"rows_compared": self.rows, "same_prediction": self.same / self.rows if self.rows else None,
                "max_abs_probability_diff": self.max_abs_diff}


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
    out: Path
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
    split: list[Input] = field(default_factory=list)  # CSV inputs read in byte blocks when the job started
    windows: int = 0  # windows written by this process (the crash tests' kill point counts them)
    steady: Steady = field(default_factory=Steady)
    bar: tqdm | None = field(default=None, repr=False)


def main(cfg: ScoreConfig) -> dict:
    """Score every input; returns the report ({} on processes other than the main one)."""
    if cfg.engine == "ray":
        return _on_ray(cfg)
    wall0 = time.perf_counter()
    job = setup(cfg)
    try:
        score_all(job)
        if job.split:  # files whose byte blocks failed their check: read whole now, by every process
            job.accelerator.wait_for_everyone()
            if fell_back := [i for i in job.split if not _split_blocks(job, i)]:
                score_all(job, fell_back)
    finally:
        job.bar.close()
        job.scorer.close()
    return finish(job, wall0)


def _on_ray(cfg: ScoreConfig) -> dict:
    try:
        from spamjob.engines.ray import run_job  # the optional extra, imported only when asked for
    except ImportError:
        raise SpamjobError("--engine ray needs Ray: pip install 'spamjob[ray]'") from None
    return run_job(cfg)


def setup(cfg: ScoreConfig) -> ScoreJob:
    """The scorer (model loaded once), the inputs and their columns, the plan checked against --out."""
    from spamjob.processes import accelerator as make_accelerator

    gpu = torch.cuda.is_available()
    accelerator = make_accelerator(cpu=not gpu)
    world, out = accelerator.num_processes, Path(cfg.out)
    # CPU: one single-threaded model worker per CPU (torch.compile'd models keep one caller).
    threads = apply_threads(cfg.threads, workers=not gpu and not cfg.compile)
    tok_workers = cfg.tokenize_workers if cfg.tokenize_workers is not None else tokenizer_workers(gpu)
    csv = CsvOptions(cfg.delimiter, cfg.encoding, cfg.block_mb << 20, split=cfg.csv_split == "auto")
    inputs = []
    sources = discover(cfg.inputs)  # bad inputs fail here, before the model is loaded
    check_out(out, [s.path for s in sources])
    for source in sources:
        schema = schema_of(source, csv)
        inputs.append(Input(source, schema, resolve_columns(source, schema, cfg)))
    renamed = renamed_for_output(c for i in inputs if i.columns is not None for c in i.columns.keep)
    schema = output_schema(inputs, cfg.format, renamed)
    # The tokenizer processes (GPU) start first and load their tokenizers while the model loads.
    scorer = BatchScorer(cfg.model, device=accelerator.device, mixed_precision=cfg.mixed_precision,
                         batch_tokens=cfg.batch_tokens, quantize=cfg.quantize, compile=cfg.compile,
                         tokenize_workers=tok_workers, workers=threads.get("workers", 1), threshold=cfg.threshold)
    model_fp = {"path": str(Path(cfg.model).resolve()), "sha256": scorer.classifier.config.get("model_sha256")}
    # Everything that decides a prediction is in the plan: a rerun with any other value is another job.
    predictions = {"mixed_precision": scorer.mixed_precision, "quantize": cfg.quantize, "threshold": scorer.threshold}
    plan = {"spamjob_version": __version__, "model": model_fp, "inputs": [i.source.fingerprint() for i in inputs],
            "options": {**cfg.plan_options(), **predictions}}
    if accelerator.is_main_process:
        _check_plan(out, plan, cfg.overwrite)
    accelerator.wait_for_everyone()
    # With --shard K/N, this run's processes are ranks K*world .. K*world+world-1 of N*world.
    k, n = map(int, (cfg.shard or "0/1").split("/"))
    job = ScoreJob(cfg, accelerator, out, scorer, inputs, schema, csv, plan, Agreement() if cfg.quantize else None,
                   me=k * world + accelerator.process_index, total=n * world, threads=threads, renamed=renamed)
    job.split = [i for i in inputs if _split_blocks(job, i)]
    rows = sum(parquet_layout(i.source)[1] for i in inputs if i.source.kind == "parquet" and i.columns is not None)
    job.bar = tqdm(total=(rows // world) or None, unit="rows", desc=f"scoring (rank {accelerator.process_index})",
                   disable=not (cfg.progress and accelerator.is_main_process), leave=False)
    return job


def plan_units(job: ScoreJob, inputs: list[Input]) -> Iterator[tuple[Unit, Iterator[Chunk]]]:
    """This process's units of `inputs` not committed before, each with its chunks (read lazily).

    Units known before reading (Parquet row groups, byte blocks of CSV files read in blocks, the
    one unit of an empty file) are dealt round-robin over all inputs; the blocks of a CSV file read
    whole round-robin within the file (their number is known only once it is read). A file whose
    blocks fail their check in this round is read whole in the next (`main`): a block and a whole
    file's block of the same index share a unit name and lock.
    """
    split = {inp.source.path for inp in inputs if _split_blocks(job, inp)}  # once: a fall-back waits for round 2
    fixed = [(inp, unit) for inp in inputs for unit in _fixed_units(job, inp, inp.source.path in split)]
    for k, (inp, unit) in enumerate(fixed):
        if k % job.total == job.me and not _committed(job, unit):
            yield unit, _chunks(job, inp, unit)
    for inp in inputs:
        if inp.source.kind == "csv" and inp.columns is not None and inp.source.path not in split:
            yield from _csv_units(job, inp, job.inputs.index(inp))


def _fixed_units(job: ScoreJob, inp: Input, split: bool) -> list[Unit]:
    if inp.columns is None:
        return [Unit(inp.source, 0)]
    if inp.source.kind == "parquet":
        return [Unit(inp.source, g) for g in parquet_units(inp.source)]
    return [Unit(inp.source, k, split=True) for k in range(block_count(inp.source, job.csv))] if split else []


def _chunks(job: ScoreJob, inp: Input, unit: Unit) -> Iterator[Chunk]:
    if inp.columns is None:
        return iter(())
    if unit.split:
        return _block_chunks(job, inp, unit)
    cols = inp.columns
    needed = list(dict.fromkeys([*cols.keep, cols.text, *([cols.label] if cols.label else [])]))
    return iter_parquet_unit(inp.source, unit.index, needed, job.cfg.window_rows)


def _block_chunks(job: ScoreJob, inp: Input, unit: Unit) -> Iterator[Chunk]:
    """The windows of a byte block; when its check fails, the file falls back to being read whole
    (the unit then commits nothing)."""
    if not _split_blocks(job, inp):  # another process's block failed its check
        return
    try:
        chunk = read_block(inp.source, job.csv, inp.schema.names, _binary_types(inp), unit.index)
    except SplitError as e:
        _fall_back(job, inp.source, str(e))
        return
    yield from _window(chunk, job.cfg.window_rows)


def _binary_types(inp: Input) -> dict[str, pa.DataType]:
    return {name: pa.binary() for name in inp.schema.names}  # decoded per value: bad bytes never crash


def _csv_units(job: ScoreJob, inp: Input, si: int) -> Iterator[tuple[Unit, Iterator[Chunk]]]:
    """The blocks of a CSV file read whole that are this process's; records the file's unit count
    when read. A file that fell back from byte blocks is dealt over this task's processes only, so
    that each --shard task finishes it whatever the others do (the unit locks keep it done once)."""
    record = _source_record(job, inp.source)
    me, total = ((job.accelerator.process_index, job.accelerator.num_processes) if "reason" in record
                 else (job.me, job.total))
    n_blocks = 0
    for block, chunk in iter_csv_blocks(inp.source, job.csv, _binary_types(inp)):
        n_blocks = block + 1
        unit = Unit(inp.source, block)
        if (si + block) % total == me and not _committed(job, unit):
            yield unit, _window(chunk, job.cfg.window_rows)
    if n_blocks == 0 and si % total == me and not _committed(job, Unit(inp.source, 0)):
        yield Unit(inp.source, 0), iter(())
    if job.accelerator.is_main_process:
        write_json(_source_path(job, inp.source), {**record, "path": inp.source.path, "units": max(n_blocks, 1)})


def _split_blocks(job: ScoreJob, inp: Input) -> int:
    """Byte blocks of a CSV input read in blocks; 0 when it is read whole (always, or since a block's
    check failed: its `_sources` record says why)."""
    if inp.source.kind != "csv" or inp.columns is None or "reason" in _source_record(job, inp.source):
        return 0
    return block_count(inp.source, job.csv)


def _source_path(job: ScoreJob, source: Source) -> Path:
    return job.out / "_sources" / f"{source.key}.json"


def _source_record(job: ScoreJob, source: Source) -> dict:
    path = _source_path(job, source)
    return read_json(path) if path.is_file() else {}


def _fall_back(job: ScoreJob, source: Source, reason: str) -> None:
    """Mark a CSV file to be read whole and uncommit its byte blocks, under the file's lock (which the
    commit of a byte block takes too, so that none commits after this)."""
    with locked(_lock_path(job.out, source.key)):
        if "reason" in _source_record(job, source):  # another task's did: its whole-file units may be here
            return
        # Data files, then sidecars (a sidecar whose files are gone is redone), then the mark: a kill
        # before it leaves the file to be split again, and the same check to fail again.
        for folder in (PREDICTIONS, "rejects", "_parts"):
            kill_point("SPAMJOB_KILL_IN_FALL_BACK", folder)  # crash tests
            for path in (job.out / folder).glob(f"part-{source.key}-*"):
                path.unlink()
        write_json(_source_path(job, source), {"path": source.path, "reason": reason})


def _committed(job: ScoreJob, unit: Unit) -> bool:
    """True when the unit's sidecar is there and every file it lists has its recorded size and
    sha256: a part truncated or a rejects file deleted since is redone, never trusted."""
    side = job.out / "_parts" / f"{unit.name}.json"
    if not side.is_file():
        return False
    try:
        files = read_json(side).get("files", {})
    except SpamjobError:  # an unreadable sidecar: redo the unit
        return False
    return bool(files) and all(_record(job.out / name) == rec for name, rec in files.items())


def _record(path: Path) -> dict | None:
    """Size and sha256 of a committed file (None when it is gone)."""
    if not path.is_file():
        return None
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


@dataclass
class Item:
    """A window of a unit on its way through the stages; `chunk` None marks the end of the unit."""

    unit: Unit
    chunk: Chunk | None = None
    window: Window | None = None
    labels: list | None = None


def score_all(job: ScoreJob, inputs: list[Input] | None = None) -> None:
    """Every unit of this process through one chain of stages, each in its own thread: reading and
    tokenizing (running ahead, across units), the model (window k+1, of this unit or the next,
    launched before window k is collected) and writing; a unit commits in the writer thread after
    its last write, still under its lock."""
    read = prefetch(_items(job, job.inputs if inputs is None else inputs), name="spamjob-read")
    items = prefetch((_prepare(job, item) for item in read), name="spamjob-tokenize")
    writer, current, pending, ended = Writer(), None, None, []  # ended: units whose last window may be pending
    try:
        for item in items:
            current = current or OpenUnit(job, item.unit)
            if item.chunk is None:
                ended.append(current)
                current = None
            elif not current.done_before:
                launched = job.scorer.launch(item.window)
                _collect(job, pending, writer, ended)
                pending = (current, item, launched)
        _collect(job, pending, writer, ended)
        writer.join()
    except BaseException:
        writer.close()
        for unit in [*ended, *([current] if current else [])]:
            unit.abort()
        raise
    writer.close()


def _items(job: ScoreJob, inputs: list[Input]) -> Iterator[Item]:
    """The chunks of this process's units, read lazily, each unit closed by an end marker."""
    for unit, chunks in plan_units(job, inputs):
        for chunk in chunks:
            yield Item(unit, chunk)
        yield Item(unit)


def _prepare(job: ScoreJob, item: Item) -> Item:
    """Decode, flag and tokenize a window and read its labels (no model: the tokenizing stage)."""
    if item.chunk is not None:
        cols, batch = _input_of(job, item.unit).columns, item.chunk.batch
        item.window = job.scorer.prepare(batch.column(cols.text))
        item.labels = labels_of(batch.column(cols.label)) if cols.label and batch.num_rows else None
    return item


def _input_of(job: ScoreJob, unit: Unit) -> Input:
    return next(i for i in job.inputs if i.source == unit.source)


class OpenUnit:
    """A unit being scored: held under its lock (a concurrent run on the same --out waits, then finds
    it committed), its part written under a temporary name, its counts and rejects."""

    def __init__(self, job: ScoreJob, unit: Unit):
        self.unit, self.inp = unit, _input_of(job, unit)
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(locked(_lock_path(job.out, unit.name)))
        self.done_before = _committed(job, unit)  # by another run, while this one waited for the lock
        if not self.done_before:
            _remove_temporaries(job.out, unit.name)  # a dead process's leftovers of this unit
        self.part = PartWriter(job.out / PREDICTIONS / f"{unit.name}.{job.cfg.format}", job.cfg.format)
        self.counts, self.rejects = Counts(), []

    def commit(self, job: ScoreJob) -> None:
        """Part, rejects, sidecar (the writer thread, after the unit's last write); then the lock goes.
        A byte block commits under its file's lock, and not at all once the file fell back."""
        with locked(_lock_path(job.out, self.unit.source.key)) if self.unit.split else contextlib.nullcontext():
            if self.unit.split and "reason" in _source_record(job, self.unit.source):
                self.part.abort()
            elif not self.done_before:
                _commit(job.out, self.unit, self.part, job.schema, self.counts, self.rejects, job.cfg.format)
        self._lock.close()

    def abort(self) -> None:
        self.part.abort()
        self._lock.close()


def _collect(job: ScoreJob, pending: tuple | None, writer: Writer, ended: list[OpenUnit]) -> None:
    """Window k back from the device: counted, its table built and handed to the writer; then the
    commits of the units that have ended (their last window was this one, or they had none)."""
    if pending is not None:
        unit, item, launched = pending
        unit.rejects += item.chunk.rejects
        for r in item.chunk.rejects:
            unit.counts.rejected[r["reason"]] += 1
        table = _score_window(job, item, unit.inp, launched.result(), unit.counts)
        writer.submit(_write_window, job, unit.part, table)
        job.bar.update(table.num_rows)
        job.steady.add(table.num_rows)
    while ended:
        writer.submit(ended.pop(0).commit, job)


def _write_window(job: ScoreJob, part: PartWriter, table: pa.Table) -> None:
    """The writer thread's work for one window (the crash tests' points count written windows)."""
    if table.num_rows:
        part.write(table)
    job.windows += 1
    kill_point("SPAMJOB_KILL_AFTER_WINDOWS", job.windows)  # crash tests
    pause_point("SPAMJOB_PAUSE_AFTER_WINDOWS", job.windows)  # concurrency tests


def _score_window(job: ScoreJob, item: Item, inp: Input, probs: np.ndarray, counts: Counts) -> pa.Table:
    """Count a predicted window and build its output table (kept columns + the four new ones)."""
    window = item.window
    if job.agreement is not None and job.agreement.rows == 0 and len(window.ids):
        ref = job.scorer.reference(window.ids.take(np.arange(min(INT8_SAMPLE, len(window.ids)))))
        job.agreement.rows = len(ref)
        t = job.scorer.threshold
        job.agreement.same = int(((ref > t) == (probs[: len(ref)] > t)).sum())
        job.agreement.max_abs_diff = float(np.abs(ref - probs[: len(ref)]).max())
    new = job.scorer.output_columns(window, probs)
    counts += count_rows(new, item.labels)
    n, mine = window.num_rows, inp.kept_names(job.renamed)
    kept = {f.name: _kept(item.chunk.batch.column(mine[f.name]), f.type) if f.name in mine else pa.nulls(n, f.type)
            for f in job.schema if f.name not in new}
    return pa.table({**kept, **new}, schema=job.schema)


def _kept(values: pa.Array, to: pa.DataType) -> pa.Array:
    """A kept column in the output's type: exactly (bit for bit where the type is its own); bytes
    (CSV fields are read as bytes, so that bad bytes never crash the reader) as text where the
    output's column is text, invalid bytes replaced by U+FFFD."""
    if pa.types.is_large_string(to):
        values = utf8_column(values)
    return conform(values, to)


def _commit(out: Path, unit: Unit, writer: PartWriter, schema: pa.Schema, counts: Counts, rejects: list[dict],
            fmt: str) -> None:
    """Part, then rejects, then the sidecar: a unit without its sidecar is redone on rerun."""
    writer.commit(schema)
    rejects_name = None
    if rejects:
        rejects_name = f"rejects/{unit.name}.jsonl"
        with atomic_path(out / rejects_name) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rejects))
    part = f"{PREDICTIONS}/{unit.name}.{fmt}"
    write_json(out / "_parts" / f"{unit.name}.json", {
        "source": unit.source.path, "unit": unit.index, "part": part, "rows": writer.rows,
        "rejects": rejects_name, "counts": counts.to_dict(),
        "files": {name: _record(out / name) for name in (part, rejects_name) if name},
    })


def _check_plan(out: Path, plan: dict, overwrite: bool) -> None:
    """Same plan: resume. Another plan, or a non-empty folder without one: an error, unless
    --overwrite, which deletes what a scoring job writes and refuses when anything else is there.

    Under the folder's plan lock: tasks that start together (a Slurm array) agree on the folder,
    the first writes the plan and the others wait for it, then find it theirs."""
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN
    with locked(_lock_path(out, PLAN_LOCK)):
        if [p for p in out.iterdir() if p.name != LOCKS]:
            old = read_json(plan_path) if plan_path.is_file() else None
            if old != plan:
                _clear_for(out, old, overwrite)
        _remove_temporaries(out)  # of killed runs; a live run's are locked and stay
        pause_point("SPAMJOB_PAUSE_BEFORE_PLAN", 1)  # concurrency tests: a plan being written
        with locked(_lock_path(out, REPORT_LOCK)):
            (out / "_SUCCESS").unlink(missing_ok=True)
            write_json(plan_path, plan)


def _clear_for(out: Path, old: dict | None, overwrite: bool) -> None:
    """--out holds another job's files (or none of spamjob's): an error, or with --overwrite their
    deletion (the locks stay: other processes may be waiting on them)."""
    if not overwrite:
        what = ("was written with another model, other inputs or other options" if old is not None
                else "is not empty and holds no spamjob scoring plan")
        raise SpamjobError(f"output folder {out} {what}; pass --overwrite to replace it, or choose another --out")
    foreign = [p for p in out.iterdir() if not _ours(p)]
    if foreign:
        raise SpamjobError(f"--overwrite would delete {foreign[0]}, which spamjob did not write; clear {out} by hand")
    for p in out.iterdir():
        if p.name != LOCKS:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


# What a scoring job writes into --out, and nothing else: --overwrite deletes only these.
OWNED_FILES = {PLAN, "_manifest.json", "_SUCCESS", "report.json", "report.md", "report.png"}
LOCKS = "_locks"
OWNED_FOLDERS = {"_parts", "_sources", LOCKS, PREDICTIONS, "rejects"}
_OWNED_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^.]+\.part$")  # atomic_path's and PartWriter's
_UNIT_FILE = re.compile(
    r"^(?P<unit>part-[0-9a-f]{12}-\d{6}|report|plan)\.(parquet|csv|json|jsonl|lock)$|^[0-9a-f]{12}\.(json|lock)$")
REPORT_LOCK = "report"  # held while the report files are written
PLAN_LOCK = "plan"  # held while a task checks --out against its plan (and writes it)


def _lock_path(out: Path, name: str) -> Path:
    return out / LOCKS / f"{name}.lock"


def _remove_temporaries(out: Path, unit: str | None = None) -> None:
    """Temporary files that no live process is writing: each belongs to a unit (or the report) whose
    lock is free. With `unit`, only that unit's (the caller holds its lock)."""
    for folder in (out, out / PREDICTIONS, out / "rejects", out / "_parts", out / "_sources"):
        for tmp in folder.glob(".*.part"):
            m = _OWNED_TEMPORARY.match(tmp.name)
            owner = _UNIT_FILE.match(m.group("name")) if m else None
            name = owner.group("unit") if owner and owner.group("unit") else REPORT_LOCK
            if unit is not None:
                if name == unit:
                    tmp.unlink(missing_ok=True)
                continue
            with locked(_lock_path(out, name), wait=False) as free:
                if free:
                    tmp.unlink(missing_ok=True)


def _ours(p: Path) -> bool:
    """A file or folder of --out that a scoring job writes (or its temporary)."""
    if p.is_dir():
        return p.name in OWNED_FOLDERS and all(c.is_file() and _unit_file(c.name) for c in p.iterdir())
    m = _OWNED_TEMPORARY.match(p.name)
    return (m.group("name") if m else p.name) in OWNED_FILES


def _unit_file(name: str) -> bool:
    m = _OWNED_TEMPORARY.match(name)
    return _UNIT_FILE.match(m.group("name") if m else name) is not None


def _window(chunk: Chunk, rows: int) -> Iterator[Chunk]:
    """Split a CSV block into windows of `rows` rows (rejects ride with the first)."""
    b = chunk.batch
    if b.num_rows <= rows:
        yield chunk
        return
    for k, off in enumerate(range(0, b.num_rows, rows)):
        yield Chunk(b.slice(off, rows), chunk.first_row + off, chunk.rejects if k == 0 else [])


def finish(job: ScoreJob, wall0: float) -> dict:
    """Peak memory of every process; then, on the main process, the report, manifest and `_SUCCESS`."""
    accelerator = job.accelerator
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if accelerator.device.type == "cuda" else 0.0
    peaks = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, gpu_mb],
                         device=accelerator.device)
    peak, peak_gpu = accelerator.reduce(peaks, "max").tolist()
    steady = accelerator.reduce(torch.tensor([job.steady.rate()], device=accelerator.device), "sum").item()
    accelerator.wait_for_everyone()
    report = None
    if accelerator.is_main_process:
        _remove_temporaries(job.out)  # e.g. a killed --shard task's: nobody holds their units now
        with locked(_lock_path(job.out, REPORT_LOCK)):
            report = _write_report(job, wall0, {"peak_rss_mb": peak, "peak_gpu_mb": peak_gpu or None}, steady)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report if report is not None else {}


def _write_report(job: ScoreJob, wall0: float, peaks: dict, steady: float) -> dict:
    """Check every unit committed, sum the sidecars, write the report, the manifest and `_SUCCESS`."""
    from spamjob import report as rep

    cfg, out = job.cfg, job.out
    total, per_input, parts, missing = Counts(), {}, [], []
    for inp in job.inputs:
        c_in = Counts()
        for i in range(_unit_count(job, inp)):
            unit = Unit(inp.source, i)
            side = out / "_parts" / f"{unit.name}.json"
            if not side.is_file():
                missing.append(unit.name)
                continue
            info = read_json(side)
            c_in += Counts.from_dict(info["counts"])
            parts.append({"part": info["part"], "source": inp.source.path, "unit": i, "rows": info["rows"],
                          "rejects": info["rejects"]})
        per_input[inp.source.path] = c_in
        total += c_in
    if missing:
        if cfg.shard is not None:  # other tasks are still at work: the last one writes the report
            return {"pending": f"shard {cfg.shard} done; {len(missing)} unit(s) of other shards still to come; "
                               f"the last task to finish writes {out / 'report.md'} and _SUCCESS"}
        raise SpamjobError(f"{len(missing)} work unit(s) have no committed part (e.g. {missing[0]}); rerun the same command")
    wall = time.perf_counter() - wall0
    extra = {
        "wall_time_s": round(wall, 3),
        "rows_per_s": round(total.rows_read / wall, 2) if wall else None,
        "steady_rows_per_s": round(steady, 2) if steady else None,  # after each process's first window
        "num_processes": job.accelerator.num_processes,
        "threads": job.threads,
        "model": job.plan["model"],
        "mixed_precision": job.scorer.mixed_precision,
        "quantize": cfg.quantize,
        "threshold": threshold_record(job.scorer.classifier.config, cfg.threshold),
        **padding_note(job.scorer.classifier),
        "csv_read_whole": {i.source.path: r["reason"] for i in job.inputs
                           if "reason" in (r := _source_record(job, i.source))} or None,
        **{k: round(v, 1) if v else None for k, v in peaks.items()},  # per process, the largest
        "output": {"folder": str(out.resolve()), "format": cfg.format, "parts": len(parts),
                   "columns": job.schema.names, "filled_with_nulls": _filled_with_nulls(job)},
        "spamjob_version": __version__,
    }
    if job.agreement is not None:
        extra["quantization_agreement"] = job.agreement.report()
    report = rep.build(total, per_input, extra)
    rep.write(out, report)
    write_json(out / "_manifest.json", {"plan": job.plan, "parts": parts, "rows": total.rows_read,
                                        "rejected": sum(total.rejected.values())})
    with atomic_path(out / "_SUCCESS") as tmp:
        tmp.write_text("")
    return report


def padding_note(clf) -> dict:
    """For a `last`-pooling classifier (the reference recipe): why its scoring costs several times more."""
    if clf.padding != "fixed":
        return {}
    return {"padding_note": f"every row is padded to max_length {clf.max_length}: this classifier reads the last "
                            "padded position (`last` pooling, the reference recipe), so scoring costs several times "
                            "the compute of a `last-token` classifier (about max_length / mean message length)"}


def _filled_with_nulls(job: ScoreJob) -> dict[str, list[str]]:
    """Per input, the output columns it does not have (null in its rows)."""
    kept = [f.name for f in job.schema if f.name not in OUTPUT_COLUMNS]
    missing = {i.source.path: [c for c in kept if c not in i.kept_names(job.renamed)]
               for i in job.inputs if i.columns is not None}
    return {path: cols for path, cols in missing.items() if cols}


def _unit_count(job: ScoreJob, inp: Input) -> int:
    """Units of an input: its row groups (Parquet), its byte blocks (a CSV file read in blocks), its
    blocks as recorded when read (a CSV file read whole), 1 if empty."""
    if inp.columns is None:
        return 1
    if inp.source.kind == "parquet":
        return len(parquet_units(inp.source))
    return _split_blocks(job, inp) or _source_record(job, inp.source).get("units", 1)


def summary(report: dict, out: str) -> str:
    r = report["rows"]
    acc = f"; accuracy {report['accuracy'] * 100:.2f}%" if report.get("accuracy") is not None else ""
    return (f"scored {r['scored']:,} of {r['read']:,} rows ({r['flagged']:,} flagged, {r['rejected']:,} rejected lines)"
            f"{acc} in {report['wall_time_s']:.1f} s ({report['rows_per_s']:,.1f} rows/s), "
            f"{workers(report)}; report: {Path(out) / 'report.md'}")
