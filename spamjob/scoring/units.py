"""Work units and who does each, whatever the format (spamjob.scoring.formats): the units known
before reading (a Parquet row group, a byte block of a large CSV file), or those of a file read
whole, known as it is read (the blocks of Arrow's streaming CSV reader); an empty file is one
empty unit.

Units are deterministic and dealt round-robin to every process of every --shard task, so each
is done exactly once; a unit committed before (spamjob.scoring.output) is skipped. A file whose
unit fails its check (`ReadWhole`: a CSV byte block) falls back to being read whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from spamjob.scoring import formats
from spamjob.scoring.output.names import unit_name
from spamjob.scoring.setup import Input, ScoreJob
from spamjob.scoring.source import Chunk, ReadWhole, Source, windows_of


@dataclass(frozen=True)
class Unit:
    """One work unit of one input (a Parquet row group, a CSV block); its part is named after it."""

    source: Source
    index: int
    byte_block: bool = False  # read on its own from a file that can also be read whole (a CSV byte block)

    @property
    def name(self) -> str:
        return unit_name(self.source.key, self.index)

    @property
    def where(self) -> dict:
        """What its sidecar records of it (a byte block and a block of a file read whole share a name)."""
        return {"source": self.source.path, "unit": self.index, "byte_block": self.byte_block}


def plan_units(job: ScoreJob, inputs: list[Input]) -> Iterator[tuple[Unit, Iterator[Chunk]]]:
    """This process's units of `inputs` not committed before, each with its chunks (read lazily).

    Units known before reading (Parquet row groups, byte blocks of CSV files read in blocks, the
    one unit of an empty file) are dealt round-robin over all inputs; the blocks of a CSV file read
    whole round-robin within the file (their number is known only once it is read). A file whose
    blocks fail their check in this round is read whole in the next (`main`): a block and a whole
    file's block of the same index share a unit name and lock.
    """
    in_blocks = {inp.source.path for inp in inputs if byte_blocks(job, inp)}  # once: a fall-back waits for round 2
    fixed = [(inp, unit) for inp in inputs for unit in _fixed_units(job, inp, inp.source.path in in_blocks)]
    for k, (inp, unit) in enumerate(fixed):
        if k % job.total == job.me and not job.out.committed(unit.name, unit.where):
            yield unit, _chunks(job, inp, unit)
    for inp in inputs:
        if _streamed(job, inp) and inp.source.path not in in_blocks:
            yield from _streamed_units(job, inp, job.inputs.index(inp))


def _fixed_units(job: ScoreJob, inp: Input, in_blocks: bool) -> list[Unit]:
    if inp.columns is None:
        return [Unit(inp.source, 0)]
    fmt = formats.of(inp.source)
    if fmt.streams and not in_blocks:  # (decided once per round, so that every process deals the same list)
        return []
    return [Unit(inp.source, k, byte_block=fmt.streams) for k in range(fmt.unit_count(inp.source, job.csv))]


def _streamed(job: ScoreJob, inp: Input) -> bool:
    return inp.columns is not None and formats.of(inp.source).streams


def _chunks(job: ScoreJob, inp: Input, unit: Unit) -> Iterator[Chunk]:
    """The windows of a unit read on its own; when a byte block fails its check, its file falls back
    to being read whole (the unit then commits nothing)."""
    if inp.columns is None or (unit.byte_block and not byte_blocks(job, inp)):  # (another's block failed)
        return
    cols = inp.columns
    needed = list(dict.fromkeys([*cols.keep, cols.text, *([cols.label] if cols.label else [])]))
    read = formats.of(inp.source).read_unit
    try:
        yield from read(inp.source, unit.index, inp.schema, needed, job.csv, job.cfg.window_rows)
    except ReadWhole as e:
        fall_back(job, inp.source, str(e))


def _streamed_units(job: ScoreJob, inp: Input, si: int) -> Iterator[tuple[Unit, Iterator[Chunk]]]:
    """The units of a file read whole that are this process's; records the file's unit count when
    read. A file that fell back from byte blocks is dealt over this task's processes only, so that
    each --shard task finishes it whatever the others do (the unit locks keep it done once)."""
    record = job.out.source_record(inp.source.key)
    me, total = (
        (job.accelerator.process_index, job.accelerator.num_processes) if "reason" in record else (job.me, job.total)
    )
    n_blocks = 0
    for block, chunk in formats.of(inp.source).stream(inp.source, job.csv, inp.schema):
        n_blocks = block + 1
        unit = Unit(inp.source, block)
        if (si + block) % total == me and not job.out.committed(unit.name, unit.where):
            yield unit, windows_of(chunk, job.cfg.window_rows)
    empty = Unit(inp.source, 0)
    if n_blocks == 0 and si % total == me and not job.out.committed(empty.name, empty.where):
        yield empty, iter(())
    if job.accelerator.is_main_process:
        job.out.record_source(inp.source.key, {**record, "path": inp.source.path, "units": max(n_blocks, 1)})


def byte_blocks(job: ScoreJob, inp: Input) -> int:
    """Units read on their own of an input that can also be read whole (a CSV file's byte blocks); 0
    when it is read whole (always, or since a unit's check failed: its `_sources` record says why)."""
    if not _streamed(job, inp) or "reason" in job.out.source_record(inp.source.key):
        return 0
    return formats.of(inp.source).unit_count(inp.source, job.csv)


def fall_back(job: ScoreJob, source: Source, reason: str) -> None:
    """Mark a file to be read whole and uncommit its byte blocks, under the file's lock (which the
    commit of a byte block takes too, so that none commits after this)."""
    with job.out.lock(source.key):
        # Another task's may have done it already: then its whole-file units may be here.
        if "reason" not in job.out.source_record(source.key):
            job.out.uncommit_source(source.key, reason, source.path)


def units_of(job: ScoreJob, inp: Input) -> list[Unit]:
    """Every unit of an input, as its sidecar names it (byte blocks while the file is read in blocks)."""
    in_blocks = bool(byte_blocks(job, inp))
    return [Unit(inp.source, i, byte_block=in_blocks) for i in range(unit_count(job, inp))]


def unit_count(job: ScoreJob, inp: Input) -> int:
    """Units of an input: those known before reading (Parquet row groups, the byte blocks of a CSV
    file read in blocks), else as recorded when the file was read whole; 1 if empty."""
    if inp.columns is None:
        return 1
    if not _streamed(job, inp):
        return formats.of(inp.source).unit_count(inp.source, job.csv)
    return byte_blocks(job, inp) or job.out.source_record(inp.source.key).get("units", 1)


def input_of(job: ScoreJob, unit: Unit) -> Input:
    return next(i for i in job.inputs if i.source == unit.source)
