"""benchmarks/: the GPU check script end to end in its smoke size on this CPU.

It runs both benchmark scripts (fine-tuning: reference preset vs default; scoring:
reference loop vs transformers vs `spamjob score`) and the launcher, so the one prepared
GPU session runs scripts that CI already exercised.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_layout(assets: dict, root: Path) -> Path:
    """The located test assets as the folder gpu_check.sh reads (laid out like ../shared)."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "SMSSpamCollection").symlink_to(assets["SMS"])
    (root / "gpt2-tokenizer").symlink_to(assets["SPAMJOB_TOKENIZER"])
    return root


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_step(assets, tmp_path):
    env = {
        **os.environ,
        "SMOKE": "1",
        "SHARED": str(shared_layout(assets, tmp_path / "shared")),
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "SPAMJOB_GPUS": "0",
    }
    r = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    out = tmp_path / "out"
    assert "all steps passed" in r.stdout
    finetune = (out / "finetune.txt").read_text()
    assert "speed-up of default over reference (job wall" in finetune and "GEMM 512x768x3072: fp32" in finetune
    assert "speed-up of default over reference-bf16" in finetune
    runs = json.loads((out / "finetune.json").read_text())["runs"]
    assert [x["name"] for x in runs] == ["reference", "reference-bf16", "reference-fast", "default-fp32", "default"]
    assert all(x["test_acc"] > 0 for x in runs) and runs[1]["precision"] == "bf16" and runs[3]["precision"] == "no"
    assert "speed-up of reference-fast over reference (job wall" in finetune
    score = json.loads((out / "score.json").read_text())["results"]
    assert [x["name"][:3] for x in score] == ["(a)", "(b)", "(b)", "(c)", "(c)"]
    assert all(x["msg_per_s"] > 0 for x in score)
    assert "'num_processes': 1" in (out / "launcher.txt").read_text()
    assert "total on the critical path" in (out / "host.txt").read_text()
    ray_txt = (out / "ray.txt").read_text()
    if importlib.util.find_spec("ray"):  # the [ray] extra (.ci/run installs it): the step ran and measured
        lines = [ln for ln in ray_txt.splitlines() if ln.startswith(("spamjob ", "ray "))]
        assert [ln.split()[0] for ln in lines] == ["spamjob", "ray"], ray_txt
        assert "same label 100.00%" in lines[1], ray_txt
    else:
        assert ray_txt.startswith("== ray: not installed here, skipped"), ray_txt


