"""Ray Data: score a dataset on an actor pool, each actor holding one `BatchScorer`.

    import ray
    from spamjob.engines.ray import score_dataset

    ds = ray.data.read_parquet("s3://bucket/messages/")
    score_dataset(ds, "runs/r1", actors=4, num_gpus=1).write_parquet("s3://bucket/scored/predictions")

Ray's documented pattern for offline batch inference (`map_batches` over a callable class on
an `ActorPoolStrategy`), with defaults that avoid its pitfalls: actors reserve fractional
CPUs so that reading and writing tasks always find one (a pool holding every CPU hangs),
blocks are cut (streaming) to one batch each (else a few small files make one block and one
actor does all the work), and batches travel as Arrow tables (no pandas: null texts stay
null). `spamjob score --engine ray` runs this on the same inputs and writes the same folder
layout.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
from ray.data.datasource import BlockBasedFileDatasink

from spamjob import stores
from spamjob.artifact import local_folder, tokenizer_folder
from spamjob.engines.ray_cluster import WHERE_NODES_WRITE, check_nodes, join, last_line
from spamjob.errors import SpamjobError
from spamjob.fsutil import read_json
from spamjob.operating import threshold_record
from spamjob.scoring import metrics, runtimes
from spamjob.scoring import plan as job_plan
from spamjob.scoring import report as rep
from spamjob.scoring.columns import OUTPUT_COLUMNS, check_wanted, kept_columns, renamed_for_output, text_column_of
from spamjob.scoring.core import BatchScorer, Window, prepare_window
from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.inputs import find, say_skipped, skipped_counts
from spamjob.scoring.output import open_output
from spamjob.scoring.output.lookup import check_out
from spamjob.scoring.output.names import METRICS, PREDICTIONS
from spamjob.scoring.recount import count_folder
from spamjob.stores import is_uri
from spamjob.text import encode_flat, load_tokenizer
from spamjob.tokens import TokenIds

BATCH_ROWS = 4096  # rows per map_batches call: one length-sorted window
WAIT_FOR_ACTORS_S = 600
IDS, ERRORS = "__spamjob_token_ids", "__spamjob_error"  # what the tokenizing stage hands the actors
_TOKENIZERS: dict = {}  # per worker process: model folder -> its tokenizer


class ScoringActor:
    """The `map_batches` callable: a classifier loaded once per actor, Arrow table in and out."""

    def __init__(self, model: str, text_column: str | None = None, **options: Any):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        options.setdefault("workers", max(1, math.floor(cpus + 0.5)))  # single-threaded model workers (CPU)
        self.scorer = BatchScorer(model, **options)
        self.text_column = text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        if IDS not in batch.column_names:
            return self.scorer.score_table(batch, self.text_column)
        errors = batch.column(ERRORS).to_pylist()
        ok = [i for i, e in enumerate(errors) if e is None]
        ids = batch.column(IDS).combine_chunks().take(pa.array(ok, pa.int64()))  # list<int32>, flat underneath
        offsets = ids.offsets.to_numpy().astype(np.int64)
        window = Window(errors, ok, TokenIds(ids.flatten().to_numpy().astype(np.int32), offsets - offsets[0]))
        return self.scorer.score_table(batch.drop_columns([IDS, ERRORS]), self.text_column, window)


def tokenize(batch: pa.Table, model: str, text_column: str | None = None) -> pa.Table:
    """The CPU stage before GPU actors: decode, flag and tokenize (no model loaded), so that the
    actors only run the model. Adds two columns that `ScoringActor` reads and drops."""
    if model not in _TOKENIZERS:  # the classifier's own (a URI's: fetched once into this node's cache)
        _TOKENIZERS[model] = load_tokenizer(tokenizer_folder(local_folder(model)))
    column = text_column_of(batch.column_names, text_column)
    # Every row's ids (the actors score each batch again with `score_table`, duplicates once there).
    texts = batch.column(column).combine_chunks()
    window = prepare_window(texts, lambda texts: encode_flat(_TOKENIZERS[model], texts), dedup=False)
    lengths = np.zeros(window.num_rows, dtype=np.int32)  # rows not scored: null, no tokens
    lengths[window.ok] = window.ids.lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    mask = pa.array([e is not None for e in window.errors], pa.bool_())
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(window.ids.values, pa.int32()), mask=mask)
    return batch.append_column(IDS, ids).append_column(ERRORS, pa.array(window.errors, pa.string()))


def score_dataset(
    ds: ray.data.Dataset,
    model: str,
    *,
    actors: int | None = None,
    num_gpus: float = 0,
    cpus_per_actor: float | None = None,
    text_column: str | None = None,
    batch_rows: int = BATCH_ROWS,
    actor: type = ScoringActor,
    tokenize_stage: bool | None = None,
    **options: Any,
) -> ray.data.Dataset:
    """`ds` with `prediction`, `spam_probability`, `truncated` and `error` added (lazily, like
    any Ray dataset). `options` go to `BatchScorer` (mixed_precision, batch_tokens, quantize, runtime);
    `actor` may be a subclass of `ScoringActor` that post-processes each scored batch;
    `tokenize_stage` (default: with GPUs) tokenizes in CPU tasks before the actors.

    The pool starts once all its actors have loaded the model (Ray's `wait_for_min_actors_s`,
    set to 10 minutes unless you set it). Defaults: with `num_gpus`, one actor per `num_gpus`
    of the cluster's GPUs (bf16); on CPU, one actor per two CPUs; CPU actors share all but one
    of the cluster's CPUs, so that reading and writing always find one."""
    if not ray.is_initialized():
        ray.init()
    actors, default_cpus = pool_size(num_gpus, actors)
    cpus_per_actor = cpus_per_actor or default_cpus
    context = ray.data.DataContext.get_current()
    if context.wait_for_min_actors_s <= 0:  # start once every actor holds the model; a pool the cluster
        context.wait_for_min_actors_s = WAIT_FOR_ACTORS_S  # cannot place fails with Ray's timeout, never hangs
    ds = ds.repartition(target_num_rows_per_block=batch_rows)  # streaming: every actor gets blocks
    if tokenize_stage if tokenize_stage is not None else bool(num_gpus):
        ds = ds.map_batches(
            tokenize,
            fn_kwargs={"model": str(model), "text_column": text_column},
            batch_format="pyarrow",
            batch_size=batch_rows,
            num_cpus=0.5,
        )
    return ds.map_batches(
        actor,
        fn_constructor_kwargs={"model": str(model), "text_column": text_column, **options},
        batch_format="pyarrow",
        batch_size=batch_rows,
        num_cpus=cpus_per_actor,
        num_gpus=num_gpus or None,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )


