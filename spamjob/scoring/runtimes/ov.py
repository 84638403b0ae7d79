"""The OpenVINO runtime (`--runtime openvino`; `pip install 'spamjob[openvino]'`): CPU scoring in
bf16 (or fp32) on the classifier's checked ONNX graph (ort.scoring_graph: made once per classifier,
checked against spamjob's torch path), compiled by OpenVINO's CPU plugin.

Threads as on the other runtimes: one stream of one thread per model worker, each worker with its
own infer request on its own batches, no thread pinned to a core (another process may take it).
The compiled model is cached ($SPAMJOB_CACHE/openvino/, keyed by the graph's sha256): a job after
the first imports it instead of compiling. `auto` picks this runtime for bf16 on an x86 CPU with a
bf16 matrix unit, where it was measured faster than torch's bf16; fp32 stays on torch, bit for bit
as before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from spamjob import digests, extras, hardware
from spamjob.digests import damaged, differ, remade
from spamjob.errors import SpamjobError, first_line
from spamjob.fsutil import cache_dir, locked, read_json, write_json
from spamjob.scoring.runtimes import AGREEMENT_SAMPLE, Loaded, Request
from spamjob.scoring.runtimes.ort import scoring_graph
from spamjob.scoring.runtimes.ort_graph import label_agreement, sample_texts
from spamjob.scoring.runtimes.ort_session import OrtPredictor, open_session, session_settings
from spamjob.text import encode

# The bf16 units where OpenVINO's bf16 beat torch's: AVX512-BF16 in benchmarks/RESULTS.md ("OpenVINO
# inside spamjob score": 1.19x on a whole job); AMX in issue 34's own figures (OpenVINO's bare loop
# 1.3x spamjob's torch bf16), spamjob's own AMX run still to come.
MEASURED_FASTER = ("amx_bf16", "avx512_bf16")


class OpenVinoRuntime:
    name = "openvino"
    needs_weights = False  # the ONNX graph holds them
    precisions = ("no", "bf16")

    def available(self) -> bool:
        return extras.is_available("openvino")

    def suits(self, request: Request) -> bool:
        return (
            request.mixed_precision == "bf16"
            and hardware.cpu().bf16_unit in MEASURED_FASTER
            and not (request.gpu or request.compile or request.quantize)
        )

    def check(self, request: Request) -> None:
        if request.gpu:
            raise SpamjobError("--runtime openvino is for CPU scoring; on a GPU use --runtime torch (bf16)")
        if request.compile:
            raise SpamjobError("--compile is for --runtime torch")
        if request.quantize:
            raise SpamjobError("--quantize int8 runs on --runtime onnxruntime or torch, not openvino")
        if request.mixed_precision not in self.precisions:
            raise SpamjobError(
                f"--runtime openvino runs bf16 or fp32 (--mixed-precision no), not {request.mixed_precision}"
            )
        require_openvino("--runtime openvino")

    def load(self, clf, folder, request: Request) -> Loaded:
        """The classifier's graph compiled for `request.workers` streams; with bf16, its agreement
        with fp32 as `bf16_check` found it, else measured on a sample of the job (ONNX Runtime's
        fp32 on the same graph)."""
        ov = require_openvino("--runtime openvino")
        graph = scoring_graph(folder)
        settings = compile_settings(request.mixed_precision, request.workers)
        compiled = compile_graph(graph, settings)
        predictor = OrtPredictor(clf, InferRequests(compiled), request.batch_tokens, request.workers)
        version = ov.get_version().split("-")[0]
        record = {"name": self.name, "version": version, "precision": settings["INFERENCE_PRECISION_HINT"]}
        record_all = {**record, "streams": request.workers, "pinned": False}
        loaded = Loaded(predictor, record_all, record)  # streams change no prediction: not in the plan
        if request.mixed_precision == "bf16":
            fp32 = functools.partial(_fp32, clf, graph, request)
            loaded.checked = bf16_check(clf, graph, predictor, fp32, version)
            if loaded.checked is None:
                loaded.reference = fp32()
        return loaded


RUNTIME = OpenVinoRuntime()


def require_openvino(what: str):
    """The openvino module; a one-line error naming `what` when it (or ONNX Runtime, which makes and
    checks the graph) is missing."""
    extras.require("openvino", what)
    import openvino

    return openvino


def compile_settings(mixed_precision: str, workers: int) -> dict:
    """OpenVINO's CPU properties for a job of `workers` model workers."""
    return {
        "INFERENCE_PRECISION_HINT": "bf16" if mixed_precision == "bf16" else "f32",
        "NUM_STREAMS": workers,
        "INFERENCE_NUM_THREADS": workers,
        "ENABLE_CPU_PINNING": False,
    }


