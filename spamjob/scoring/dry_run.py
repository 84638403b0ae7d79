"""`spamjob score --dry-run`: what a job would score and how long it would take on this machine,
with nothing scored into --out and nothing written.

Each input's work units and rows come from metadata (Parquet) or its size (an uncompressed CSV
file: its bytes over the bytes per row of its first rows; a compressed one is read through and
counted); with --incremental, only the files no earlier run committed. A sample of the rows to
score (SAMPLE_ROWS, spread over the inputs) is tokenized for its token counts, and the runtime the
job would choose is calibrated on it for a few seconds (CALIBRATION_S, after one warm-up window):
the expected time is the start-up this run measured plus the rows over that rate, and per process
for N --shard tasks or N ranks each on a machine like this one.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spamjob.scoring import formats
from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.core import BatchScorer
from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.output import open_output
from spamjob.scoring.output.names import unit_name
from spamjob.scoring.setup import Input, read_inputs, scorer_for
from spamjob.threads import apply_threads

SAMPLE_ROWS = 4096  # rows tokenized for token counts, and scored for the calibration
CALIBRATION_S = 3.0  # seconds of timed scoring after the warm-up window
WINDOW = 512  # rows per calibration window


@dataclass
class Planned:
    """One input as a dry run sees it."""

    path: str
    units: int
    rows: int
    exact: bool  # rows from metadata, or counted; False: estimated from the size
    new: bool = True  # --incremental: not committed by an earlier run


def main(cfg: ScoreConfig) -> dict:
    """The dry run's findings (`lines` prints them); {} on processes other than the first (one of
    `accelerate launch`'s ranks does it for all)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    t0 = time.perf_counter()
    csv = CsvOptions(cfg.delimiter, cfg.encoding, cfg.block_mb << 20, in_blocks=cfg.csv_blocks == "auto")
    inputs, _ = read_inputs(cfg, csv)
    out = open_output(cfg.out) if cfg.incremental else None
    samples = {i.source.path: _first_rows(i, csv) for i in inputs if i.columns is not None}
    planned = [_plan(i, csv, samples.get(i.source.path), out) for i in inputs]
    todo = [i for i, p in zip(inputs, planned) if p.new and i.columns is not None]
    texts = _spread([samples[i.source.path][0] for i in todo], SAMPLE_ROWS)
    threads = apply_threads(cfg.threads, workers=not cfg.compile)
    # (the sample is scored again and again: without dedup, each time at full cost)
    scorer = scorer_for(cfg, None, threads.get("workers", 1), dedup=False)
    try:
        startup = time.perf_counter() - t0
        lengths = np.asarray(scorer.tokenize(texts).lengths) if texts else np.empty(0)
        rate, seconds = _calibrate(scorer, texts)
        runtime = {**scorer.runtime_record, "precision": scorer.precision, "workers": threads.get("workers", 1)}
    finally:
        scorer.close()
    rows = sum(p.rows for p in planned if p.new)
    return {
        "dry_run": True,
        "inputs": [p.__dict__ for p in planned],
        "rows_to_score": rows,
        "units_to_score": sum(p.units for p in planned if p.new),
        "tokens": _token_stats(lengths, scorer.classifier.max_length),
        "calibration": {"rows_per_s": rate, "seconds": round(seconds, 2), "runtime": runtime},
        "startup_s": round(startup, 2),
        "expected_s": round(startup + (rows / rate if rate else 0.0), 1),
        "shards": cfg.shard,
    }


def _plan(inp: Input, csv: CsvOptions, sample, out) -> Planned:
    """Units and rows of an input (rows estimated from a CSV file's size), and whether it is new."""
    src, fmt = inp.source, formats.of(inp.source)
    new = out is None or not _committed(out, src)
    if inp.columns is None:
        return Planned(src.path, 1, 0, True, new)
    units = fmt.unit_count(src, csv) or 1
    if (rows := fmt.rows(src)) is not None:
        return Planned(src.path, units, rows, True, new)
    if src.compression is not None:  # its size says nothing of its rows: read through, counted
        counted = sum(chunk.batch.num_rows for _, chunk in fmt.stream(src, csv, inp.schema))
        return Planned(src.path, units, counted, True, new)
    texts, row_bytes = sample
    estimate = round(src.size / row_bytes) if row_bytes else len(texts)
    return Planned(src.path, units, estimate, len(texts) == estimate, new)


def _committed(out, src) -> bool:
    """An earlier incremental run committed this version of the file (the sidecar of its first
    unit: a file that a killed run left half done counts as new, whole)."""
    info = out.sidecar(unit_name(src.key, 0))
    return info is not None and info.get("source") == src.path


