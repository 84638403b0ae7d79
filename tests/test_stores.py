"""Scoring from and into an object store, against a real S3 endpoint on 127.0.0.1 (moto's server):
the same output as local scoring, resume after SIGKILL, two --shard tasks, faults, credentials."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from store_servers import (
    AZURITE_KEY,
    CREDENTIALS,
    CUT,
    DROP,
    Azurite,
    FaultProxy,
    GcsEmulator,
    MotoS3,
    azurite_command,
    objects,
    put_folder,
    serving,
)
from support import TWO_CPU_RANKS, flip_byte, large_csvs, score, spark_failed_output, spark_frames

from spamjob import stores
from spamjob.cli import cli
from spamjob.errors import SpamjobError

REPO = Path(__file__).resolve().parents[1]
TIMING = ("wall_time_s", "rows_per_s", "steady_rows_per_s", "peak_rss_mb", "threads")


@pytest.fixture(scope="module")
def s3():
    with serving(MotoS3()) as server:
        yield server


@pytest.fixture(scope="module")
def azure():
    if azurite_command() is None:
        pytest.skip("Azurite is not installed (.ci/run installs it: npm install --prefix .ci/node azurite)")
    with serving(Azurite()) as server:
        yield server


@pytest.fixture(scope="module")
def gcs():
    with serving(GcsEmulator()) as server:
        yield server


@pytest.fixture(params=["s3", "azure", "gcs"])
def store(request):
    """Each store kind's server (its URIs: s3://, abfs://, gs://)."""
    return request.getfixturevalue(request.param)


def messages(sms_path: Path, n: int, seed: int = 0) -> pd.DataFrame:
    df = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])
    rows = np.random.default_rng(seed).integers(0, len(df), n)
    return df.iloc[rows].reset_index(drop=True).assign(id=range(n))[["id", "Text", "Label"]]


@pytest.fixture(scope="module")
def inputs(sms_path, tmp_path_factory) -> Path:
    """A Parquet file of 3 row groups, a CSV file and a gzipped TSV, with a bad line each."""
    folder = tmp_path_factory.mktemp("inputs")
    pq.write_table(pa.Table.from_pandas(messages(sms_path, 300), preserve_index=False), folder / "a.parquet", 100)
    csv = messages(sms_path, 200, seed=1).to_csv(index=False)
    (folder / "b.csv").write_text(csv + 'x,"unterminated\n')
    tsv = messages(sms_path, 100, seed=2).to_csv(index=False, sep="\t")
    (folder / "c.tsv.gz").write_bytes(gzip.compress((tsv + "1\t2\t3\t4\n").encode()))
    return folder


def part_table(out: str) -> pd.DataFrame:
    """The predictions, read as a user reads a finished output: the parts its manifest names."""
    manifest = json.loads(stores.read_bytes(stores.join(out, "_manifest.json")))
    parts = [pq.read_table(pa.BufferReader(stores.read_bytes(stores.join(out, p["part"])))) for p in manifest["parts"]]
    return pa.concat_tables(parts).to_pandas()


def same_report(a: dict, b: dict) -> None:
    """Equal but for timing and where the inputs and output lie."""

    def strip(r):
        r = {k: v for k, v in r.items() if k not in TIMING}
        r["inputs"] = list(r["inputs"].values())
        r["output"] = {k: v for k, v in r["output"].items() if k not in ("folder", "filled_with_nulls")}
        r.pop("csv_read_whole")
        r["model"] = r["model"]["sha256"]
        return r

    assert strip(a) == strip(b)


def test_an_object_rewritten_at_once_is_another_version(store):
    """--incremental's file identity in each store: an object rewritten within the same second at the
    same size has another ETag (S3, Azure) or generation (GCS), so another version and other parts."""
    from spamjob.scoring.inputs import uri_sources, versioned

    uri = f"{store.bucket('versions')}/in/b.csv"
    found = []
    for text in (b"text\nabc\n", b"text\nxyz\n"):
        stores.write_bytes(uri, text)
        found.append(versioned(uri_sources(uri))[0])
    assert found[0].size == found[1].size and found[0].version != found[1].version
    assert found[0].key != found[1].key and found[0].version.split(":")[1] != str(found[0].mtime_ns)


