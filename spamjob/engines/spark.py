"""Spark: score a DataFrame with `mapInArrow`, or a column with a SQL function, one
`BatchScorer` per Python worker.

    from spamjob.engines.spark import score_dataframe, spam_udf

    scored = score_dataframe(spark.read.parquet("s3a://bucket/messages/"), "/models/r1")
    scored.write.parquet("s3a://bucket/scored/predictions")       # then: spamjob report
    spark.udf.register("spam", spam_udf("/models/r1"))             # SELECT spam(text).spam_probability ...

`mapInArrow` hands Arrow batches straight to the scorer (no pandas, so a null text stays
null); the scorer is cached in this module, per Python worker, so tasks after the first
reuse the loaded model (a cache kept in `__main__` would be shipped with every task and
reload it). The model path must be readable by every executor (a shared or copied folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import from_arrow_type
from pyspark.sql.types import IntegerType, StructField, StructType

from spamjob.scorer import BatchScorer
from spamjob.scoring.columns import OUTPUT_TYPES

OUTPUT_FIELDS = [StructField(name, from_arrow_type(t)) for name, t in OUTPUT_TYPES.items()]  # scoring's four
# predict_batch_udf returns numbers and strings only: `truncated` is 0/1 there.
UDF_FIELDS = [f if f.name != "truncated" else StructField("truncated", IntegerType()) for f in OUTPUT_FIELDS]
_SCORERS: dict[tuple, BatchScorer] = {}  # per Python worker: (model, options) -> loaded scorer


def scorer(model: str, **options: Any) -> BatchScorer:
    """The worker's scorer for `model` and `options`, loaded on first use."""
    key = (model, tuple(sorted(options.items())))
    if key not in _SCORERS:
        _SCORERS[key] = BatchScorer(model, **options)
    return _SCORERS[key]


def score_dataframe(df: DataFrame, model: str | Path, *, text_column: str | None = None, **options: Any) -> DataFrame:
    """`df` with `prediction`, `spam_probability`, `truncated` and `error` appended (lazily).
    `options` go to `BatchScorer` (mixed_precision, batch_tokens, quantize, runtime, workers)."""
    model = str(Path(model).resolve())
    schema = StructType(df.schema.fields + OUTPUT_FIELDS)
    arrow_schema = None

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nonlocal arrow_schema
        s = scorer(model, **options)
        for batch in batches:
            table = s.score_table(batch, text_column)
            # Spark hands strings as string or large_string (its Arrow settings): answer in kind.
            arrow_schema = arrow_schema or pa.schema(
                list(batch.schema) + [_like(batch.schema, f) for f in list(table.schema)[batch.num_columns :]]
            )
            yield from table.cast(arrow_schema).to_batches()

    return df.mapInArrow(score, schema)


def _like(schema: pa.Schema, field: pa.Field) -> pa.Field:
    large = any(pa.types.is_large_string(f.type) or pa.types.is_large_binary(f.type) for f in schema)
    return field.with_type(pa.large_string()) if large and pa.types.is_string(field.type) else field


def spam_udf(model: str | Path, *, batch_size: int = 4096, **options: Any):
    """A `predict_batch_udf` for SQL users: `spam(text)` returns a struct of the four output fields
    (`truncated` as 0/1: such UDFs return no booleans)."""
    from pyspark.ml.functions import predict_batch_udf

    model = str(Path(model).resolve())

    def make_predict_fn():
        s = scorer(model, **options)

        def predict(texts: np.ndarray) -> dict[str, np.ndarray]:
            values = [t if isinstance(t, (str, bytes)) else None for t in texts]  # pandas gives NaN for null
            kind = pa.binary() if any(isinstance(t, bytes) for t in values) else pa.string()
            table = s.score_table(pa.table({"text": pa.array(values, kind)}), "text")
            table = table.set_column(
                table.schema.get_field_index("truncated"), "truncated", table.column("truncated").cast(pa.int32())
            )
            return {f.name: table.column(f.name).to_numpy(zero_copy_only=False) for f in UDF_FIELDS}

        return predict

    return predict_batch_udf(make_predict_fn, return_type=StructType(UDF_FIELDS), batch_size=batch_size)