def _first_rows(inp: Input, csv: CsvOptions) -> tuple[list[str], float]:
    """The texts of an input's first unit (at most SAMPLE_ROWS), and its bytes per row in a CSV file."""
    src, fmt, cols = inp.source, formats.of(inp.source), inp.columns
    if fmt.streams:
        chunk = next((c for _, c in itertools.islice(fmt.stream(src, csv, inp.schema), 1)), None)
    else:
        chunk = next(iter(fmt.read_unit(src, 0, inp.schema, [cols.text], csv, SAMPLE_ROWS)), None)
    if chunk is None or chunk.batch.num_rows == 0:
        return [], 0.0
    batch = chunk.batch
    texts = [
        t if isinstance(t, str) else (t or b"").decode("utf-8", "replace")
        for t in batch.column(cols.text).slice(0, SAMPLE_ROWS).to_pylist()
    ]
    row_bytes = 0.0
    if not fmt.typed:  # CSV fields are read as bytes: their lengths, plus a delimiter or newline each
        lengths = [pc.sum(pc.binary_length(col)).as_py() or 0 for col in batch.columns]
        row_bytes = (sum(lengths) + batch.num_rows * batch.num_columns) / batch.num_rows
    return [t for t in texts if t and t.strip()], row_bytes


def _spread(per_input: list[list[str]], n: int) -> list[str]:
    """At most n texts, taken in turn from each input's sample."""
    mixed = [t for group in itertools.zip_longest(*per_input) for t in group if t is not None]
    return mixed[:n]


def _calibrate(scorer: BatchScorer, texts: list[str]) -> tuple[float, float]:
    """Rows per second of `scorer` on windows of the sample (tokenizing included), after one
    warm-up window; (0, 0) without a sample."""
    if not texts:
        return 0.0, 0.0
    cycle = itertools.cycle(texts)

    def window(n: int) -> None:
        scorer.predict(scorer.prepare(pa.array([next(cycle) for _ in range(n)], pa.large_string())))

    window(min(WINDOW, len(texts)))
    rows, t0 = 0, time.perf_counter()
    while rows == 0 or time.perf_counter() - t0 < CALIBRATION_S:
        window(WINDOW)
        rows += WINDOW
    seconds = time.perf_counter() - t0
    return round(rows / seconds, 1), seconds


def _token_stats(lengths: np.ndarray, max_length: int) -> dict:
    if not len(lengths):
        return {"sampled": 0}
    return {
        "sampled": len(lengths),
        "mean": round(float(lengths.mean()), 1),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "truncated_share": round(float((lengths > max_length).mean()), 4),
    }


def lines(found: dict) -> list[str]:
    """What `spamjob score --dry-run` prints."""
    inputs = found["inputs"]
    new = [p for p in inputs if p["new"]]
    estimated = sum(p["rows"] for p in new if not p["exact"])
    first = (
        f"dry run (nothing scored, nothing written): {len(new)} of {len(inputs)} file(s) to score, "
        f"{found['units_to_score']:,} work unit(s), {found['rows_to_score']:,} rows"
        + (f" ({estimated:,} estimated from CSV sizes)" if estimated else "")
    )
    out = [first]
    out += [
        f"  {p['path']}: {p['units']} unit(s), {p['rows']:,} rows{'' if p['exact'] else ' (estimated)'}" for p in new
    ]
    t = found["tokens"]
    if t["sampled"]:
        out.append(
            f"tokens per row (sample of {t['sampled']:,}): mean {t['mean']}, p50 {t['p50']}, p95 {t['p95']}, "
            f"max {t['max']}; truncated {t['truncated_share'] * 100:.1f}%"
        )
    cal = found["calibration"]
    rt = cal["runtime"]
    out.append(
        f"calibration: {rt.get('name', 'torch')} {rt['precision']}, {rt['workers']} model worker(s): "
        f"{cal['rows_per_s']:,.1f} rows/s ({cal['seconds']:.1f} s)"
    )
    rows, rate, start = found["rows_to_score"], cal["rows_per_s"], found["startup_s"]
    out.append(f"expected: {_duration(found['expected_s'])} on this machine ({_duration(start)} of it start-up)")
    n = int(found["shards"].split("/")[1]) if found["shards"] else 2
    if rate:
        out.append(
            f"per process with --shard K/{n} or {n} ranks, each on a machine like this: "
            f"{_duration(start + rows / n / rate)}"
        )
    return out


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{s} s")
