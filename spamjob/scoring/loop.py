"""The scoring loop of one process: its units through a chain of stages, each in a thread of its
own so that they overlap (spamjob.scoring.stages): reading and tokenizing run ahead across
units, the model launches window k+1 before window k is collected, and the writer thread writes
each window's table and commits a unit after its last write, still under the unit's lock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from spamjob.faults import kill_point, pause_point
from spamjob.scoring.columns import labels_of, utf8_column
from spamjob.scoring.core import Window
from spamjob.scoring.parts import PartWriter
from spamjob.scoring.report import Counts, count_rows
from spamjob.scoring.runtimes import AGREEMENT_SAMPLE
from spamjob.scoring.schema import conform
from spamjob.scoring.setup import Input, ScoreJob
from spamjob.scoring.source import Chunk
from spamjob.scoring.stages import SerialWorker, prefetch
from spamjob.scoring.units import Unit, input_of, plan_units


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
    writer, current, pending, ended = SerialWorker(), None, None, []  # ended: units whose last window may be pending
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
        cols, batch = input_of(job, item.unit).columns, item.chunk.batch
        item.window = job.scorer.prepare(batch.column(cols.text))
        item.labels = labels_of(batch.column(cols.label)) if cols.label and batch.num_rows else None
    return item


class OpenUnit:
    """A unit being scored: held under its lock (a concurrent run on the same --out waits, then finds
    it committed), its part written under a temporary name, its counts and rejects."""

    def __init__(self, job: ScoreJob, unit: Unit):
        self.unit, self.inp = unit, input_of(job, unit)
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(job.out.lock(unit.name))
        self.done_before = job.out.committed(unit.name, unit.where)  # by another run, while this one waited
        if not self.done_before:
            job.out.remove_temporaries(unit.name)  # a dead process's leftovers of this unit
        self.part = job.out.part_writer(unit.name, job.cfg.format)
        self.counts, self.rejects = Counts(), []

    def commit(self, job: ScoreJob) -> None:
        """Part, rejects, sidecar (the writer thread, after the unit's last write); then the lock goes.
        A byte block commits under its file's lock, and not at all once the file fell back: checked
        again after its commit, where a store without locks lets a fall-back land in between."""
        unit = self.unit
        with job.out.lock(unit.source.key) if unit.byte_block else contextlib.nullcontext():
            if unit.byte_block and "reason" in job.out.source_record(unit.source.key):
                self.part.abort()
            elif not self.done_before:
                counts = self.counts.to_dict()
                job.out.commit(unit.name, unit.where, self.part, job.schema, self.rejects, counts, job.run_number)
                if unit.byte_block and "reason" in job.out.source_record(unit.source.key):
                    job.out.uncommit(unit.name)
        self._lock.close()

    def abort(self) -> None:
        self.part.abort()
        self._lock.close()


def _collect(job: ScoreJob, pending: tuple | None, writer: SerialWorker, ended: list[OpenUnit]) -> None:
    """Window k back from the device: counted, its table built and handed to the writer; then the
    commits of the units that have ended (their last window was this one, or they had none)."""
    if pending is not None:
        unit, item, launched = pending
        unit.rejects += item.chunk.rejects
        for r in item.chunk.rejects:
            unit.counts.rejected[r["reason"]] += 1
        table = _output_table(job, item, unit.inp, launched.result(), unit.counts)
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


def _output_table(job: ScoreJob, item: Item, inp: Input, probs: np.ndarray, counts: Counts) -> pa.Table:
    """Count a predicted window and build its output table (kept columns + the four new ones)."""
    window = item.window
    if job.agreement is not None and job.agreement.rows == 0 and len(window.ids):
        ref = job.scorer.reference(window.ids.take(np.arange(min(AGREEMENT_SAMPLE, len(window.ids)))))
        job.agreement.rows = len(ref)
        t = job.scorer.threshold
        job.agreement.same = int(((ref > t) == (probs[: len(ref)] > t)).sum())
        job.agreement.max_abs_diff = float(np.abs(ref - probs[: len(ref)]).max())
    new = job.scorer.output_columns(window, probs)
    counts += count_rows(new, item.labels, window.token_lengths())
    n, mine = window.num_rows, inp.kept_names(job.renamed)
    kept = {
        f.name: _kept(item.chunk.batch.column(mine[f.name]), f.type) if f.name in mine else pa.nulls(n, f.type)
        for f in job.schema
        if f.name not in new
    }
    return pa.table({**kept, **new}, schema=job.schema)


def _kept(values: pa.Array, to: pa.DataType) -> pa.Array:
    """A kept column in the output's type: exactly (bit for bit where the type is its own); bytes
    (CSV fields are read as bytes, so that bad bytes never crash the reader) as text where the
    output's column is text, invalid bytes replaced by U+FFFD."""
    if pa.types.is_large_string(to):
        values = utf8_column(values)
    return conform(values, to)