def compile_graph(graph: Path, settings: dict):
    """The compiled model of `graph`, imported from OpenVINO's cache when this graph (by its sha256)
    was compiled with these settings before and the cached files still have the sha256 recorded
    when they were written (OpenVINO itself notices a cut file, not a changed byte); a one-line
    error when OpenVINO cannot compile it."""
    ov = require_openvino("--runtime openvino")
    cache = _compiled(graph)
    with locked(cache / "compile.lock"):
        recorded = read_json(cache / "blobs.json") if (cache / "blobs.json").is_file() else {}
        blobs = sorted(p.name for p in cache.glob("*.blob"))
        if why := differ(damaged(cache, {n: recorded.get(n, "") for n in blobs}), "the sha256 recorded when made"):
            remade(str(cache), why, "compiling again")
            for name in blobs:
                (cache / name).unlink()
            recorded = {}
        try:
            compiled = ov.Core().compile_model(str(graph), "CPU", {**settings, "CACHE_DIR": str(cache)})
        except Exception as e:  # OpenVINO's own errors: an operator it lacks, a foreign file
            raise SpamjobError(f"OpenVINO cannot compile {graph}: {first_line(e)}") from None
        if sorted(p.name for p in cache.glob("*.blob")) != sorted(recorded):
            write_json(cache / "blobs.json", digests.record(cache, [p.name for p in cache.glob("*.blob")]))
    return compiled


def _fp32(clf, graph: Path, request: Request) -> OrtPredictor:
    """ONNX Runtime in fp32 on the same graph: what bf16 is compared with."""
    return OrtPredictor(clf, open_session(graph, session_settings(1)), request.batch_tokens, request.workers)


def bf16_check(clf, graph: Path, bf16, fp32, version: str) -> dict | None:
    """bf16's label agreement with fp32 (ONNX Runtime on the same graph) on the classifier's test
    messages, measured the first time this graph runs in bf16 on this CPU and OpenVINO version,
    then read back; None when fewer than AGREEMENT_SAMPLE messages are at hand (no test split: the job
    samples its own first window instead)."""
    made_for = json.dumps([hardware.cpu().record(), version], sort_keys=True)
    path = _compiled(graph) / f"bf16_check_{hashlib.sha256(made_for.encode()).hexdigest()[:16]}.json"
    with locked(path.with_suffix(".lock")):
        if path.is_file():
            return read_json(path)
        texts = sample_texts(clf, AGREEMENT_SAMPLE)
        if len(texts) < AGREEMENT_SAMPLE:
            return None
        ids, reference = encode(clf.tokenizer, texts), fp32()
        try:
            want = reference(ids)
        finally:
            reference.close()
        on = "the classifier's test messages, when OpenVINO first ran its graph in bf16 on this CPU"
        check = {**label_agreement(bf16(ids), want, clf.threshold), "measured_on": on}
        write_json(path, check)
    return check


def _compiled(graph: Path) -> Path:
    """Where OpenVINO's cache keeps what it made of `graph`: keyed by the graph's sha256 as recorded
    when it was made and checked (ort.scoring_graph checks it again at every use)."""
    digest = read_json(graph.parent / "spamjob_onnx.json")["files"][graph.name]
    return cache_dir() / "openvino" / digest[:16]


class InferRequests:
    """A compiled model behind ONNX Runtime's `run(names, feed)`, so that OrtPredictor's batching
    and worker threads drive it: each thread runs its batches on its own infer request (OpenVINO
    releases the GIL while it runs)."""

    def __init__(self, compiled):
        self.compiled, self.local = compiled, threading.local()

    def run(self, names: list[str], feed: dict) -> list[np.ndarray]:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        result = request.infer(feed)
        return [np.array(result[self.compiled.output(name)]) for name in names]  # copies: requests reuse buffers