def test_store_in_and_out_equals_local_scoring(store, inputs, classifier_dir, tmp_path):
    bucket = store.bucket("equal")
    src = put_folder(inputs, f"{bucket}/in")
    model = put_folder(classifier_dir, f"{bucket}/model")
    local = score(str(inputs), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), "--label-column", "Label")
    assert local.exit_code == 0, local.output
    remote = score(src, "--model", model, "--out", f"{bucket}/out", "--label-column", "Label")
    assert remote.exit_code == 0, remote.output
    assert f"{bucket}/out/report.md" in remote.output
    key = ["id", "Text", "Label"]  # parts are named after their input's path: another order of files
    want = pd.read_parquet(tmp_path / "o" / "predictions").sort_values(key, kind="stable").reset_index(drop=True)
    got = part_table(f"{bucket}/out").sort_values(key, kind="stable").reset_index(drop=True)
    assert len(got) == len(want) == 600  # and 2 lines rejected
    pd.testing.assert_frame_equal(got.drop(columns="spam_probability"), want.drop(columns="spam_probability"))
    assert np.abs(got["spam_probability"] - want["spam_probability"]).max() <= 1e-6
    rep = json.loads(stores.read_bytes(f"{bucket}/out/report.json"))
    same_report(rep, json.loads((tmp_path / "o" / "report.json").read_text()))
    assert rep["output"]["folder"] == f"{bucket}/out" and rep["model"]["path"] == model
    names = set(objects(f"{bucket}/out"))
    assert {"_plan.json", "_manifest.json", "_SUCCESS", "report.json", "report.md", "report.png"} <= names
    assert len([n for n in names if n.startswith("predictions/")]) == len(
        list((tmp_path / "o" / "predictions").iterdir())
    )
    written = b"".join(objects(f"{bucket}/out").values()) + remote.output.encode()
    for secret in (CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"], AZURITE_KEY):
        assert secret.encode() not in written


def test_a_rerun_of_a_finished_store_job_is_the_same_and_the_report_recounts(store, inputs, classifier_dir):
    bucket = store.bucket("again")
    out = f"{bucket}/out"
    first = score(str(inputs / "a.parquet"), "--model", str(classifier_dir), "--out", out, "--label-column", "Label")
    assert first.exit_code == 0, first.output
    before = objects(out)
    again = score(str(inputs / "a.parquet"), "--model", str(classifier_dir), "--out", out, "--label-column", "Label")
    assert again.exit_code == 0, again.output
    after = objects(out)
    assert {k for k in after if not k.startswith("report")} == {k for k in before if not k.startswith("report")}
    r = CliRunner().invoke(cli, ["report", out, "--label-column", "Label"])
    assert r.exit_code == 0, r.output
    counted = json.loads(stores.read_bytes(f"{out}/report.json"))
    scored = json.loads(before["report.json"])
    assert counted["rows"] == scored["rows"] and counted["accuracy"] == scored["accuracy"]


def test_another_plan_on_the_same_s3_out_is_refused_without_overwrite(s3, inputs, classifier_dir):
    out = f"{s3.bucket('plans')}/out"
    assert score(str(inputs / "a.parquet"), "--model", str(classifier_dir), "--out", out).exit_code == 0
    r = score(str(inputs / "b.csv"), "--model", str(classifier_dir), "--out", out)
    assert r.exit_code == 1 and "pass --overwrite" in r.output and out in r.output
    r = score(str(inputs / "b.csv"), "--model", str(classifier_dir), "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert len(part_table(out)) == 200


def test_store_errors_are_one_line_naming_the_uri(s3, inputs, classifier_dir):
    r = score("s3://no-such-bucket/in/", "--model", str(classifier_dir), "--out", "/tmp/never")
    assert r.exit_code == 1 and "s3://no-such-bucket/in/" in r.output, r.output
    bucket = s3.bucket("errors")
    r = score(f"{bucket}/absent.parquet", "--model", str(classifier_dir), "--out", "/tmp/never")
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"Error: {bucket}/absent.parquet: no such object, and no .parquet/.pq/.csv/.tsv/.txt objects under it"
    ]
    r = score(str(inputs / "a.parquet"), "--model", f"{bucket}/no-model", "--out", f"{bucket}/o")
    assert r.exit_code == 1 and "no-model is not a trained classifier" in r.output, r.output


def test_a_prefix_a_failed_spark_job_left_scores_exactly_its_committed_parts(s3, classifier_dir, tmp_path):
    """The same layout as the local test (test_score.py), in a bucket, with the zero-byte folder
    markers (`prefix/`) that S3 consoles and Hadoop's S3A write: the committed parts are read, every
    other object is skipped and counted, in a prefix and in a glob alike."""
    import boto3

    layout = spark_failed_output(tmp_path / "in", spark_frames())
    src = put_folder(tmp_path / "in", f"{s3.bucket('spark')}/in")
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    for marker in ("in/", "in/_temporary/", "in/_temporary/0/", "in/day=2026-12-05/"):
        client.put_object(Bucket="spark", Key=marker, Body=b"")
    r = score(src, "--model", str(classifier_dir), "--out", f"{src}-scored")
    assert r.exit_code == 0, r.output
    assert sorted(part_table(f"{src}-scored")["id"]) == list(range(50))
    rep = json.loads(stores.read_bytes(f"{src}-scored/report.json"))
    assert rep["skipped_files"] == {"hidden": len(layout["hidden"])}
    manifest = json.loads(stores.read_bytes(f"{src}-scored/_manifest.json"))
    assert sorted(s["path"].removeprefix(src + "/") for s in manifest["skipped"]) == layout["hidden"]
    globbed = score(f"{src}/*.parquet", "--model", str(classifier_dir), "--out", f"{src}-globbed")
    assert globbed.exit_code == 0, globbed.output
    assert sorted(part_table(f"{src}-globbed")["id"]) == list(range(50))
    assert json.loads(stores.read_bytes(f"{src}-globbed/report.json"))["skipped_files"] == {"hidden": 2}


def test_a_model_uri_is_fetched_once_verified_and_reused(s3, classifier_dir, tmp_path, monkeypatch, capsys):
    """--model s3://...: its objects come down once into the cache, the weights are checked against
    the sha256 config.json records, and a second load reuses the cached folder without a download;
    a fetched file damaged since is fetched again, with a note."""
    from spamjob import artifact

    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    bucket = s3.bucket("models")
    model = put_folder(classifier_dir, f"{bucket}/good")
    fetched = []
    download = stores.download
    monkeypatch.setattr(stores, "download", lambda uri, dest: (fetched.append(uri), download(uri, dest)))
    first = artifact.fetch_classifier(model)
    assert first.is_relative_to(tmp_path / "cache" / "classifiers") and len(fetched) == len(objects(model))
    assert (first / "model.safetensors").read_bytes() == (classifier_dir / "model.safetensors").read_bytes()
    fetched.clear()
    assert artifact.fetch_classifier(model) == first and fetched == []
    assert artifact.load_classifier(model).config == json.loads((classifier_dir / "config.json").read_text())
    flip_byte(first / "tokenizer" / "vocab.bpe")  # any fetched file, checked against what was fetched
    capsys.readouterr()
    assert artifact.fetch_classifier(model) == first and len(fetched) == len(objects(model))
    assert "tokenizer/vocab.bpe differs from what was fetched); fetching it again" in capsys.readouterr().out
    assert (first / "tokenizer" / "vocab.bpe").read_bytes() == (classifier_dir / "tokenizer" / "vocab.bpe").read_bytes()
    tampered = put_folder(classifier_dir, f"{bucket}/tampered")
    stores.write_bytes(f"{tampered}/model.safetensors", b"not the weights config.json names")
    with pytest.raises(SpamjobError, match=r"tampered/model.safetensors: sha256 [0-9a-f]{64} is not the [0-9a-f]{64}"):
        artifact.fetch_classifier(tampered)
    assert not [p for p in (tmp_path / "cache" / "classifiers").iterdir() if p.is_dir() and p != first]


def test_a_classifier_on_s3_brings_its_own_tokenizer_to_every_process(s3, classifier_dir, tmp_path, monkeypatch):
    """An air-gapped cluster: offline, no GPT-2 tokenizer anywhere but in the classifier on S3. The
    tokenizer processes (a window over SMALL rows) and Ray's tokenizing stage use the fetched
    classifier's own tokenizer, and the output equals tokenizing in the reading thread."""
    from spamjob.scoring.tokenize_pool import SMALL

    model = put_folder(classifier_dir, f"{s3.bucket('tok')}/model")
    frame = pd.DataFrame({"id": range(SMALL + 100), "text": [f"win a prize {i} now" for i in range(SMALL + 100)]})
    frame.to_parquet(tmp_path / "in.parquet")
    for var in ("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # `spamjob --offline` sets both: restored after the test
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    base = [str(tmp_path / "in.parquet"), "--model", model, "--window-rows", str(SMALL + 100)]
    pooled = score(*base, "--out", str(tmp_path / "pooled"), "--tokenize-workers", "1")
    assert pooled.exit_code == 0, pooled.output
    inline = score(*base, "--out", str(tmp_path / "inline"), "--tokenize-workers", "0")
    assert inline.exit_code == 0, inline.output
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "pooled" / "predictions"), pd.read_parquet(tmp_path / "inline" / "predictions")
    )


