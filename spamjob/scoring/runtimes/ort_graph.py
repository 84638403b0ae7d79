"""A classifier as a checked ONNX graph: made from the torch model, run on ONNX Runtime and
compared with spamjob's fp32 torch path before anything uses it (ONNX Runtime's cache,
`spamjob export --format onnx`).

The graph takes right-padded `input_ids` and `attention_mask` (int64, batch x sequence, both
axes dynamic) and returns `logits` (batch x 2) and `spam_probability` (batch): the pooling is
inside, read at the last real token (`last-token`) or at the last position of a row padded
to max_length (`last`, the reference's; pad such rows to max_length). Token ids are GPT-2's
(tiktoken "gpt2"), `<|endoftext|>` in a message encoded as plain text, cut at max_length.
int8 adds `model.int8.onnx` (ONNX Runtime's dynamic int8 MatMuls); its label agreement with
fp32 spamjob is measured on the same messages and written down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from spamjob.errors import SpamjobError
from spamjob.fsutil import atomic_path
from spamjob.scoring.runtimes.ort_session import OrtPredictor, open_session, session_settings
from spamjob.scoring.runtimes.pytorch import spam_probability
from spamjob.text import PAD_ID, encode
from spamjob.threads import usable_cpus

INPUTS, OUTPUTS = ("input_ids", "attention_mask"), ("logits", "spam_probability")
OPSET = 18  # the dynamo exporter's own; ONNX Runtime >= 1.14 runs it
GRAPH_FILES = ("model.onnx", "model.onnx.data", "model.int8.onnx")  # what a graph folder holds
EXTERNAL_DATA_BYTES = 1 << 30  # weights past this go to model.onnx.data (protobuf stops at 2 GiB)
TOLERANCE = 1e-4  # fp32 ONNX Runtime vs spamjob, largest |difference| in P(spam)
# Dynamic int8: only the MatMuls with constant weights (the Linear layers, as torch's dynamic int8
# quantizes), per-channel weight scales (benchmarks/ort_bench.py: label agreement with fp32).
INT8_OPTIONS = {"per_channel": True, "extra_options": {"MatMulConstBOnly": True}}
SAMPLE = [
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward!",
    "Ok lar... Joking wif u oni...",
    "hi <|endoftext|> there",
    "<|endoftext|>",
    "a",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. " * 12,
]  # the last: over-length


class _Graph(torch.nn.Module):
    """What the ONNX file computes: lengths from the mask, the pooled classifier, P(spam)."""

    def __init__(self, clf):
        super().__init__()
        self.model = clf.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(input_ids, attention_mask.sum(-1))
        return logits, torch.softmax(logits, dim=-1)[:, 1]


def build(clf, out: Path, quantize: str | None, texts: list[str]) -> dict:
    """model.onnx (+ model.int8.onnx) in `out`, checked on `texts` against spamjob's fp32 torch
    path: a graph further than TOLERANCE from it is an error. Returns the graph's description
    (spamjob_onnx.json without its file digests)."""
    out.mkdir(parents=True, exist_ok=True)
    how = _export_graph(clf, out / "model.onnx")
    want = np.asarray(spam_probability(clf, texts)[0])
    ids = encode(clf.tokenizer, texts)
    diff = float(np.abs(probabilities(out / "model.onnx", ids, clf) - want).max())
    if diff > TOLERANCE:
        raise SpamjobError(f"the ONNX graph differs from spamjob by {diff:.2e} > {TOLERANCE:g}; not exported")
    checks = {"fp32": {"messages": len(texts), "max_abs_diff": diff, "exporter": how}}
    if quantize == "int8":
        checks["int8"] = _quantize(out, ids, clf, want)
    return describe(clf, checks)


def _export_graph(clf, path: Path) -> str:
    """The graph at `path` with dynamic batch and sequence axes, by the exporter `exporter()` picks;
    weights past EXTERNAL_DATA_BYTES go to `path`.data beside it. Both appear whole or not at all."""
    width = clf.max_length if clf.padding == "fixed" else min(clf.max_length, 8)
    example = (torch.full((2, width), PAD_ID, dtype=torch.long), torch.ones((2, width), dtype=torch.long))
    external = sum(p.numel() * p.element_size() for p in clf.model.parameters()) > EXTERNAL_DATA_BYTES
    how = exporter()
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as tmp, torch.no_grad():
        made = Path(tmp) / path.name
        if how == "dynamo":
            _by_dynamo(_Graph(clf).eval(), example, made, external, clf.max_length)
        else:
            _by_torchscript(_Graph(clf).eval(), example, made, external)
        if not external:  # no weights file of an earlier, larger export left beside the graph
            path.with_name(path.name + ".data").unlink(missing_ok=True)
        for part in sorted(Path(tmp).iterdir(), key=lambda f: f == made):  # the weights first, the graph last
            os.replace(part, path.parent / part.name)
    return how


def exporter() -> str:
    """ "dynamo" (torch.export and onnxscript, the maintained exporter: the `onnx` extra brings
    onnxscript) where torch has it; "torchscript" (deprecated) on older torch or without onnxscript.
    Both give graphs within TOLERANCE of spamjob (tests/export/test_export_onnx.py)."""
    return "dynamo" if _has_dynamo_export() and importlib.util.find_spec("onnxscript") else "torchscript"


def _has_dynamo_export() -> bool:
    """torch.onnx.export takes `dynamo=` (torch >= 2.5; it defaults to True from 2.9)."""
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def _by_dynamo(graph: torch.nn.Module, example: tuple, path: Path, external: bool, longest: int) -> None:
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=longest)}
    with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "onnxscript"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=(dims, dims),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=external)


def _by_torchscript(graph: torch.nn.Module, example: tuple, path: Path, external: bool) -> None:
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {
        "logits": {0: "batch"},
        "spam_probability": {0: "batch"},
    }
    legacy = {"dynamo": False} if _has_dynamo_export() else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the context-length check and indexing: expected
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
            opset_version=OPSET,
            **legacy,
        )
    if external:  # one weights file beside the graph, as the dynamo exporter writes
        import onnx

        model = onnx.load(str(path))
        for f in path.parent.iterdir():
            if f != path:
                f.unlink()
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Errors only from these loggers (the exporter's notes on optional ops and its progress)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def probabilities(graph: Path, ids: list[list[int]], clf, batch_tokens: int = 4096) -> np.ndarray:
    """P(spam) from ONNX Runtime on `graph`, batched as scoring batches (OrtPredictor)."""
    return OrtPredictor(clf, open_session(graph, session_settings(1, usable_cpus())), batch_tokens)(ids)


def _quantize(out: Path, ids: list[list[int]], clf, want: np.ndarray) -> dict:
    """model.int8.onnx and how often its labels agree with fp32 spamjob's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # "" is the root logger, where it advises pre-processing the graph (advice for convolutional nets)
    with _quiet(""), atomic_path(out / "model.int8.onnx") as tmp:
        quantize_dynamic(str(out / "model.onnx"), str(tmp), weight_type=QuantType.QInt8, **INT8_OPTIONS)
    return label_agreement(probabilities(out / "model.int8.onnx", ids, clf), want, clf.threshold)


