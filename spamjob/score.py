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

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from spamjob import __version__
from spamjob.config import ScoreConfig, resolve_mixed_precision
from spamjob.errors import SpamjobError
from spamjob.faults import kill_point
from spamjob.fsutil import atomic_path, read_json, write_json
from spamjob.columns import Columns, as_strings, labels_of, resolve_columns, utf8_column
from spamjob.io import Chunk, CsvOptions, PartWriter, Source, discover, iter_csv_blocks, iter_parquet_unit, \
    parquet_layout, schema_of
from spamjob.predict import Predictor, TokenizerPool, prefetch
from spamjob.report import BINS, Counts

PLAN = "_plan.json"
PREDICTIONS = "predictions"  # the parts: one Parquet/CSV dataset


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    source: Source
    index: int

    @property
    def name(self) -> str:
        return f"part-{self.source.key}-{self.index:06d}"


def _prepare_window(chunk: Chunk, cols: Columns, tokenize: TokenizerPool) -> dict:
    """Text, flags, labels and token ids of one record batch (runs in the prefetch thread)."""
    batch = chunk.batch
    texts, bad = as_strings(batch.column(cols.text)) if batch.num_rows else ([], [])
    errors: list[str | None] = []
    for t, b in zip(texts, bad):
        if t is None:
            errors.append("null text")
        elif b:
            errors.append("invalid UTF-8 in text")
        elif not t.strip():
            errors.append("empty text")
        else:
            errors.append(None)
    ok = [i for i, e in enumerate(errors) if e is None]
    ids = tokenize([texts[i] for i in ok]) if ok else []
    labels = labels_of(batch.column(cols.label)) if cols.label and batch.num_rows else None
    return {"chunk": chunk, "errors": errors, "ok": ok, "ids": ids, "labels": labels}


def _score_window(w: dict, cols: Columns, predict: Predictor, max_length: int, counts: Counts,
                  agreement: dict | None) -> pa.Table:
    """Predict one window and build its output table (input columns + the four new ones)."""
    chunk, errors, ok, ids = w["chunk"], w["errors"], w["ok"], w["ids"]
    n = chunk.batch.num_rows
    probs = predict(ids)
    if agreement is not None and agreement.get("reference") is not None and ids:
        ref = agreement["reference"](ids[:512])  # a sample: the fp32 pass costs what it measures
        agreement["rows"] += len(ref)
        agreement["same"] += int(((ref > 0.5) == (probs[: len(ref)] > 0.5)).sum())
        agreement["max_abs_diff"] = max(agreement["max_abs_diff"], float(np.abs(ref - probs[: len(ref)]).max()))
        agreement["reference"] = None  # one window is enough
    spam_prob = np.full(n, np.nan)
    spam_prob[ok] = probs
    truncated = np.zeros(n, dtype=bool)
    truncated[ok] = [len(s) > max_length for s in ids]
    predicted = spam_prob > 0.5  # argmax of the two logits (ties go to ham, as in training)
    scored = np.zeros(n, dtype=bool)
    scored[ok] = True

    counts.rows_read += n
    counts.rows_scored += len(ok)
    counts.predicted_spam += int(predicted[scored].sum())
    counts.truncated += int(truncated.sum())
    for e in errors:
        if e is not None:
            counts.flagged[e] += 1
    if len(ok):
        hist = np.minimum((probs * BINS).astype(np.int64), BINS - 1)
        counts.histogram = [a + int(b) for a, b in zip(counts.histogram, np.bincount(hist, minlength=BINS))]
    if w["labels"] is not None:
        for i in ok:
            y = w["labels"][i]
            if y is None:
                counts.unknown_labels += 1
            else:
                counts.labeled += 1
                counts.confusion[y][int(predicted[i])] += 1
        counts.unknown_labels += sum(1 for i, e in enumerate(errors) if e is not None and w["labels"][i] is None)

    table = pa.table({c: utf8_column(chunk.batch.column(c)) for c in cols.keep}) if cols.keep else pa.table({})
    labels = np.where(predicted, "spam", "ham").astype(object)
    labels[~scored] = None
    table = table.append_column("prediction", pa.array(labels, type=pa.string()))
    table = table.append_column("spam_probability", pa.array(spam_prob, type=pa.float64(), mask=~scored))
    table = table.append_column("truncated", pa.array(truncated))
    return table.append_column("error", pa.array(errors, type=pa.string()))