def test_rays_tokenizing_stage_uses_the_classifier_on_s3s_own_tokenizer(s3, classifier_dir, tmp_path, monkeypatch):
    """Ray's CPU stage before GPU actors, offline with no GPT-2 tokenizer but the classifier's."""
    pytest.importorskip("ray")
    from spamjob.engines.ray import tokenize
    from spamjob.text import encode

    model = put_folder(classifier_dir, f"{s3.bucket('raytok')}/model")
    for var in ("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    batch = tokenize(pa.table({"text": ["win a prize", "hi"]}), model)
    ids = batch.column("__spamjob_token_ids").to_pylist()
    assert ids == encode(artifact_tokenizer(classifier_dir), ["win a prize", "hi"])


def artifact_tokenizer(classifier_dir: Path):
    from spamjob.artifact import tokenizer_folder
    from spamjob.text import load_tokenizer

    return load_tokenizer(tokenizer_folder(classifier_dir))


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spamjob.cli", *args, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_sigkill_then_rerun_on_s3_equals_uninterrupted_and_leaves_no_dead_attempt(s3, inputs, classifier_dir):
    bucket = s3.bucket("kill")
    src = put_folder(inputs, f"{bucket}/in")
    base = ["score", src, "--model", str(classifier_dir), "--window-rows", "50", "--label-column", "Label"]
    full = _cli([*base, "--out", f"{bucket}/full"], s3.env())
    assert full.returncode == 0, full.stderr
    killed = _cli([*base, "--out", f"{bucket}/k"], {**s3.env(), "SPAMJOB_KILL_BEFORE_SIDECAR": "1"})
    assert killed.returncode == -signal.SIGKILL
    left = objects(f"{bucket}/k")
    assert [n for n in left if n.startswith("predictions/")] and not [n for n in left if n.startswith("_parts/")]
    killed = _cli([*base, "--out", f"{bucket}/k"], {**s3.env(), "SPAMJOB_KILL_AFTER_WINDOWS": "5"})
    assert killed.returncode == -signal.SIGKILL and "_SUCCESS" not in objects(f"{bucket}/k")
    again = _cli([*base, "--out", f"{bucket}/k"], s3.env())
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(part_table(f"{bucket}/k"), part_table(f"{bucket}/full"))
    same_report(
        json.loads(stores.read_bytes(f"{bucket}/k/report.json")),
        json.loads(stores.read_bytes(f"{bucket}/full/report.json")),
    )
    names = objects(f"{bucket}/k")
    manifest = json.loads(names["_manifest.json"])
    assert sorted(n for n in names if n.startswith("predictions/")) == sorted(p["part"] for p in manifest["parts"])
    assert len([n for n in names if n.startswith("_parts/")]) == len(manifest["parts"])


@pytest.mark.slow
def test_two_shard_tasks_into_one_s3_out(s3, inputs, classifier_dir):
    bucket = s3.bucket("shards")
    base = ["score", str(inputs), "--model", str(classifier_dir), "--window-rows", "50", "--out", f"{bucket}/o"]
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "spamjob.cli", *base, "--shard", f"{k}/2", "--no-progress"],
            cwd=REPO,
            env={**os.environ, **s3.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for t in tasks:
        _, err = t.communicate(timeout=600)
        assert t.returncode == 0, err
    whole = score(str(inputs), "--model", str(classifier_dir), "--window-rows", "50", "--out", f"{bucket}/one")
    assert whole.exit_code == 0, whole.output
    key = ["id", "Text"]
    got = part_table(f"{bucket}/o").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, part_table(f"{bucket}/one").sort_values(key).reset_index(drop=True))
    assert "_SUCCESS" in objects(f"{bucket}/o")


