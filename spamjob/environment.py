"""`spamjob env`: this machine as spamjob sees it, and what a `train` and a `score` would pick on
it (device, runtime, precision, threads, workers) and why, in the way `accelerate env` and
`transformers env` report theirs: the text a user pastes into a bug report. Nothing is loaded,
measured or written."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

from spamjob import __version__, extras, hardware, threads
from spamjob.config import TrainConfig, precision_choice


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def facts(model: str | None = None) -> dict:
    """Everything `spamjob env` says, as JSON (`model`: a classifier folder, its scoring graphs)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    cpu = hardware.cpu()
    return {
        "spamjob": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "accelerate": _version("accelerate"),
        "gpus": gpus,
        "cpu": cpu.record(),
        "cpus": {
            "usable": threads.usable_cpus(),
            "cgroup_quota": threads.cgroup_cpu_quota(),
            "local_processes": threads.local_processes(),
        },
        "extras": {name: extras.is_available(name) for name in extras.EXTRAS},
        "train": train_choice(bool(gpus)),
        "score": score_choice(bool(gpus)),
        **({"model": model_graphs(model)} if model else {}),
    }


def model_graphs(model: str) -> dict:
    """Whether a classifier's ONNX Runtime graphs are in this machine's cache (its first such job
    otherwise makes them: `spamjob train --scoring-graphs` makes them ahead)."""
    if not extras.is_available("onnx"):
        return {"path": model, "onnxruntime": "not installed"}
    from spamjob.scoring.runtimes.ort import graph_ready

    return {"path": model, **{name: graph_ready(model, q) for name, q in (("fp32", None), ("int8", "int8"))}}


def train_choice(gpu: bool) -> dict:
    """What `spamjob train` with its defaults would use here."""
    cfg = TrainConfig().resolved()
    precision, why = precision_choice(cfg.mixed_precision, gpu, cfg.width)
    picked = threads.choose_threads()
    return {"device": "cuda" if gpu else "cpu", "precision": precision, "why": why, "threads": picked["threads"]}


def score_choice(gpu: bool) -> dict:
    """What `spamjob score` with its defaults would use here (its runtime as `--runtime auto` resolves)."""
    from spamjob.scoring import runtimes

    precision, why = runtimes.precision("auto", gpu)
    runtime = runtimes.resolve("auto", runtimes.Request("cuda" if gpu else "cpu", precision))
    picked = threads.choose_threads(independent=True)
    return {
        "device": "cuda" if gpu else "cpu",
        "runtime": runtime,
        "precision": precision,
        "why": why,
        "model_workers": 1 if gpu else picked["threads"],
        "tokenizer_processes": threads.tokenizer_workers(gpu),
    }


def text(f: dict) -> str:
    """The report as `- key: value` lines."""
    cpu, cpus = f["cpu"], f["cpus"]
    features = " ".join(cpu["features"]) or "none"
    train, score = f["train"], f["score"]
    lines = [
        "Copy-and-paste the text below in your bug report.",
        "",
        f"- spamjob version: {f['spamjob']}",
        f"- Platform: {f['platform']}",
        f"- Python version: {f['python']}",
        f"- torch version: {f['torch']} (CPU kernels: {f['torch_cpu_capability']})",
        f"- accelerate version: {f['accelerate']}",
        f"- GPUs: {', '.join(f['gpus']) or 'none'}",
        f"- CPU: {cpu['model']}; matrix features: {features} (read from {cpu['read_from']})",
        f"- CPUs usable: {cpus['usable']} (cgroup quota: {cpus['cgroup_quota'] or 'none'}); "
        f"local processes: {cpus['local_processes']}",
        f"- extras installed: {', '.join(n for n, ok in f['extras'].items() if ok) or 'none'}",
        f"- spamjob train would use: {train['device']}, {_precision(train['precision'])} ({train['why']}), "
        f"{train['threads']} threads per process",
        f"- spamjob score would use: {score['device']}, runtime {score['runtime']}, "
        f"{_precision(score['precision'])} ({score['why']}), {score['model_workers']} model workers, "
        f"{score['tokenizer_processes']} tokenizer processes",
    ]
    if "model" in f:
        m = f["model"]
        state = m.get("onnxruntime") or ", ".join(f"{n} {'ready' if m[n] else 'not made'}" for n in ("fp32", "int8"))
        lines.append(f"- classifier {m['path']}: ONNX Runtime graphs in the cache: {state}")
    return "\n".join(lines)


def _precision(value: str) -> str:
    return {"no": "fp32"}.get(value, value)