def _output_schema(source: Source, schema: pa.Schema | None, cols: Columns | None) -> pa.Schema:
    fields = []
    for c in cols.keep if cols is not None else ():
        f = schema.field(c)
        fields.append(pa.field(c, pa.large_string()) if source.kind == "csv" else f)
    return pa.schema(fields + [pa.field("prediction", pa.string()), pa.field("spam_probability", pa.float64()),
                               pa.field("truncated", pa.bool_()), pa.field("error", pa.string())])


def _commit(out: Path, unit: Unit, writer: PartWriter, schema: pa.Schema, counts: Counts, rejects: list[dict],
            fmt: str) -> None:
    """Part, then rejects, then the sidecar: a unit without its sidecar is redone on rerun."""
    writer.commit(schema)
    rejects_name = None
    if rejects:
        rejects_name = f"rejects/{unit.name}.jsonl"
        with atomic_path(out / rejects_name) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rejects))
    write_json(out / "_parts" / f"{unit.name}.json", {
        "source": unit.source.path, "unit": unit.index, "part": f"{PREDICTIONS}/{unit.name}.{fmt}", "rows": writer.rows,
        "rejects": rejects_name, "counts": counts.to_dict(),
    })


# --------------------------------------------------------------------------- run


def _shard(cfg: ScoreConfig) -> tuple[int, int]:
    if cfg.shard is None:
        return 0, 1
    k, n = cfg.shard.split("/")
    return int(k), int(n)


def _check_plan(out: Path, plan: dict, overwrite: bool, shared: bool = False) -> None:
    """Same plan: resume. Other plan or a foreign non-empty folder: error unless --overwrite (which clears it)."""
    plan_path = out / PLAN
    if out.exists() and any(out.iterdir()):
        old = read_json(plan_path) if plan_path.is_file() else None
        if old != plan:
            if not overwrite:
                what = ("was written with another model, other inputs or other options" if old is not None
                        else "is not empty and holds no spamjob scoring plan")
                raise SpamjobError(f"output folder {out} {what}; pass --overwrite to replace it, or choose another --out")
            ours = [p for p in out.iterdir() if _written_by_us(p)]
            foreign = [p for p in out.iterdir() if not _written_by_us(p)]
            if foreign:
                raise SpamjobError(f"--overwrite would delete {foreign[0]}, which spamjob did not write; "
                                   f"clear {out} by hand")
            for p in ours:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "_SUCCESS").unlink(missing_ok=True)
    if not shared:  # with --shard, other tasks' temporaries may be live
        for p in [*out.glob(".*.part"), *out.glob(f"{PREDICTIONS}/.*.part")]:  # temporaries of a killed run
            p.unlink()
    write_json(plan_path, plan)


def _written_by_us(p: Path) -> bool:
    return p.name.startswith(("_", "report.", ".")) or p.name in (PREDICTIONS, "rejects")