@pytest.mark.slow
def test_a_store_that_denies_everything_is_one_line_naming_the_uri(s3, inputs, classifier_dir):
    bucket = s3.bucket("faults")
    src = put_folder(inputs, f"{bucket}/in")
    denied = FaultProxy(s3.endpoint, lambda method, path, n: 403)
    try:
        args = ["score", src, "--model", str(classifier_dir), "--out", f"{bucket}/o", "--label-column", "Label"]
        r = _cli(args, s3.env(denied.endpoint))
    finally:
        denied.stop()
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: s3://faults/in") and "access denied" in r.stderr, r.stderr


def sorted_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["id", "Text", "Label"], kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_a_whole_job_under_steady_throttling_and_dropped_connections_equals_local(s3, inputs, classifier_dir, tmp_path):
    """Every request may meet a fault at a steady rate, all through the job (inputs, model, output):
    503 SlowDown, a 500, a connection dropped without an answer, a download cut halfway. The job still
    ends with exactly the local run's rows and counts."""
    bucket = s3.bucket("storm")
    src, model = put_folder(inputs, f"{bucket}/in"), put_folder(classifier_dir, f"{bucket}/model")
    local = score(str(inputs), "--model", str(classifier_dir), "--out", str(tmp_path / "l"), "--label-column", "Label")
    assert local.exit_code == 0, local.output

    def storm(method: str, path: str, n: int) -> int | None:
        if n % 7 == 0 or n % 13 == 0:
            return 503 if n % 7 == 0 else 500
        return DROP if n % 11 == 0 else CUT if method == "GET" and n % 5 == 0 else None

    proxy = FaultProxy(s3.endpoint, storm)
    try:
        args = ["score", src, "--model", model, "--out", f"{bucket}/o", "--label-column", "Label"]
        args += ["--window-rows", "50"]  # many units: many requests, each through the storm
        r = _cli(args, {**s3.env(proxy.endpoint), "SPAMJOB_CACHE": str(tmp_path / "cache")})
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    assert {s for _, _, s in proxy.seen} >= {500, 503, DROP, CUT} and len(proxy.seen) > 100
    got = sorted_rows(part_table(f"{bucket}/o"))
    want = sorted_rows(pd.read_parquet(tmp_path / "l" / "predictions"))
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-6)
    same_report(
        json.loads(stores.read_bytes(f"{bucket}/o/report.json")),
        json.loads((tmp_path / "l" / "report.json").read_text()),
    )


