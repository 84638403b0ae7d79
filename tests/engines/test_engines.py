"""Ray Data and Spark score like `spamjob score`: the same four columns on the same rows, and
`spamjob report` on their output gives the same counts. The engines are optional extras
(`spamjob[ray]`, `spamjob[spark]`, both installed by .ci/run); without them these tests skip."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import metric_values

from spamjob.cli import cli

pytestmark = pytest.mark.slow  # a Ray cluster and a SparkSession: ~45 s on 2 cores
COUNTED = ("accuracy", "rows", "flagged_by_reason", "spam_rate", "predicted", "labels", "spam_probability_histogram")
ODD = [None, b"", b"   ", b"bad \xff\xfe bytes", b"free <|endoftext|> prize", ("win " * 300).encode()]


@pytest.fixture(scope="module")
def rows(sms_path, tmp_path_factory) -> Path:
    """~400 rows: SMS messages plus null, empty, blank, invalid-UTF-8, special-token and over-length texts."""
    sms = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"]).head(394)
    texts = [t.encode() for t in sms["Text"]] + ODD
    labels = sms["Label"].tolist() + ["ham", "spam", None, "spam", "spam", "maybe"]
    table = pa.table(
        {
            "id": pa.array(range(len(texts)), pa.int64()),
            "Text": pa.array(texts, pa.binary()),
            "Label": pa.array(labels, pa.string()),
        }
    )
    path = tmp_path_factory.mktemp("engines") / "rows.parquet"
    pq.write_table(table, path, row_group_size=100)
    return path


@pytest.fixture(scope="module")
def by_spamjob(rows, classifier_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engines") / "spamjob"
    r = CliRunner().invoke(
        cli,
        [
            "score",
            str(rows),
            "--model",
            str(classifier_dir),
            "--out",
            str(out),
            "--label-column",
            "Label",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def same_predictions(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.sort_values("id").reset_index(drop=True), b.sort_values("id").reset_index(drop=True)
    assert a["id"].tolist() == b["id"].tolist()
    for col in ("prediction", "truncated", "error"):
        assert a[col].tolist() == b[col].tolist(), col
    pa_, pb = a["spam_probability"].to_numpy(float), b["spam_probability"].to_numpy(float)
    assert np.array_equal(np.isnan(pa_), np.isnan(pb))
    assert np.nanmax(np.abs(pa_ - pb)) <= 1e-6


def same_report(engine_out: Path, spamjob_out: Path) -> None:
    r = CliRunner().invoke(cli, ["report", str(engine_out), "--label-column", "Label"])
    assert r.exit_code == 0, r.output
    mine, theirs = (json.loads((d / "report.json").read_text()) for d in (engine_out, spamjob_out))
    assert {k: mine[k] for k in COUNTED} == {k: theirs[k] for k in COUNTED}


# --- Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=256 << 20, log_to_driver=False, configure_logging=False
    )
    yield ray
    ray.shutdown()


def test_ray_scores_like_spamjob(ray_cluster, rows, by_spamjob, classifier_dir, tmp_path):
    from spamjob.engines.ray import ScoringActor, score_dataset

    met = tmp_path / "actors"
    met.mkdir()

    class WithPid(ScoringActor):
        def __call__(self, batch):
            (met / str(os.getpid())).touch()
            deadline = time.monotonic() + 120  # each actor's first batch waits for the other's: the pool,
            while len(os.listdir(met)) < 2 and time.monotonic() < deadline:  # which sends each block to
                time.sleep(0.05)  # the least busy actor, must use both whatever the machine's load
            out = super().__call__(batch)
            return out.append_column("pid", pa.array([os.getpid()] * out.num_rows, pa.int64()))

    ds = ray_cluster.data.read_parquet(str(rows))
    scored = score_dataset(ds, str(classifier_dir), actors=2, batch_rows=50, actor=WithPid).materialize()
    table = pa.concat_tables(ray_cluster.get(scored.to_arrow_refs()))
    pids = table.column("pid").to_pylist()
    assert table.num_rows == 400 and len(set(pids)) == 2, {p: pids.count(p) for p in set(pids)}  # 2 actors on 2 CPUs
    same_predictions(table.to_pandas(), pd.read_parquet(by_spamjob / "predictions"))
    scored.drop_columns(["pid"]).write_parquet(str(tmp_path / "predictions"))  # Ray's own writer and file names
    same_report(tmp_path, by_spamjob)
    staged = score_dataset(ds, str(classifier_dir), actors=1, batch_rows=64, tokenize_stage=True)  # as for GPUs
    staged = pa.concat_tables(ray_cluster.get(staged.to_arrow_refs()))
    same_predictions(staged.to_pandas(), pd.read_parquet(by_spamjob / "predictions"))
    assert staged.column_names == table.drop_columns(["pid"]).column_names  # the stage's columns are gone


def test_score_engine_ray_from_the_cli(ray_cluster, rows, by_spamjob, classifier_dir, tmp_path):
    """`spamjob score --engine ray` joins a cluster (here the tests' one), reads a URI (file://, as
    s3:// or gs://), writes the same layout and report; a rerun of the finished job does nothing;
    bad options are one line before any work."""
    import subprocess
    import sys

    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "spamjob.cli",
        "score",
        rows.as_uri(),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "o"),
        "--label-column",
        "Label",
        "--engine",
        "ray",
        "--ray-address",
        address,
        "--no-progress",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "scored 396 of 400 rows" in r.stdout
    same_predictions(pd.read_parquet(tmp_path / "o" / "predictions"), pd.read_parquet(by_spamjob / "predictions"))
    mine, theirs = (json.loads((d / "report.json").read_text()) for d in (tmp_path / "o", by_spamjob))
    assert {k: mine[k] for k in COUNTED} == {k: theirs[k] for k in COUNTED} and mine["engine"] == "ray"
    assert mine["num_processes"] == 1 and mine["actors"] >= 1 and "Ray actors: " in r.stdout
    assert f"Ray actors: {mine['actors']}" in (tmp_path / "o" / "report.md").read_text()
    assert (tmp_path / "o" / "_SUCCESS").is_file()
    prom = metric_values((tmp_path / "o" / "metrics.prom").read_text())  # as `spamjob score`'s engine writes it
    assert prom["spamjob_score_rows"][(str((tmp_path / "o").resolve()), "read")] == 400
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith(f"already complete: {tmp_path / 'o'} holds this job's")
    # --id-column: first in the output, as spamjob score puts it (to join predictions back).
    with_id = [*cmd[:-1], "--out", str(tmp_path / "id"), "--id-column", "Label", "--keep-columns", "Text,id"]
    r = subprocess.run(with_id, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    local = CliRunner().invoke(
        cli,
        [
            "score",
            str(rows),
            "--model",
            str(classifier_dir),
            "--out",
            str(tmp_path / "l"),
            "--id-column",
            "Label",
            "--keep-columns",
            "Text,id",
            "--no-progress",
        ],
    )
    assert local.exit_code == 0, local.output
    ray_df, local_df = (pd.read_parquet(tmp_path / d / "predictions") for d in ("id", "l"))
    assert (
        list(ray_df.columns)
        == list(local_df.columns)
        == ["Label", "Text", "id", "prediction", "spam_probability", "truncated", "error"]
    )
    same_predictions(ray_df, local_df)
    for bad, says in (
        (["--shard", "0/2"], "--shard is not supported with --engine ray"),
        (["--text-column", "nope"], "the inputs have no text column 'nope'"),
        (["--id-column", "key"], "the inputs have no --id-column 'key'"),
        (["--label-column", "nah"], "the inputs have no --label-column 'nah'"),
    ):
        r = subprocess.run(
            [*cmd[:-1], "--out", str(tmp_path / "bad"), *bad], capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("Error: ") and says in r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()


def test_ray_scores_a_scored_output_again_as_spamjob_does(ray_cluster, by_spamjob, classifier_dir, tmp_path):
    """--engine ray on a predictions/ folder: the earlier columns renamed input_*, and the report's
    --label-column prediction (the earlier classifier's) read from the input, not the new one."""
    import subprocess
    import sys

    address = ray_cluster.get_runtime_context().gcs_address
    common = [
        str(by_spamjob / "predictions"),
        "--model",
        str(classifier_dir),
        "--threshold",
        "0.6",
        "--label-column",
        "prediction",
        "--no-progress",
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "spamjob.cli",
            "score",
            *common,
            "--out",
            str(tmp_path / "ray"),
            "--engine",
            "ray",
            "--ray-address",
            address,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert CliRunner().invoke(cli, ["score", *common, "--out", str(tmp_path / "local")]).exit_code == 0
    ray_df, local_df = (pd.read_parquet(tmp_path / d / "predictions") for d in ("ray", "local"))
    assert list(ray_df.columns) == list(local_df.columns) and "input_prediction" in ray_df.columns
    same_predictions(ray_df, local_df)
    mine, theirs = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("ray", "local"))
    assert mine["accuracy"] == theirs["accuracy"] < 1.0


# --- Spark ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    import sys

    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("spamjob-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_scores_like_spamjob(spark, rows, by_spamjob, classifier_dir, tmp_path):
    from spamjob.engines.spark import score_dataframe

    scored = score_dataframe(spark.read.parquet(str(rows)).repartition(3), classifier_dir)
    scored.write.parquet(str(tmp_path / "predictions"))  # part-*.parquet, _SUCCESS, .crc files
    same_predictions(pd.read_parquet(tmp_path / "predictions"), pd.read_parquet(by_spamjob / "predictions"))
    same_report(tmp_path, by_spamjob)


def test_spark_sql_function(spark, rows, by_spamjob, classifier_dir):
    from spamjob.engines.spark import spam_udf

    spark.udf.register("spam", spam_udf(classifier_dir, batch_size=64))
    want = pd.read_parquet(by_spamjob / "predictions")
    want = want[want["error"] != "invalid UTF-8 in text"]  # Spark strings: pandas cannot hold such bytes
    spark.read.parquet(str(rows)).where(f"id IN ({','.join(map(str, want['id']))})").selectExpr(
        "id", "CAST(Text AS STRING) AS Text"
    ).createOrReplaceTempView("msgs")
    got = spark.sql("SELECT id, spam(Text) AS s FROM msgs").select("id", "s.*").toPandas()
    got["truncated"] = got["truncated"] == 1
    assert len(got) == len(want) == 399
    same_predictions(got, want)


def test_spark_submit_job(rows, by_spamjob, classifier_dir, tmp_path):
    """jobs/spark_score.py as spark-submit runs it: predictions, the report, one-line errors."""
    pytest.importorskip("pyspark")
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    cmd = [
        sys.executable,
        str(repo / "jobs" / "spark_score.py"),
        str(rows),
        "--model",
        str(classifier_dir),
        "--out",
        str(tmp_path / "o"),
        "--label-column",
        "Label",
    ]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "scored 396 of 400 rows on Spark" in r.stdout and (tmp_path / "o" / "predictions" / "_SUCCESS").is_file()
    mine, theirs = (json.loads((d / "report.json").read_text()) for d in (tmp_path / "o", by_spamjob))
    assert {k: mine[k] for k in COUNTED} == {k: theirs[k] for k in COUNTED}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)  # the folder exists
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr[-2000:]  # refused before Spark starts
    missing = subprocess.run(
        [*cmd[:2], str(tmp_path / "none.parquet"), *cmd[3:], "--overwrite"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in missing.stderr and "none.parquet" in missing.stderr


def test_engines_bench_runs_all_three(sms_path):
    """benchmarks/engines_bench.py in a small size: one row per engine, all agreeing."""
    pytest.importorskip("ray")
    pytest.importorskip("pyspark")
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "benchmarks/engines_bench.py", "--n", "300", "--sms", str(sms_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.split()[:1] in (["spamjob"], ["ray"], ["spark"])]
    assert [row[0] for row in rows] == ["spamjob", "ray", "spark"]
    assert all("same label 100.00%," in line for line in r.stdout.splitlines()[2:]), r.stdout