def main(cfg: ScoreConfig) -> dict:
    """Score every input; returns the report."""
    from accelerate import Accelerator

    from spamjob.artifact import load_classifier

    wall0 = time.perf_counter()
    gpu = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not gpu)
    rank, world, main_proc = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    out = Path(cfg.out)

    clf = load_classifier(cfg.model)
    sources = discover(cfg.inputs)
    csv = CsvOptions(cfg.delimiter, cfg.encoding, cfg.block_mb << 20)
    schemas = {s.path: schema_of(s, csv) for s in sources}
    columns = {s.path: resolve_columns(s, schemas[s.path], cfg) for s in sources}
    model_fp = {"path": str(Path(cfg.model).resolve()), "sha256": clf.config.get("model_sha256")}
    plan = {"spamjob_version": __version__, "model": model_fp, "inputs": [s.fingerprint() for s in sources],
            "options": cfg.plan_options()}
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        _check_plan(out, plan, cfg.overwrite, shared=cfg.shard is not None)
    accelerator.wait_for_everyone()

    batch_tokens = cfg.batch_tokens or (65536 if gpu else 1024)
    mp = resolve_mixed_precision(cfg.mixed_precision, gpu)
    agreement = None
    if cfg.quantize == "int8":
        if gpu:
            raise SpamjobError("--quantize int8 is for CPU scoring (dynamic int8 kernels); on GPU use bf16")
        reference = Predictor(clf, device, "no", batch_tokens)
        import copy

        quantized = copy.copy(clf)
        quantized.model = torch.ao.quantization.quantize_dynamic(clf.model, {torch.nn.Linear}, dtype=torch.qint8)
        predict = Predictor(quantized, device, "no", batch_tokens)
        agreement = {"reference": reference, "rows": 0, "same": 0, "max_abs_diff": 0.0}
    else:
        predict = Predictor(clf, device, mp, batch_tokens)
    if cfg.compile:
        predict.model = torch.compile(predict.model, dynamic=True)
    workers = cfg.tokenize_workers if cfg.tokenize_workers is not None else (
        min(8, max((os.cpu_count() or 1) // world - 1, 0)) if gpu else 0)
    tokenize = TokenizerPool(clf.tokenizer, Path(cfg.model) / "tokenizer", workers)

    # Units: Parquet row groups dealt round-robin over all inputs; CSV blocks dealt
    # round-robin within each file (their number is known only once the file is read).
    # An empty file (no header, no schema) is one empty unit, so it is still accounted for.
    total_rows = 0
    parquet_jobs: list[Unit] = []
    known_units: dict[str, int] = {}  # per source, where the count is known before reading (not CSV)
    for s in sources:
        if s.kind == "parquet" or columns[s.path] is None:
            groups, rows = parquet_layout(s) if columns[s.path] is not None else (0, 0)
            known_units[s.path] = max(groups, 1)
            parquet_jobs += [Unit(s, i) for i in range(known_units[s.path])]
            total_rows += rows
    # With --shard K/N, this run's processes are ranks K*world .. K*world+world-1 of N*world.
    shard_k, shard_n = _shard(cfg)
    me, total = shard_k * world + rank, shard_n * world
    mine = [u for k, u in enumerate(parquet_jobs) if k % total == me]
    bar = tqdm(total=(total_rows // world) or None, unit="rows", desc=f"scoring (rank {rank})",
               disable=not (cfg.progress and main_proc), leave=False)
    stats = {"units_done": 0, "units_skipped": 0, "windows": 0}

    def done(unit: Unit) -> bool:
        return (out / "_parts" / f"{unit.name}.json").is_file() and (out / PREDICTIONS / f"{unit.name}.{cfg.format}").is_file()

    def run_unit(unit: Unit, chunks: Iterator[Chunk]) -> None:
        cols = columns[unit.source.path]
        schema = _output_schema(unit.source, schemas[unit.source.path], cols)
        if cols is None:
            chunks = iter(())
        writer = PartWriter(out / PREDICTIONS / f"{unit.name}.{cfg.format}", cfg.format)
        counts, rejects = Counts(), []
        try:
            for w in prefetch(_prepare_window(c, cols, tokenize) for c in chunks):
                rejects += w["chunk"].rejects
                for r in w["chunk"].rejects:
                    counts.rejected[r["reason"]] += 1
                table = _score_window(w, cols, predict, clf.max_length, counts, agreement)
                if table.num_rows:
                    writer.write(table.cast(schema))
                bar.update(table.num_rows)
                stats["windows"] += 1
                kill_point("SPAMJOB_KILL_AFTER_WINDOWS", stats["windows"])  # crash tests
            _commit(out, unit, writer, schema, counts, rejects, cfg.format)
        except BaseException:
            writer.abort()
            raise
        stats["units_done"] += 1

    try:
        for unit in mine:
            if done(unit):
                stats["units_skipped"] += 1
                continue
            cols = columns[unit.source.path]
            if cols is None:
                run_unit(unit, iter(()))
                continue
            needed = list(dict.fromkeys([*cols.keep, cols.text, *([cols.label] if cols.label else [])]))
            run_unit(unit, iter_parquet_unit(unit.source, unit.index, needed, cfg.window_rows))
        for si, s in enumerate(sources):
            if s.kind != "csv" or columns[s.path] is None:
                continue
            types = {name: pa.binary() for name in schemas[s.path].names}  # decoded per value: bad bytes never crash
            n_blocks = 0
            for block, chunk in iter_csv_blocks(s, csv, types):
                n_blocks = block + 1
                unit = Unit(s, block)
                if (si + block) % total != me:
                    continue
                if done(unit):
                    stats["units_skipped"] += 1
                    continue
                run_unit(unit, _window(chunk, cfg.window_rows))
            if n_blocks == 0:
                unit = Unit(s, 0)
                if me == si % total and not done(unit):
                    run_unit(unit, iter(()))
            if main_proc:
                write_json(out / "_sources" / f"{s.key}.json", {"path": s.path, "units": max(n_blocks, 1)})
    finally:
        bar.close()
        tokenize.close()

    peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0], device=device)
    peak = accelerator.reduce(peak, "max").item()
    accelerator.wait_for_everyone()
    report = None
    if main_proc:
        report = _finish(out, cfg, sources, known_units, plan, world, wall0, peak, agreement, mp)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report if report is not None else {}


def _window(chunk: Chunk, rows: int) -> Iterator[Chunk]:
    """Split a CSV block into windows of `rows` rows (rejects ride with the first)."""
    b = chunk.batch
    if b.num_rows <= rows:
        yield chunk
        return
    for k, off in enumerate(range(0, b.num_rows, rows)):
        yield Chunk(b.slice(off, rows), chunk.first_row + off, chunk.rejects if k == 0 else [])


def _finish(out: Path, cfg: ScoreConfig, sources: list[Source], known_units: dict[str, int], plan: dict,
            world: int, wall0: float, peak_mb: float, agreement: dict | None, mp: str) -> dict:
    """Check every unit committed, sum the sidecars, write the report, the manifest and `_SUCCESS`."""
    from spamjob import report as rep

    total = Counts()
    per_input: dict[str, Counts] = {}
    parts = []
    missing = []
    for s in sources:
        if s.path in known_units:
            n_units = known_units[s.path]
        else:
            meta = out / "_sources" / f"{s.key}.json"
            n_units = read_json(meta)["units"] if meta.is_file() else 1
        c_in = Counts()
        for i in range(n_units):
            unit = Unit(s, i)
            side = out / "_parts" / f"{unit.name}.json"
            if not side.is_file():
                missing.append(unit.name)
                continue
            info = read_json(side)
            c = Counts.from_dict(info["counts"])
            c_in += c
            parts.append({"part": info["part"], "source": s.path, "unit": i, "rows": info["rows"],
                          "rejects": info["rejects"]})
        per_input[s.path] = c_in
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
        "num_processes": world,
        "model": plan["model"],
        "mixed_precision": mp,
        "quantize": cfg.quantize,
        "peak_rss_mb": round(peak_mb, 1),
        "output": {"folder": str(out.resolve()), "format": cfg.format, "parts": len(parts)},
        "spamjob_version": __version__,
    }
    if agreement is not None:
        extra["quantization_agreement"] = {
            "rows_compared": agreement["rows"],
            "same_prediction": agreement["same"] / agreement["rows"] if agreement["rows"] else None,
            "max_abs_probability_diff": agreement["max_abs_diff"],
        }
    report = rep.build(total, per_input, extra)
    rep.write(out, report)
    write_json(out / "_manifest.json", {"plan": plan, "parts": parts, "rows": total.rows_read,
                                        "rejected": sum(total.rejected.values())})
    with atomic_path(out / "_SUCCESS") as tmp:
        tmp.write_text("")
    return report


def summary(report: dict, out: str) -> str:
    r = report["rows"]
    acc = f"; accuracy {report['accuracy'] * 100:.2f}%" if report.get("accuracy") is not None else ""
    return (f"scored {r['scored']:,} of {r['read']:,} rows ({r['flagged']:,} flagged, {r['rejected']:,} rejected lines)"
            f"{acc} in {report['wall_time_s']:.1f} s ({report['rows_per_s']:,.1f} rows/s) on "
            f"{report['num_processes']} process(es); report: {Path(out) / 'report.md'}")