@pytest.mark.slow
def test_writes_denied_midway_exit_1_in_one_line_then_a_rerun_completes(s3, inputs, classifier_dir, tmp_path):
    """The bucket's policy turns against the job after a few writes (reads still allowed): one error
    line, exit 1, no _SUCCESS; rerun with writes allowed: the output of an uninterrupted run."""
    bucket = s3.bucket("denied")
    src = put_folder(inputs, f"{bucket}/in")
    base = ["score", src, "--model", str(classifier_dir), "--label-column", "Label", "--window-rows", "50"]
    whole = _cli([*base, "--out", f"{bucket}/whole"], s3.env())
    assert whole.returncode == 0, whole.stderr[-3000:]
    writes = itertools.count(1)
    policy = FaultProxy(
        s3.endpoint, lambda method, path, n: 403 if method in ("PUT", "POST") and next(writes) > 6 else None
    )
    try:
        denied = _cli([*base, "--out", f"{bucket}/o"], s3.env(policy.endpoint))
    finally:
        policy.stop()
    assert denied.returncode == 1 and denied.stderr.count("\n") == 1, denied.stderr[-3000:]
    assert denied.stderr.startswith(f"Error: {bucket}/o/") and "access denied" in denied.stderr, denied.stderr
    left = objects(f"{bucket}/o")
    assert "_SUCCESS" not in left and [n for n in left if n.startswith("_parts/")]  # some units committed
    again = _cli([*base, "--out", f"{bucket}/o"], s3.env())
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(sorted_rows(part_table(f"{bucket}/o")), sorted_rows(part_table(f"{bucket}/whole")))
    same_report(
        json.loads(stores.read_bytes(f"{bucket}/o/report.json")),
        json.loads(stores.read_bytes(f"{bucket}/whole/report.json")),
    )
    names = objects(f"{bucket}/o")
    manifest = json.loads(names["_manifest.json"])
    assert sorted(n for n in names if n.startswith("predictions/")) == sorted(p["part"] for p in manifest["parts"])


