"""Work units and who does each: a Parquet row group, a byte block of a large CSV file, or a
block of a CSV file read whole (Arrow's streaming reader); an empty file is one empty unit.

Units are deterministic and dealt round-robin to every process of every --shard task, so each
is done exactly once; a unit committed before (spamjob.scoring.output) is skipped. A CSV file
whose byte blocks fail their check falls back to being read whole (spamjob.scoring.csv_reader).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from spamjob.scoring.csv_reader import BlockError, block_count, iter_csv_blocks, read_block
from spamjob.scoring.parquet import iter_parquet_unit, parquet_units
from spamjob.scoring.setup import Input, ScoreJob
from spamjob.scoring.source import Chunk, Source


@dataclass(frozen=True)
class Unit:
    """One work unit: a Parquet row group or a CSV block of one input; its part is named after it."""

    source: Source
    index: int
    byte_block: bool = False  # a byte block of a CSV file, read on its own (spamjob.scoring.csv_reader)

    @property
    def name(self) -> str:
        return f"part-{self.source.key}-{self.index:06d}"

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
        if inp.source.kind == "csv" and inp.columns is not None and inp.source.path not in in_blocks:
            yield from _csv_units(job, inp, job.inputs.index(inp))


def _fixed_units(job: ScoreJob, inp: Input, in_blocks: bool) -> list[Unit]:
    if inp.columns is None:
        return [Unit(inp.source, 0)]
    if inp.source.kind == "parquet":
        return [Unit(inp.source, g) for g in parquet_units(inp.source)]
    return [Unit(inp.source, k, byte_block=True) for k in range(block_count(inp.source, job.csv))] if in_blocks else []


def _chunks(job: ScoreJob, inp: Input, unit: Unit) -> Iterator[Chunk]:
    if inp.columns is None:
        return iter(())
    if unit.byte_block:
        return _block_chunks(job, inp, unit)
    cols = inp.columns
    needed = list(dict.fromkeys([*cols.keep, cols.text, *([cols.label] if cols.label else [])]))
    return iter_parquet_unit(inp.source, unit.index, needed, job.cfg.window_rows)


def _block_chunks(job: ScoreJob, inp: Input, unit: Unit) -> Iterator[Chunk]:
    """The windows of a byte block; when its check fails, the file falls back to being read whole
    (the unit then commits nothing)."""
    if not byte_blocks(job, inp):  # another process's block failed its check
        return
    try:
        chunk = read_block(inp.source, job.csv, inp.schema.names, _binary_types(inp), unit.index)
    except BlockError as e:
        fall_back(job, inp.source, str(e))
        return
    yield from windows_of(chunk, job.cfg.window_rows)


def _binary_types(inp: Input) -> dict[str, pa.DataType]:
    return {name: pa.binary() for name in inp.schema.names}  # decoded per value: bad bytes never crash


def _csv_units(job: ScoreJob, inp: Input, si: int) -> Iterator[tuple[Unit, Iterator[Chunk]]]:
    """The blocks of a CSV file read whole that are this process's; records the file's unit count
    when read. A file that fell back from byte blocks is dealt over this task's processes only, so
    that each --shard task finishes it whatever the others do (the unit locks keep it done once)."""
    record = job.out.source_record(inp.source.key)
    me, total = (
        (job.accelerator.process_index, job.accelerator.num_processes) if "reason" in record else (job.me, job.total)
    )
    n_blocks = 0
    for block, chunk in iter_csv_blocks(inp.source, job.csv, _binary_types(inp)):
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
    """Byte blocks of a CSV input read in blocks; 0 when it is read whole (always, or since a block's
    check failed: its `_sources` record says why)."""
    if inp.source.kind != "csv" or inp.columns is None or "reason" in job.out.source_record(inp.source.key):
        return 0
    return block_count(inp.source, job.csv)


def fall_back(job: ScoreJob, source: Source, reason: str) -> None:
    """Mark a CSV file to be read whole and uncommit its byte blocks, under the file's lock (which the
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
    """Units of an input: its row groups (Parquet), its byte blocks (a CSV file read in blocks), its
    blocks as recorded when read (a CSV file read whole), 1 if empty."""
    if inp.columns is None:
        return 1
    if inp.source.kind == "parquet":
        return len(parquet_units(inp.source))
    return byte_blocks(job, inp) or job.out.source_record(inp.source.key).get("units", 1)


def windows_of(chunk: Chunk, rows: int) -> Iterator[Chunk]:
    """Split a CSV block into windows of `rows` rows (rejects ride with the first)."""
    b = chunk.batch
    if b.num_rows <= rows:
        yield chunk
        return
    for k, off in enumerate(range(0, b.num_rows, rows)):
        yield Chunk(b.slice(off, rows), chunk.first_row + off, chunk.rejects if k == 0 else [])


def input_of(job: ScoreJob, unit: Unit) -> Input:
    return next(i for i in job.inputs if i.source == unit.source)
