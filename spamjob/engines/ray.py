"""Ray Data: score a dataset on an actor pool, each actor holding one `BatchScorer`.

    import ray
    from spamjob.engines.ray import score_dataset

    ds = ray.data.read_parquet("s3://bucket/messages/")
    score_dataset(ds, "runs/r1", actors=4, num_gpus=1).write_parquet("s3://bucket/scored/predictions")

Ray's documented pattern for offline batch inference (`map_batches` over a callable class on
an `ActorPoolStrategy`), with defaults that avoid its pitfalls: actors reserve fractional
CPUs so that reading and writing tasks always find one (a pool holding every CPU hangs),
blocks are cut (streaming) to one batch each (else a few small files make one block and one
actor does all the work),
and batches travel as Arrow tables (no pandas: null texts stay null). `spamjob score
--engine ray` runs this on the same inputs and writes the same folder layout.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import ray

from spamjob.errors import SpamjobError
from spamjob.scorer import BatchScorer

BATCH_ROWS = 4096  # rows per map_batches call: one length-sorted window


class Scorer:
    """The `map_batches` callable: a classifier loaded once per actor, Arrow table in and out."""

    def __init__(self, model: str, text_column: str | None = None, **options: Any):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        options.setdefault("workers", max(1, math.floor(cpus + 0.5)))  # single-threaded model workers (CPU)
        self.scorer = BatchScorer(model, **options)
        self.text_column = text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.scorer.score_table(batch, self.text_column)


def score_dataset(ds: "ray.data.Dataset", model: str, *, actors: int | None = None, num_gpus: float = 0,
                  cpus_per_actor: float | None = None, text_column: str | None = None,
                  batch_rows: int = BATCH_ROWS, scorer: type = Scorer, **options: Any) -> "ray.data.Dataset":
    """`ds` with `prediction`, `spam_probability`, `truncated` and `error` added (lazily, like
    any Ray dataset). `options` go to `BatchScorer` (mixed_precision, batch_tokens, quantize);
    `scorer` may be a subclass of `Scorer` that post-processes each scored batch.

    Defaults: with `num_gpus`, one actor per `num_gpus` of the cluster's GPUs (bf16); on CPU,
    one actor per two CPUs; CPU actors share all but one of the cluster's CPUs, so that
    reading and writing always find one."""
    if not ray.is_initialized():
        ray.init()
    cpus = ray.cluster_resources().get("CPU", 1.0)
    if num_gpus:
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if gpus < num_gpus:
            raise SpamjobError(f"num_gpus={num_gpus} per actor, but the Ray cluster has {gpus:g} GPU(s)")
        actors = actors or max(1, int(gpus // num_gpus))
        cpus_per_actor = cpus_per_actor or min(1.0, max(cpus - 1, 0.25) / actors)
    else:
        actors = actors or max(1, int(cpus) // 2)
        cpus_per_actor = cpus_per_actor or max(cpus - 1, 0.25) / actors
    ds = ds.repartition(target_num_rows_per_block=batch_rows)  # streaming: every actor gets blocks
    return ds.map_batches(scorer, fn_constructor_kwargs={"model": str(model), "text_column": text_column, **options},
                          batch_format="pyarrow", batch_size=batch_rows, num_cpus=cpus_per_actor,
                          num_gpus=num_gpus or None, compute=ray.data.ActorPoolStrategy(size=actors))