@pytest.mark.slow
def test_no_credential_lands_in_any_file_or_log(s3, inputs, classifier_dir):
    bucket = s3.bucket("secrets")
    r = _cli(["score", str(inputs), "--model", str(classifier_dir), "--out", f"{bucket}/o"], s3.env())
    assert r.returncode == 0, r.stderr
    denied = _cli(["score", "s3://secrets/nothing/", "--model", str(classifier_dir), "--out", f"{bucket}/p"], s3.env())
    assert denied.returncode == 1
    written = b"".join(objects(f"{bucket}/o").values()) + (r.stdout + r.stderr + denied.stderr).encode()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert CREDENTIALS[name].encode() not in written


def test_an_attempt_that_loses_the_commit_deletes_its_part(s3):
    """Two attempts at one unit (a rerun beside a live task): one sidecar, the other part gone."""
    from spamjob.scoring.output.store import StoreFolder

    out = f"{s3.bucket('race')}/o"
    schema = pa.schema([("x", pa.int64())])
    where = {"source": "in.parquet", "unit": 0, "byte_block": False}
    a, b = StoreFolder(out), StoreFolder(out)
    parts = []
    for folder in (a, b):
        part = folder.part_writer("part-0123456789ab-000000", "parquet")
        part.write(pa.table({"x": [1, 2]}, schema=schema))
        parts.append(part)
    a.commit("part-0123456789ab-000000", where, parts[0], schema, [], {})
    b.commit("part-0123456789ab-000000", where, parts[1], schema, [], {})
    names = objects(out)
    assert [n for n in names if n.startswith("predictions/")] == [
        f"predictions/part-0123456789ab-000000.{a.attempt}.parquet"
    ]
    assert a.committed("part-0123456789ab-000000", where) and b.committed("part-0123456789ab-000000", where)
    assert not a.committed("part-0123456789ab-000000", {**where, "byte_block": True})


@pytest.mark.slow
def test_engine_ray_reads_and_writes_s3(s3, inputs, classifier_dir):
    """--engine ray with the inputs, the model and --out in the bucket: Ray's own parts in
    predictions/, the same counts as `spamjob score`, `spamjob report` on the URI alike."""
    pytest.importorskip("ray")
    bucket = s3.bucket("ray")
    src = f"{bucket}/in/a.parquet"
    stores.upload(inputs / "a.parquet", src)
    model = put_folder(classifier_dir, f"{bucket}/model")
    args = ["score", src, "--model", model, "--label-column", "Label"]
    by_ray = _cli([*args, "--out", f"{bucket}/ray", "--engine", "ray"], {**s3.env(), "RAY_USAGE_STATS_ENABLED": "0"})
    assert by_ray.returncode == 0, by_ray.stderr[-3000:]
    assert "scored 300 of 300 rows" in by_ray.stdout and f"{bucket}/ray/report.md" in by_ray.stdout
    by_spamjob = score(*args[1:], "--out", f"{bucket}/spamjob")
    assert by_spamjob.exit_code == 0, by_spamjob.output
    names = objects(f"{bucket}/ray")
    assert "_SUCCESS" in names and [n for n in names if n.startswith("predictions/") and n.endswith(".parquet")]
    mine, theirs = (json.loads(stores.read_bytes(f"{bucket}/{o}/report.json")) for o in ("ray", "spamjob"))
    for key in ("rows", "accuracy", "predicted", "labels", "spam_probability_histogram"):
        assert mine[key] == theirs[key], key
    counted = CliRunner().invoke(cli, ["report", f"{bucket}/ray", "--label-column", "Label"])
    assert counted.exit_code == 0 and "counted 300 rows" in counted.output, counted.output


