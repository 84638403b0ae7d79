"""The ONNX Runtime runtime (`--runtime onnxruntime`; `pip install 'spamjob[onnx]'`): CPU scoring
in fp32 or int8 on the classifier's graph, made once per classifier and versions into the cache,
checked against spamjob's torch path (ort_graph.py), and checked against its recorded sha256
each time it is reused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from spamjob import __version__, digests, extras
from spamjob.artifact import load_classifier, local_folder, temperature
from spamjob.digests import damaged, differ, remade
from spamjob.errors import SpamjobError
from spamjob.fsutil import cache_dir, locked, read_json, sha256_file, write_json
from spamjob.scoring.runtimes import AGREEMENT_SAMPLE, Loaded, Request
from spamjob.scoring.runtimes.ort_graph import GRAPH_FILES, build, exporter, sample_texts
from spamjob.scoring.runtimes.ort_session import OrtPredictor, open_session, require_onnxruntime, session_settings


class OrtRuntime:
    name = "onnxruntime"
    needs_weights = False  # the graph holds them (the cached graph's first use loads them to make it)
    precisions = ("no",)  # and --quantize int8

    def available(self) -> bool:
        return extras.is_available("onnx")

    def suits(self, request: Request) -> bool:
        """CPU int8: well ahead of torch's int8; in fp32 on a par with torch, with a graph to make
        (benchmarks/RESULTS.md, "ONNX Runtime inside spamjob score")."""
        return (
            request.quantize == "int8" and not request.gpu and not request.compile and request.mixed_precision == "no"
        )

    def check(self, request: Request) -> None:
        if request.gpu:
            raise SpamjobError("--runtime onnxruntime is for CPU scoring; on a GPU use --runtime torch (bf16)")
        if request.compile:
            raise SpamjobError("--compile is for --runtime torch")
        if request.mixed_precision != "no":
            raise SpamjobError(f"--runtime onnxruntime runs fp32 (or --quantize int8), not {request.mixed_precision}")
        require_onnxruntime("--runtime onnxruntime")

    def load(self, clf, folder, request: Request) -> Loaded:
        """The classifier's cached, checked graph in one session; int8's agreement from the graph's
        check when that saw at least AGREEMENT_SAMPLE messages, else from a sample of the job (fp32 graph)."""
        session = session_settings(request.workers)
        graph = scoring_graph(folder, request.quantize)
        predictor = OrtPredictor(clf, open_session(graph, session), request.batch_tokens, request.workers)
        version = require_onnxruntime("").__version__
        loaded = Loaded(
            predictor,
            {"name": self.name, "version": version, "session": session},
            {"name": self.name, "version": version, "session": {k: v for k, v in session.items() if k != "workers"}},
        )  # the worker count changes no prediction and follows the machine's load: not in the plan
        if request.quantize == "int8":
            check = read_json(graph.parent / "spamjob_onnx.json")["checked_with_onnxruntime"]["int8"]
            if check["messages"] >= AGREEMENT_SAMPLE:
                loaded.checked = {
                    **check,
                    "measured_on": "the classifier's test messages, when its int8 ONNX graph was made",
                }
            else:  # too few messages were at hand then (no test split): sample this job
                fp32 = open_session(graph.with_name("model.onnx"), session)
                loaded.reference = OrtPredictor(clf, fp32, request.batch_tokens, request.workers)
        return loaded


RUNTIME = OrtRuntime()


def scoring_graph(model: str | os.PathLike, quantize: str | None = None) -> Path:
    """The classifier's graph for scoring (model.onnx, or model.int8.onnx with `quantize`): made
    once per classifier and versions of spamjob, torch and onnxruntime into the cache, checked
    like every export (within ort_graph.TOLERANCE of spamjob, on its SAMPLE and AGREEMENT_SAMPLE test
    messages: a graph that differs is never used), and reused while its sha256 holds.
    spamjob_onnx.json, written last, marks a folder whose graphs passed."""
    run_dir = local_folder(model)
    folder = _graph_folder(run_dir)
    graph = folder / ("model.int8.onnx" if quantize else "model.onnx")
    with locked(folder.with_name(f"{folder.name}.lock")):
        checked = read_json(folder / "spamjob_onnx.json") if (folder / "spamjob_onnx.json").is_file() else {}
        if ("int8" if quantize else "fp32") in checked.get("checked_with_onnxruntime", {}):
            if (why := _damage(folder, checked, graph.name)) is None:
                return graph
            remade(str(graph), why)
        (folder / "spamjob_onnx.json").unlink(missing_ok=True)
        clf = load_classifier(run_dir)
        meta = build(clf, folder, quantize, sample_texts(clf, AGREEMENT_SAMPLE))
        meta["files"] = digests.record(folder, [n for n in GRAPH_FILES if (folder / n).is_file()])
        write_json(folder / "spamjob_onnx.json", meta)
    return graph


def _graph_folder(run_dir: Path) -> Path:
    """Where the cache keeps a classifier's graphs: keyed by its weights, its temperature and every
    version that makes them."""
    ort = require_onnxruntime("--runtime onnxruntime")
    config = read_json(run_dir / "config.json")
    weights = config.get("model_sha256") or sha256_file(run_dir / "model.safetensors")
    made_by = f"{weights} T {temperature(config)} spamjob {__version__} torch {torch.__version__}"
    made_by += f" {exporter()} onnxruntime {ort.__version__}"
    return cache_dir() / "onnx" / hashlib.sha256(made_by.encode()).hexdigest()[:16]


def graph_ready(model: str | os.PathLike, quantize: str | None = None) -> bool:
    """Whether the classifier's scoring graph is in this machine's cache, checked and undamaged (nothing made)."""
    folder = _graph_folder(local_folder(model))
    name = "model.int8.onnx" if quantize else "model.onnx"
    checked = read_json(folder / "spamjob_onnx.json") if (folder / "spamjob_onnx.json").is_file() else {}
    done = ("int8" if quantize else "fp32") in checked.get("checked_with_onnxruntime", {})
    return done and _damage(folder, checked, name) is None


def _damage(folder: Path, checked: dict, graph: str) -> str | None:
    """None when `graph` (and its weights file) still has the sha256 recorded when it was made."""
    files = checked.get("files", {})
    needed = [n for n in (graph, graph + ".data") if n in files] if graph in files else None
    if needed is None:
        return f"spamjob_onnx.json records no sha256 of {graph}"
    return differ(damaged(folder, {n: files[n] for n in needed}), "the sha256 recorded when it was made")