def test_gpu_check_stops_with_one_line_without_the_data(tmp_path):
    env = {**os.environ, "SHARED": str(tmp_path / "missing"), "OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "set SHARED" in r.stderr


@pytest.mark.slow
def test_score_bench_smoke_with_onnx_runtime_rows(assets, tmp_path):
    pytest.importorskip("onnxruntime")
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/score_bench.py",
            "--smoke",
            "--sms",
            str(assets["SMS"]),
            "--variants",
            "fp32,default,int8,ort,openvino,onnx,onnx-int8,openvino-bf16,openvino-int8",
            "--json",
            str(tmp_path / "s.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    names = [x["name"] for x in rows]
    assert [n[:3] for n in names] == ["(a)", "(b)", "(b)", *["(d)"] * 4, *["(c)"] * 5]
    assert "transformers GPT2ForSequenceClassification fp32, batch" in names[1] and "bf16" in names[2]
    assert [n.split(",")[0] for n in names[3:7]] == [
        "(d) ONNX Runtime fp32",
        "(d) ONNX Runtime int8",
        "(d) OpenVINO bf16",
        "(d) OpenVINO int8",
    ]
    assert names[7:] == [  # the tests' CPU (conftest): no bf16 unit, so the defaults are fp32
        "(c) spamjob score, torch, fp32",
        "(c) spamjob score (defaults), torch, fp32",
        "(c) spamjob score (default runtime), onnxruntime, int8",
        "(c) spamjob score, onnxruntime, fp32",
        "(c) spamjob score, openvino, fp32",
    ]
    assert all(x["msg_per_s"] > 0 for x in rows) and rows[3]["agreement"]["same_prediction"] == 1.0
    assert all(set(x["tried"]) == {"8", "32", "256"} for x in rows[1:3])
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["best_peer"] in names[1:7] and set(out["facts"]["gemm_gflops"]) == {"fp32", "bf16", "int8"}
    for line in ("CPU: ", "GEMM 512x768x3072: fp32 ", "best peer: ", "ONNX Runtime int8", "agreement with fp32"):
        assert line in r.stdout


def test_gpu_check_stops_before_any_step_without_its_packages(assets, tmp_path):
    fake = tmp_path / "fake"
    (fake / "accelerate").mkdir(parents=True)
    (fake / "accelerate" / "__init__.py").write_text("raise ImportError('no accelerate here (test)')\n")
    env = {
        **os.environ,
        "SHARED": str(shared_layout(assets, tmp_path / "shared")),
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(fake),
    }
    r = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and "lacks a package every step needs" in r.stderr and "no accelerate here" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "== prepare" not in r.stdout


def test_csv_read_bench_smoke(assets):
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/csv_read_bench.py",
            "--mb",
            "3",
            "--block-mb",
            "1",
            "--processes",
            "1,2",
            "--sms",
            str(assets["SMS"]),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "blocks checked equal to the whole file's records" in r.stdout
    rows = [line.split("|") for line in r.stdout.splitlines() if line.strip()[:1].isdigit() and "|" in line]
    assert [int(x[0]) for x in rows] == [1, 2]
    off_mb, auto_mb = (float(rows[1][k].split()[1].replace(",", "")) for k in (1, 2))
    assert auto_mb < off_mb  # two processes: each reads about half the file, not all of it


@pytest.mark.slow
def test_windows_bench_smoke(assets):
    """One window against several, padded tokens and seconds, on a tiny model."""
    args = ["--n", "200", "--windows", "4", "--layers", "1", "--dim", "32", "--heads", "2", "--sms", str(assets["SMS"])]
    r = subprocess.run(
        [sys.executable, "benchmarks/windows_bench.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [line.split() for line in r.stdout.splitlines() if line[:1].isdigit()]
    assert [row[:2] for row in rows] == [["1", "window"], ["4", "windows"]]
    assert int(rows[1][2].replace(",", "")) >= int(rows[0][2].replace(",", ""))  # smaller sorts pad no less


@pytest.mark.slow
def test_store_bench_smoke(assets):
    """The local-disk and S3-endpoint runs side by side, with requests per unit counted."""
    r = subprocess.run(
        [sys.executable, "benchmarks/store_bench.py", "--smoke", "--sms", str(assets["SMS"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| local disk |" in r.stdout and "| S3 endpoint |" in r.stdout and "S3 endpoint / local disk" in r.stdout


@pytest.mark.slow
def test_ort_bench_smoke(assets, tmp_path):
    """Every int8 recipe and thread layout, quiet and loaded, in one run."""
    pytest.importorskip("onnxruntime")
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/ort_bench.py",
            "--smoke",
            "--sms",
            str(assets["SMS"]),
            "--json",
            str(tmp_path / "o.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "o.json").read_text())["rows"]
    assert len([x for x in rows if x["part"] == "int8"]) == 5 and "(spamjob's)" in r.stdout
    assert len([x for x in rows if x["part"] == "layout"]) == 12 and all(x["msg_per_s"] > 0 for x in rows)


@pytest.mark.slow
def test_dry_run_bench_smoke(assets):
    """The dry run's prediction beside the job it predicts, in one run; the dry run writes nothing."""
    r = subprocess.run(
        [sys.executable, "benchmarks/dry_run_bench.py", "--smoke", "--sms", str(assets["SMS"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| predicted job time |" in r.stdout and "measured / predicted:" in r.stdout
    assert r.stdout.startswith("CPU: ") and "calibration: " in r.stdout
