"""`spamjob score --engine ray` on a Ray cluster of two `ray start` nodes that do not share every
disk: the second node runs in a mount namespace of its own with a tmpfs over PRIVATE, so a folder
there is one each node sees differently, as on machines without a shared mount. The cluster
requires Ray's token authentication. Nodes start without store credentials, as a cluster whose
credentials were set on the driver only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_servers import FaultProxy, MotoS3, put_folder, serving

pytestmark = pytest.mark.slow  # two Ray nodes: ~20 s to start
ray = pytest.importorskip("ray")  # the [ray] extra; .ci/run installs it

TOKEN = "spamjob-test-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


def _ray(*args: str, env: dict, private: Path | None = None) -> None:
    """`ray start ...` (in a mount namespace with a tmpfs over `private`, when given)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    command = [ray_bin, "start", *args]
    if private is not None:
        mount = f"mount -t tmpfs tmpfs {private} && exec {' '.join(command)}"
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount]
    r = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, assets):
    """(address, PRIVATE, SHARED): a head node and a worker node with a disk view of its own."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("these tests need root and unshare(1) for a node with a mount namespace of its own")
    root = tmp_path_factory.mktemp("cluster")
    private, shared = root / "private", root / "shared"
    private.mkdir()
    shared.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no credentials on the nodes
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
    common = ["--num-cpus", "1", "--object-store-memory", str(200 << 20), "--disable-usage-stats"]
    try:
        _ray(
            "--head",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard",
            "false",
            *common,
            env=env,
        )
        address = f"127.0.0.1:{port}"
        _ray("--address", address, "--node-ip-address", "127.0.0.1", *common, env=env, private=private)
        yield address, private, shared
    finally:
        subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True, timeout=120
        )


@pytest.fixture(scope="module")
def rows(sms_path, tmp_path_factory) -> Path:
    sms = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"]).head(300)
    path = tmp_path_factory.mktemp("rows") / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(sms.assign(id=range(300)), preserve_index=False), path, row_group_size=50)
    return path


def score(address: str, *args: str, env: dict | None = None, token: bool = True) -> subprocess.CompletedProcess:
    """`spamjob score --engine ray` as its own driver process, with (or without) the cluster's token."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    if token:
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
    cmd = [sys.executable, "-m", "spamjob.cli", "score", *args, "--engine", "ray", "--ray-address", address]
    return subprocess.run([*cmd, "--no-progress"], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0]


def test_two_nodes_score_a_shared_out_exactly_and_a_rerun_says_it_is_complete(cluster, rows, classifier_dir):
    address, _, shared = cluster
    out = shared / "o"
    r = score(address, str(rows), "--model", str(classifier_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "scored 300 of 300 rows" in r.stdout and (out / "_SUCCESS").is_file()
    local = subprocess.run(
        [sys.executable, "-m", "spamjob.cli", "score", str(rows), "--model", str(classifier_dir)]
        + ["--out", str(shared / "local"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, local.stderr
    key = ["id"]
    got = pd.read_parquet(out / "predictions").sort_values(key).reset_index(drop=True)
    want = pd.read_parquet(shared / "local" / "predictions").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=False, atol=1e-6)
    again = score(address, str(rows), "--model", str(classifier_dir), "--out", str(out))
    assert again.returncode == 0 and again.stdout.startswith(f"already complete: {out} holds this job's finished")


def test_a_local_out_that_a_node_does_not_see_fails_before_any_work(cluster, rows, classifier_dir):
    address, private, _ = cluster
    out = private / "o"
    line = one_line(score(address, str(rows), "--model", str(classifier_dir), "--out", str(out)))
    assert line.startswith(f"Error: --out {out} is not shared: Ray node(s) ") and "(s3://" in line
    assert list(private.iterdir()) == []  # no plan, no probe left


# The driver of the test below: spamjob's CLI, with one part of the written output gone from the
# driver's view before its check (as a part written to another node's own disk is).
LOSE_A_PART = """
import sys
from spamjob.engines import ray as engine
write = engine._write
def lose_a_part(scored, out):
    written = write(scored, out)
    next((out.path / "predictions").glob("*.parquet")).unlink()
    return written
engine._write = lose_a_part
from spamjob.cli import main
sys.argv[0] = "spamjob"
main()
"""


def test_a_part_the_driver_cannot_see_fails_the_job_before_success(cluster, rows, classifier_dir):
    address, _, shared = cluster
    out = shared / "lost"
    args = [str(rows), "--model", str(classifier_dir), "--out", str(out), "--window-rows", "50"]  # 6 parts
    args += ["--engine", "ray", "--ray-address", address]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    r = subprocess.run(
        [sys.executable, "-c", LOSE_A_PART, "score", *args, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]  # after Ray Data's own progress lines
    assert line.startswith("Error: the Ray job wrote 300 rows but ") and "holds 250 where" in line, line
    assert "not marked complete" in line
    assert not (out / "_SUCCESS").exists() and not (out / "report.json").exists()


def test_a_node_without_store_credentials_is_one_line_naming_it(cluster, rows, classifier_dir):
    """The store (moto behind a proxy that, as a private bucket does, refuses unsigned requests) is
    reached by the driver's credentials; the nodes have none. The endpoint reaches the workers
    through Ray's runtime_env (else they would ask AWS itself); the secret does not."""
    address, _, shared = cluster
    with serving(MotoS3()) as s3:
        src = put_folder(rows.parent, f"{s3.bucket('nodes')}/in")
        proxy = FaultProxy(s3.endpoint, lambda method, path, n: None, signed_only=True)
        try:
            line = one_line(
                score(
                    address,
                    src,
                    "--model",
                    str(classifier_dir),
                    "--out",
                    str(shared / "s3"),
                    env=s3.env(proxy.endpoint),
                )
            )
        finally:
            proxy.stop()
    assert line.startswith("Error: Ray node ") and f"cannot reach {src} (access denied" in line, line
    assert "spamjob passes the endpoint settings (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION)" in line
    assert "give each node its credentials" in line and s3.env()["AWS_SECRET_ACCESS_KEY"] not in line
    assert not (shared / "s3").exists()


def test_a_refused_join_keeps_rays_reason(cluster, rows, classifier_dir, tmp_path):
    address, _, _ = cluster
    line = one_line(
        score(address, str(rows), "--model", str(classifier_dir), "--out", str(tmp_path / "o"), token=False)
    )
    assert line.startswith(f"Error: cannot join the Ray cluster {address}: Failed to connect"), line
    assert "Authentication token is missing or incorrect" in line and "RAY_AUTH_TOKEN" in line
    assert not (tmp_path / "o").exists()
