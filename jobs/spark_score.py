"""Bulk scoring on a Spark cluster (`pip install 'spamjob[spark]'` on the driver and every executor).

    spark-submit jobs/spark_score.py /data/inbox/ --model /models/r1 --out /data/scored/2026-11-29
    spark-submit --master yarn --num-executors 8 --executor-cores 4 jobs/spark_score.py \\
        's3a://bucket/inbox/*.parquet' --model /shared/models/r1 --out s3a://bucket/scored/2026-11-29

Reads Parquet (or CSV with a header), scores with `spamjob.engines.spark.score_dataframe`,
writes OUT/predictions/ as Parquet through Spark's own output commit, and, when OUT is a
local or mounted folder, the report (`spamjob report OUT`). Spark retries failed tasks and
commits the folder whole (`_SUCCESS`); a failed job leaves no `_SUCCESS`: run it again with
--overwrite.
"""

from __future__ import annotations

from pathlib import Path

import click

from spamjob.cli import run_standalone
from spamjob.command_config import SparkScoreConfig
from spamjob.errors import SpamjobError, first_line
from spamjob.options import from_fields


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@from_fields(SparkScoreConfig)
def main(**params) -> None:
    """Score INPUTS (paths or URIs Spark reads) with a trained classifier on Spark."""
    try:
        cfg = SparkScoreConfig(**params)
    except SpamjobError as e:
        raise click.ClickException(str(e)) from None
    from pyspark.sql import SparkSession

    from spamjob.engines.spark import score_dataframe

    inputs, model, out, fmt, overwrite = cfg.inputs, cfg.model, cfg.out, cfg.format, cfg.overwrite
    if not (Path(model) / "config.json").is_file():
        raise click.ClickException(f"{model}: not a spamjob run folder (no config.json)")
    local = "://" not in out or out.startswith("file://")
    if local and not overwrite and (Path(out.removeprefix("file://")) / "predictions").exists():
        raise click.ClickException(f"{out}/predictions already exists; pass --overwrite to replace it")
    from pyspark.errors import PySparkException

    spark = SparkSession.builder.appName("spamjob-score").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    reader = spark.read.option("header", True) if fmt == "csv" else spark.read
    try:
        df = reader.format(fmt).load(list(inputs))
        cores = spark.sparkContext.defaultParallelism
        if df.rdd.getNumPartitions() < cores:  # a few files make few tasks: spread them over every core
            df = df.repartition(cores)
        scored = score_dataframe(
            df, model, text_column=cfg.text_column, mixed_precision=cfg.mixed_precision, quantize=cfg.quantize
        )
        scored.write.mode("overwrite" if overwrite else "errorifexists").parquet(f"{out.rstrip('/')}/predictions")
    except PySparkException as e:  # a missing input, an existing output, a failed task: one line
        raise click.ClickException(first_line(e)) from None
    if not local:
        click.echo(f"scored into {out}/predictions; for the report, run `spamjob report` where that folder is mounted")
        return
    from spamjob.scoring.recount import recount

    try:
        r = recount(out.removeprefix("file://"), cfg.label_column)
    except SpamjobError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"scored {r['rows']['scored']:,} of {r['rows']['read']:,} rows on Spark; report: {Path(out) / 'report.md'}"
    )


if __name__ == "__main__":
    run_standalone(main, "spark_score.py")