@pytest.mark.slow
def test_large_csvs_in_byte_blocks_from_s3_on_two_gloo_ranks_equal_local(s3, sms_path, classifier_dir, tmp_path):
    """Two real ranks read their byte blocks by ranged requests; the file whose blocks fail their
    check falls back to being read whole, in the store too; the output equals one local process's."""

    split, odd = large_csvs(sms_path, tmp_path / "in")
    bucket = s3.bucket("blocks")
    src = put_folder(tmp_path / "in", f"{bucket}/in")
    common = ["--model", str(classifier_dir), "--label-column", "label", "--block-mb", "1", "--no-progress"]
    local = score(str(split), str(odd), *common[:-1], "--out", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    launch = TWO_CPU_RANKS
    two = subprocess.run(
        [*launch, "jobs/score.py", f"{src}/split.csv", f"{src}/odd.csv", *common, "--out", f"{bucket}/two"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        env={**os.environ, **s3.env(), "ACCELERATE_USE_CPU": "1"},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    rep = json.loads(stores.read_bytes(f"{bucket}/two/report.json"))
    want = json.loads((tmp_path / "local" / "report.json").read_text())
    assert rep["num_processes"] == 2 and rep["rows"] == want["rows"] and rep["labels"] == want["labels"]
    assert list(rep["csv_read_whole"]) == [f"{src}/odd.csv"]
    key = ["id", "text", "label"]  # the two files share ids and texts
    got = part_table(f"{bucket}/two").sort_values(key).reset_index(drop=True)
    local_rows = pd.read_parquet(tmp_path / "local" / "predictions").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, local_rows, check_exact=False, atol=1e-5)
    names = objects(f"{bucket}/two")
    manifest = json.loads(names["_manifest.json"])
    assert sorted(n for n in names if n.startswith("predictions/")) == sorted(p["part"] for p in manifest["parts"])


@pytest.mark.slow
def test_the_kubernetes_cronjob_for_buckets_runs_as_written(s3, inputs, classifier_dir, tmp_path):
    """jobs/k8s/score-cronjob-s3.yaml's container command, its env, against the local endpoint: two
    nights, the second scoring only the object that came since."""
    import yaml

    doc = yaml.safe_load((REPO / "jobs" / "k8s" / "score-cronjob-s3.yaml").read_text())
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    put_folder(inputs, f"{s3.bucket('spamjob-data')}/inbox")
    put_folder(classifier_dir, f"{s3.bucket('spamjob-models')}/current")
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update({**s3.env(), "SPAMJOB_CACHE": str(tmp_path / "cache"), "SPAMJOB_GPUS": "0"})
    r = _cli_raw([*container["command"], *container["args"]], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((tmp_path / "cache" / "classifiers").iterdir())  # the model, fetched once into the pod's cache
    new = b"id,Text,Label\n900,win a prize now,spam\n901,see you at 5,ham\n"  # the inputs' columns
    stores.write_bytes("s3://spamjob-data/inbox/later/d.csv", new)
    r = _cli_raw([*container["command"], *container["args"]], env)  # the next night: only the new object
    assert r.returncode == 0, r.stderr[-3000:]
    written = objects("s3://spamjob-data/scored/inbox")
    night, every = json.loads(written["report.json"]), json.loads(written["cumulative.json"])
    assert (night["incremental"]["run"], night["incremental"]["files_scored"], night["rows"]["read"]) == (2, 1, 2)
    assert every["rows"]["read"] == 600 + 2 and "_SUCCESS" in written  # 600 rows the first night


def _cli_raw(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, **env})


def test_uris_map_to_their_store_clients(monkeypatch):
    """No request made: S3 (the region from the environment), GCS, and Azure needing adlfs."""
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    stores.s3_region.cache_clear()
    loc = stores.locate("s3://bucket/a/b.parquet")
    assert (loc.kind, loc.path, loc.fs.region) == ("s3", "bucket/a/b.parquet", "eu-west-1")
    assert stores.locate("gs://bucket/x/").fs.type_name == "gcs" and stores.locate("gs://bucket/x/").path == "bucket/x"
    assert stores.parent("s3://b/a/c.csv") == "s3://b/a" and stores.parent("s3://b") == "s3://b"
    assert stores.join("s3://b/a/", "predictions", "/x.json") == "s3://b/a/predictions/x.json"
    if importlib.util.find_spec("adlfs") is None:
        with pytest.raises(SpamjobError, match=r"an abfs:// URI needs adlfs: pip install 'spamjob\[azure\]'"):
            stores.locate("abfs://container/x")
    stores.s3_region.cache_clear()


def test_a_store_error_is_one_line_without_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-value-123")
    with pytest.raises(SpamjobError) as e, stores.store_errors("s3://b/x"):
        raise OSError("AWS Error ACCESS_DENIED during HeadObject operation: a-secret-value-123\ndetail")
    assert str(e.value) == "s3://b/x: access denied (check the credentials and the bucket's policy)"
    with pytest.raises(SpamjobError) as e, stores.store_errors("s3://b/x"):
        raise OSError("odd failure mentioning a-secret-value-123\nmore")
    assert str(e.value) == "s3://b/x: odd failure mentioning ***"
    with pytest.raises(SpamjobError, match=r"^s3://b/x: not found$"), stores.store_errors("s3://b/x"):
        raise FileNotFoundError("gone")
