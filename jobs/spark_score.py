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
from spamjob.errors import SpamjobError, first_line


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", required=True, help="Run folder of `spamjob train`, readable by every executor.")
@click.option("--out", required=True, help="Output folder (local, hdfs://, s3a://, ...): predictions/ goes there.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv"]),
    default="parquet",
    show_default=True,
    help="Format of the inputs (CSV: with a header row).",
)
@click.option("--text-column", default=None, help="Column of message text [Text, text, message, sms].")
@click.option("--label-column", default=None, help="ham/spam or 0/1 labels: accuracy in the report.")
@click.option(
    "--mixed-precision",
    type=click.Choice(["auto", "no", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on GPU executors, fp32 on CPU.",
)
@click.option(
    "--quantize", type=click.Choice(["int8"]), default=None, help="CPU executors: dynamic int8 Linear layers."
)
@click.option("--overwrite", is_flag=True, help="Replace OUT/predictions if it exists.")
def main(inputs, model, out, fmt, text_column, label_column, mixed_precision, quantize, overwrite) -> None:
    """Score INPUTS (paths or URIs Spark reads) with a trained classifier on Spark."""
    from pyspark.sql import SparkSession

    from spamjob.engines.spark import score_dataframe

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
        scored = score_dataframe(df, model, text_column=text_column, mixed_precision=mixed_precision, quantize=quantize)
        scored.write.mode("overwrite" if overwrite else "errorifexists").parquet(f"{out.rstrip('/')}/predictions")
    except PySparkException as e:  # a missing input, an existing output, a failed task: one line
        raise click.ClickException(first_line(e)) from None
    if not local:
        click.echo(f"scored into {out}/predictions; for the report, run `spamjob report` where that folder is mounted")
        return
    from spamjob.scoring.recount import recount

    try:
        r = recount(out.removeprefix("file://"), label_column)
    except SpamjobError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"scored {r['rows']['scored']:,} of {r['rows']['read']:,} rows on Spark; report: {Path(out) / 'report.md'}"
    )


if __name__ == "__main__":
    run_standalone(main, "spark_score.py")