def label_agreement(got: np.ndarray, want: np.ndarray, threshold: float) -> dict:
    """How often `got`'s labels (spam past `threshold`) are `want`'s, on how many messages, and
    the largest difference in P(spam)."""
    return {
        "messages": len(got),
        "agreement": float(((got > threshold) == (want > threshold)).mean()),
        "max_abs_diff": float(np.abs(got - want).max()),
    }


def sample_texts(clf, limit: int = 500) -> list[str]:
    """SAMPLE plus up to `limit` messages of the run's test split (when its data folder is there)."""
    from spamjob.data import load_split  # pandas: only when a graph is made, not when a job finds it cached

    folder = (clf.config.get("data") or {}).get("folder")
    try:
        test = load_split(Path(folder), "test")["Text"].astype(str).tolist()[:limit] if folder else []
    except SpamjobError:
        test = []
    return SAMPLE + test


def describe(clf, checks: dict) -> dict:
    """spamjob_onnx.json: how to feed the graph and what its outputs mean."""
    return {
        "format": "spamjob-onnx/1",
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "opset": OPSET,
        "tokenizer": {"encoding": "gpt2", "special_tokens_as_text": True, "folder": "tokenizer"},
        "max_length": clf.max_length,
        "pooling": clf.pooling,
        "padding": clf.padding,
        "pad_id": PAD_ID,
        "pad_to_max_length": clf.padding == "fixed",
        "labels": clf.labels,
        "spam_threshold": clf.threshold,
        "model_sha256": clf.config.get("model_sha256"),
        # the head's weights are divided by the temperature: outputs are calibrated probabilities
        "calibration": clf.config.get("calibration") or {"method": "none", "temperature": 1.0},
        "checked_with_onnxruntime": checks,
    }