def pool_size(num_gpus: float = 0, actors: int | None = None) -> tuple[int, float]:
    """(actors, CPUs per actor) by default on this cluster: see `score_dataset`."""
    cpus = ray.cluster_resources().get("CPU", 1.0)
    if num_gpus:
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if gpus < num_gpus:
            raise SpamjobError(f"num_gpus={num_gpus} per actor, but the Ray cluster has {gpus:g} GPU(s)")
        actors = actors or max(1, int(gpus // num_gpus))
        return actors, min(1.0, max(cpus - 1, 0.25) / actors)
    actors = actors or max(1, int(cpus) // 2)
    return actors, max(cpus - 1, 0.25) / actors


# --- `spamjob score --engine ray` -----------------------------------------------------------


def run_job(cfg) -> dict:
    """`spamjob score --engine ray`: read the inputs with Ray Data, score on an actor pool, write
    OUT/predictions/ (Parquet, Ray's file names), check that the parts the driver sees hold every
    row written, then the report (`spamjob report`) and `_SUCCESS`. The output folder is spamjob's
    (plan, --overwrite rules), but a rerun redoes the whole job (a finished one: nothing)."""
    wall0 = time.perf_counter()
    out = open_output(cfg.out)
    groups, fingerprints, skipped = _input_groups(cfg)
    config = _model_config(cfg.model)
    threshold = threshold_record(config, cfg.threshold)
    options = job_plan.prediction_settings(cfg.mixed_precision, cfg.quantize, threshold["value"], cfg.runtime)
    plan = job_plan.build(cfg, config.get("model_sha256"), fingerprints, options, engine="ray")
    if out.finished_with(plan):
        return {**out.read_json("report.json"), "already_done": True}
    join(cfg.ray_address)
    check_nodes(cfg.out, _job_uris(cfg))
    ds, kept, named = _inputs(groups, cfg)  # columns checked before any file is written
    out.prepare(plan, cfg.overwrite, resume=False)
    num_gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0  # one GPU per actor, bf16 by default
    device = "cuda" if num_gpus else "cpu"
    precision = runtimes.precision(cfg.mixed_precision, bool(num_gpus), cfg.quantize, cfg.runtime)[0]
    request = runtimes.Request(device, precision, cfg.quantize)
    options["runtime"] = runtimes.resolve(cfg.runtime, request)
    scored = score_dataset(
        ds,
        cfg.model,  # a URI: each actor's node fetches it once into its cache
        num_gpus=num_gpus,
        text_column=named(cfg.text_column),
        batch_rows=min(cfg.window_rows, BATCH_ROWS),
        batch_tokens=cfg.batch_tokens,
        **options,
    )
    try:
        written = _write(scored.select_columns([*kept, *OUTPUT_COLUMNS]), out)
    except (ray.exceptions.RayError, pa.ArrowException, OSError, ValueError) as e:
        raise SpamjobError(f"the Ray job failed: {last_line(e)}") from None
    facts = {
        "model": plan["model"],
        "threshold": threshold,
        "runtime": {"name": options["runtime"]},
        "skipped_files": skipped_counts(skipped),
    }
    with out.finishing():
        try:
            counts = count_folder(out.location, named(cfg.label_column))
        except SpamjobError:  # e.g. no part at all where this driver looks
            _check_rows(0, written, out)
            raise
        _check_rows(counts[0].rows_read, written, out)
        report = _report(out, counts, cfg, wall0, facts, pool_size(num_gpus)[0])
        out.finish()  # no manifest: Ray's parts are not spamjob's units
    return report


def _job_uris(cfg) -> list[str]:
    """What every node reads or writes in a store: the inputs (a glob's prefix), the model, --out."""
    uris = [u for u in map(stores.local_path, cfg.inputs) if is_uri(u)]
    uris = [stores.glob_base(u) if stores.GLOB.search(u) else u for u in uris]
    if is_uri(cfg.model):
        uris.append(stores.join(cfg.model, "config.json"))
    if is_uri(cfg.out):
        uris.append(cfg.out)
    return uris


def _check_rows(seen: int, written: int, out) -> None:
    """Before `_SUCCESS`: the parts this driver sees hold every row the write tasks wrote (a node
    whose parts went to its own disk, a part lost on the way), else one line and no `_SUCCESS`."""
    if seen != written:
        raise SpamjobError(
            f"the Ray job wrote {written:,} rows but {out.child(PREDICTIONS)} holds {seen:,} where this driver sees "
            f"it: parts written on other nodes' own disks, or lost; not marked complete. Give --out {WHERE_NODES_WRITE}"
        )


def _model_config(model: str) -> dict:
    """The classifier's config.json, from its folder or its URI."""
    config = (
        json.loads(stores.read_bytes(stores.join(model, "config.json")) or b"null")
        if is_uri(model)
        else (read_json(Path(model) / "config.json") if (Path(model) / "config.json").is_file() else None)
    )
    if config is None:
        raise SpamjobError(f"{model}: not a run folder of `spamjob train` (no config.json)")
    return config


def _write(scored: ray.data.Dataset, out) -> int:
    """OUT/predictions/ in Ray's part files: locally under a temporary name, renamed when whole; in
    an object store straight into place (no rename there: the output is whole once `_SUCCESS` is).
    Returns the rows the write tasks wrote."""
    if is_uri(out.location):
        loc = stores.locate(out.child(PREDICTIONS))
        sink = CountedParquet(loc.path, filesystem=loc.fs)
        scored.write_datasink(sink)
        return sink.rows
    tmp = out.path / f".{PREDICTIONS}.ray.part"
    shutil.rmtree(tmp, ignore_errors=True)
    sink = CountedParquet(str(tmp))
    scored.write_datasink(sink)
    tmp.rename(out.path / PREDICTIONS)
    return sink.rows


class CountedParquet(BlockBasedFileDatasink):
    """Ray's file writer of one Parquet part per block, which learns (on the driver) how many rows
    the write tasks wrote in all."""

    def __init__(self, path: str, **kwargs):
        super().__init__(path, file_format="parquet", **kwargs)
        self.rows = 0

    def write_block_to_file(self, block, file) -> None:
        pq.write_table(block.to_arrow(), file)

    def on_write_complete(self, write_result) -> None:
        self.rows = write_result.num_rows
        super().on_write_complete(write_result)


def _report(out, counts: tuple, cfg, wall0: float, facts: dict, actors: int) -> dict:
    total, per_input, extra = counts
    wall = time.perf_counter() - wall0
    extra.update(
        {
            "engine": "ray",
            "wall_time_s": round(wall, 3),
            "rows_per_s": round(total.rows_read / wall, 2),
            "num_processes": 1,
            "actors": actors,
            **facts,  # one driver process; the actors score
            "mixed_precision": cfg.mixed_precision,
            "quantize": cfg.quantize,
        }
    )
    report = rep.build(total, per_input, extra)
    with out.staged() as folder:
        rep.write(folder, report)
        metrics.write(folder / METRICS, report, out.location)
    if cfg.metrics_file:
        metrics.write(cfg.metrics_file, report, out.location)
    return report


def _input_groups(cfg) -> tuple[list[tuple[str, str, list[str]]], list[dict], dict[str, str]]:
    """(format, delimiter, paths) per way of reading, the inputs' fingerprints and the files skipped:
    inputs (local paths and URIs) found as `spamjob score` finds them."""
    csv = CsvOptions(cfg.delimiter, cfg.encoding)
    found = find(cfg.inputs)
    check_out(cfg.out, [s.path for s in found.sources])
    say_skipped(found.skipped, cfg.verbose)
    groups: dict[tuple[str, str], list[str]] = {}
    for s in found.sources:
        if s.kind not in _READERS:
            raise SpamjobError(f"{s.path}: --engine ray reads {' and '.join(_READERS)} inputs, not {s.kind}")
        groups.setdefault((s.kind, csv.delimiter_for(s.path)), []).append(s.path)  # (a delimiter: CSV's reader only)
    fingerprints = [s.fingerprint() for s in found.sources]
    return [(kind, delim, paths) for (kind, delim), paths in groups.items()], fingerprints, found.skipped


_READERS = {  # Ray Data's reader of each input format (spamjob.scoring.formats), given the paths and a delimiter
    "parquet": lambda paths, delim: ray.data.read_parquet(paths),
    "csv": lambda paths, delim: ray.data.read_csv(
        paths, parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True)
    ),
}


def _read(groups: list[tuple[str, str, list[str]]]) -> ray.data.Dataset:
    parts = [_READERS[kind](paths, delim) for kind, delim, paths in groups]
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _inputs(groups: list[tuple[str, str, list[str]]], cfg) -> tuple[ray.data.Dataset, list[str], Any]:
    """The inputs as one dataset, its columns checked; the kept columns under their output names
    (a scored input's own prediction... renamed input_prediction..., as `spamjob score` does) and
    the map from an input column's name to its name there."""
    try:
        ds = _read(groups)
        names = ds.schema().names
    except (ImportError, ray.exceptions.RayError, pa.ArrowException, OSError, ValueError) as e:
        raise SpamjobError(f"Ray cannot read the inputs: {last_line(e)}") from None
    _check_columns(names, cfg)
    kept = list(kept_columns(names, cfg.keep_columns, cfg.id_column))
    renamed = renamed_for_output(kept)
    if renamed:
        ds = ds.rename_columns(renamed)
    return ds, [renamed.get(c, c) for c in kept], lambda name: renamed.get(name, name)


def _check_columns(names: list[str], cfg) -> None:
    try:
        text_column_of(names, cfg.text_column)
        check_wanted(names, cfg)
    except SpamjobError as e:
        raise SpamjobError(f"the inputs have {e}") from None
