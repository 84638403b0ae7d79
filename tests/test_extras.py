"""Each optional extra installed alone into a new virtual environment, as a user who needs only
that one installs it, then the smallest end-to-end command it exists for. CI's own environment
holds every extra at once, which can hide a dependency one of them lacks (Ray's path resolution
needs fsspec's HTTP filesystem, whose aiohttp only another extra brought)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
EXTRAS = {  # an extra, and the libraries (of these) it brings
    "ray": ("ray",),
    "spark": ("pyspark",),
    "onnx": ("onnxruntime",),
    "openvino": ("onnxruntime", "openvino"),  # OpenVINO runs the graph ONNX Runtime checks
    "lora": ("peft",),
    "tf": ("tensorflow",),
    "s3": ("s3fs",),
    "gcs": ("gcsfs",),
    "azure": ("adlfs",),
    "tensorboard": ("tensorboard",),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
}
LIBRARIES = sorted({lib for libs in EXTRAS.values() for lib in libs})
STORES = {"s3": "s3", "gcs": "gs", "azure": "abfs"}  # an extra for a store, and the store's URI scheme


@pytest.fixture(scope="module")
def four_files(tmp_path_factory) -> Path:
    """A folder of four Parquet files, 40 messages."""
    folder = tmp_path_factory.mktemp("four")
    for k in range(4):
        pq.write_table(
            pa.table({"text": [f"message {k}.{i}: call now to claim" for i in range(10)]}), folder / f"part{k}.parquet"
        )
    return folder


@pytest.fixture(scope="module")
def torch_site(tmp_path_factory) -> Path:
    """The CPU build of torch and spamjob's own dependencies, installed once into a folder of its
    own that every extra's environment sees first (pip counts them installed), as README's
    install line puts torch first: each environment then installs spamjob and its extra's own
    libraries alone (~20 s saved per extra by torch, ~15 s more by the rest)."""
    import tomllib

    folder = tmp_path_factory.mktemp("torch-site")
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = ["torch==2.13.0", *(d for d in base if not d.startswith("torch"))]
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(folder), *wanted],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return folder


def _venv_with(extra: str, root: Path, torch_site: Path) -> Path:
    """A new virtual environment that sees torch (`torch_site`, through a .pth file: pip counts it
    installed) and holds spamjob with `extra` alone."""
    venv = root / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    (next((venv / "lib").glob("python3*")) / "site-packages" / "torch-first.pth").write_text(f"{torch_site}\n")
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", f"{REPO}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def _command(extra: str, venv: Path, ctx: dict) -> tuple[list[str], str]:
    """The command a user of `extra` runs first, and what its output says when it worked."""
    spamjob, out = str(venv / "bin" / "spamjob"), str(ctx["tmp"] / "out")
    return {
        "ray": (
            [
                spamjob,
                "score",
                str(ctx["files"]),
                "--model",
                ctx["model"],
                "--out",
                out,
                "--engine",
                "ray",
                "--no-progress",
            ],
            "scored 40 of 40 rows",
        ),
        "spark": (
            [
                str(venv / "bin" / "python"),
                str(REPO / "jobs" / "spark_score.py"),
                str(ctx["files"]),
                "--model",
                ctx["model"],
                "--out",
                out,
            ],
            "scored 40 of 40 rows on Spark",
        ),
        **{
            store: (
                [
                    spamjob,
                    "score",
                    f"{scheme}://extras/in",
                    "--model",
                    ctx["model"],
                    "--out",
                    f"{scheme}://extras/out",
                    "--no-progress",
                ],
                "scored 40 of 40 rows",
            )
            for store, scheme in STORES.items()
        },
        "onnx": (  # the extra's main use: scoring on ONNX Runtime (its graph exported and checked first)
            [spamjob, "score", str(ctx["files"]), "--model", ctx["model"], "--out", out, "--runtime", "onnxruntime"],
            "scored 40 of 40 rows",
        ),
        "openvino": (  # scoring on OpenVINO, bf16 where the CPU has the unit (the graph made and checked first)
            [spamjob, "score", str(ctx["files"]), "--model", ctx["model"], "--out", out, "--runtime", "openvino"],
            "scored 40 of 40 rows",
        ),
        "lora": (
            [
                spamjob,
                "train",
                "--data",
                ctx["data"],
                "--weights",
                "random",
                "--n-layers",
                "2",
                "--emb-dim",
                "32",
                "--n-heads",
                "2",
                "--trainable",
                "lora",
                "--epochs",
                "1",
                "--out",
                out,
            ],
            "accuracy: train",
        ),
        "tf": (
            [spamjob, "generate", "--weights", ctx["openai"], "Every effort moves you", "--max-new-tokens", "5"],
            "Every effort moves you",
        ),
        **{  # a tracker's extra: a tiny fine-tune reporting to it (W&B offline: WANDB_MODE in _run_alone)
            tracker: (
                [spamjob, "train", "--data", ctx["data"], *TINY_RUN, "--report-to", tracker, "--out", out],
                "accuracy: train",
            )
            for tracker in ("tensorboard", "mlflow", "wandb")
        },
    }[extra]


@pytest.fixture(scope="module")
def openai_dir(tmp_path_factory) -> Path:
    """A tiny checkpoint in OpenAI's TensorFlow layout (written with this environment's TensorFlow)."""
    from support import tiny_hf_model, write_openai_dir

    return write_openai_dir(tiny_hf_model(seed=5), tmp_path_factory.mktemp("openai") / "124M")


@pytest.fixture(scope="module")
def buckets(four_files):
    """The four files under `extras/in` in each store's local server (S3, GCS, and Azure where
    Azurite is installed); the environment that points the clients at them."""
    from store_servers import Azurite, GcsEmulator, MotoS3, azurite_command, put_folder, serving

    kinds = (MotoS3, GcsEmulator, Azurite) if azurite_command() else (MotoS3, GcsEmulator)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serving(kind())) for kind in kinds]
        for server in servers:
            put_folder(four_files, f"{server.bucket('extras')}/in")
        yield {k: v for server in servers for k, v in server.env().items()}


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXTRAS))
def test_an_extra_installed_alone_runs_its_command(
    extra, assets, four_files, classifier_dir, data_dir, openai_dir, buckets, torch_site, tmp_path
):
    if extra == "azure" and "AZURE_STORAGE_CONNECTION_STRING" not in buckets:
        pytest.skip("Azurite is not installed (.ci/run installs it: npm install --prefix .ci/node azurite)")
    venv = _venv_with(extra, tmp_path, torch_site)
    try:
        _run_alone(
            extra,
            venv,
            {
                "tmp": tmp_path,
                "files": four_files,
                "model": str(classifier_dir),
                "data": str(data_dir),
                "openai": str(openai_dir),
                "env": buckets,
            },
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 1-2 GB each


def _run_alone(extra: str, venv: Path, ctx: dict) -> None:
    python = str(venv / "bin" / "python")
    code = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    probe = subprocess.run([python, "-c", code, *LIBRARIES], capture_output=True, text=True, timeout=120)
    assert json.loads(probe.stdout) == sorted(EXTRAS[extra])  # this extra's libraries, and no other's
    cmd, said = _command(extra, venv, ctx)
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "PYSPARK_PYTHON": python,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "offline",
        **ctx["env"],
    }
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ctx["tmp"], timeout=900)
    assert r.returncode == 0 and said in r.stdout, (r.stdout + r.stderr)[-4000:]
    assert "Traceback" not in r.stderr
