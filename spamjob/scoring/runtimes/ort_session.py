"""Inference on ONNX Runtime (`--runtime onnxruntime`): token ids -> spam probabilities with the
classifier's checked graph (ort_graph.py), in the same length-sorted,
token-budgeted batches as the torch Predictor (`sorted_batches`), order restored, so that
everything around the model (reading, tokenizing, writing, commits, the report) is unchanged.

Threads: one InferenceSession, run by `workers` threads that each take their own batches
(sessions are thread-safe and release the GIL), each run on `intra_op_threads` threads of
ONNX Runtime's own pool, which never spins waiting for work: a spinning pool pinned to every
core stalls when another process takes one of them (benchmarks/RESULTS.md, quiet and loaded).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from spamjob import extras
from spamjob.errors import SpamjobError, first_line
from spamjob.scoring.runtimes.launch import Launched, sorted_batches
from spamjob.text import PAD_ID
from spamjob.tokens import TokenIds


def require_onnxruntime(what: str):
    """The onnxruntime module; a one-line error naming `what` when it or onnx (the exporter and
    quantizer need it) is missing."""
    extras.require("onnx", what)
    import onnxruntime

    return onnxruntime


def session_settings(workers: int, intra_op_threads: int = 1) -> dict:
    """How the session runs: part of a scoring job's plan and report."""
    return {"workers": workers, "intra_op_threads": intra_op_threads, "spinning": False}


def open_session(path: str | Path, settings: dict):
    """An InferenceSession on the CPU with `settings` (session_settings)."""
    ort = require_onnxruntime("--runtime onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings["intra_op_threads"]
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if settings["spinning"] else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.log_severity_level = 3  # errors only: its notes on graph optimisation are not the user's concern
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own errors (InvalidProtobuf, Fail...): a damaged or foreign file
        raise SpamjobError(f"ONNX Runtime cannot load {path}: {first_line(e)}") from None


class OrtPredictor:
    """Token ids -> P(spam) from an ONNX Runtime session, or anything with its `run(names, feed)`
    (OpenVINO's InferRequests), as the Predictor interface asks (`launch` queues a window's batches
    on the workers behind the windows launched before)."""

    def __init__(self, clf, session, batch_tokens: int, workers: int = 1):
        self.clf, self.session, self.batch_tokens = clf, session, batch_tokens
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="spamjob-ort") if workers > 1 else None

    def __call__(self, ids: TokenIds | list[list[int]]) -> np.ndarray:
        return self.launch(ids).result()

    def launch(self, ids: TokenIds | list[list[int]]) -> Launched:
        tokens = ids if isinstance(ids, TokenIds) else TokenIds.from_lists(ids)
        if not len(tokens):
            return Launched.empty()
        order, batches = sorted_batches(tokens, self.clf.max_length, self.clf.padding, self.batch_tokens)
        if self.pool is not None:  # no worker idles at a window's end while another has batches left
            return Launched(order, [self.pool.submit(self._run, tokens, rows) for rows in batches])
        return Launched(order, np.concatenate([self._run(tokens, rows) for rows in batches]))

    def _run(self, tokens: TokenIds, rows: np.ndarray) -> np.ndarray:
        """P(spam) of one batch (`rows` of `tokens`)."""
        ids, lengths = tokens.padded(rows, self.clf.max_length, self.clf.padding, PAD_ID)
        mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        feed = {"input_ids": ids.astype(np.int64, copy=False), "attention_mask": mask}
        return self.session.run(["spam_probability"], feed)[0]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
