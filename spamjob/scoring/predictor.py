"""Inference for bulk scoring: token ids -> spam probabilities in token-budgeted, length-sorted
batches, launched on the device and collected later (`Launched`), so that a window's copy back
and post-processing overlap the next window's compute."""

from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from spamjob.console import say
from spamjob.model import for_scoring
from spamjob.text import PAD_ID, rows_within
from spamjob.tokens import TokenIds


class Predictor:
    """Token ids -> spam probabilities, in length-sorted, token-budgeted batches; order restored.

    With `workers` > 1 the batches of a window are spread over that many threads, each running
    the model on its own batch (torch's intra-op threads set to 1 by the caller): no thread
    waits for another inside an operator, so a worker that loses its core to another process
    delays only its own batch (CPU scoring; benchmarks/RESULTS.md, quiet and loaded)."""

    def __init__(self, clf, device: torch.device, mixed_precision: str, batch_tokens: int, workers: int = 1):
        self.clf, self.device = clf, device
        self.batch_tokens = batch_tokens
        # bf16: a bf16 copy of the model with fused Q/K/V (head fp32); fp16 stays fp32 under autocast.
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        model = for_scoring(clf.model, torch.bfloat16) if self.dtype is torch.bfloat16 else clf.model
        self.model = model.to(device).eval()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="spamjob-model") if workers > 1 else None

    def __call__(self, ids: TokenIds | list[list[int]]) -> np.ndarray:
        return self.launch(ids).result()

    def launch(self, ids: TokenIds | list[list[int]]) -> Launched:
        """Queue every batch of a window on the device and the copy of its probabilities back into
        pinned memory, or on the CPU's workers behind the windows launched before; returns at once,
        except on one CPU thread (after the work)."""
        tokens = ids if isinstance(ids, TokenIds) else TokenIds.from_lists(ids)
        n = len(tokens)
        if not n:
            return Launched(np.empty(0, dtype=np.int64), None, None)
        order, batches = sorted_batches(tokens, self.clf.max_length, self.clf.padding, self.batch_tokens)
        if self.pool is not None:
            return Launched(order, [self.pool.submit(self._forward, tokens, rows) for rows in batches], None)
        pending = torch.cat([self._forward(tokens, rows) for rows in batches])
        if self.device.type != "cuda":
            return Launched(order, pending, None)
        host = torch.empty(n, dtype=pending.dtype, pin_memory=True)
        host.copy_(pending, non_blocking=True)  # queued behind this window's kernels, before the next window's
        done = torch.cuda.Event()
        done.record()
        return Launched(order, host, done)

    def _forward(self, tokens: TokenIds, rows: np.ndarray) -> torch.Tensor:
        """P(spam) of one batch (`rows` of `tokens`), on the device."""
        ids, lengths = tokens.padded(rows, self.clf.max_length, self.clf.padding, PAD_ID)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.float16, enabled=self.dtype is torch.float16),
        ):
            logits = self.model(
                torch.from_numpy(ids).to(self.device, non_blocking=True),
                torch.from_numpy(lengths).to(self.device, non_blocking=True),
            )
        return torch.softmax(logits.float(), dim=-1)[:, 1]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def sorted_batches(
    tokens: TokenIds, max_length: int, padding: str, batch_tokens: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows sorted by kept length, and that order cut into batches of at most `batch_tokens` padded
    tokens (at least one row each); the batches cover the order front to back."""
    lengths = np.minimum(tokens.lengths, max_length)
    order = np.argsort(lengths, kind="stable")
    widths = np.full(len(order), max_length) if padding == "fixed" else np.maximum(lengths[order], 1)
    batches, start = [], 0
    while start < len(order):
        end = start + rows_within(widths, batch_tokens, start)
        batches.append(order[start:end])
        start = end
    return order, batches


class Launched:
    """A window's probabilities on their way back: `result()` waits for this window only (its copy
    into pinned memory, recorded by an event, or its batches on the CPU's workers), not for windows
    launched after it. `probs`: one array or tensor, or the batches' futures in order."""

    def __init__(self, order: np.ndarray, probs: torch.Tensor | np.ndarray | list[Future] | None, done):
        self.order, self.probs, self.done = order, probs, done

    def result(self) -> np.ndarray:
        out = np.empty(len(self.order), dtype=np.float64)
        if self.probs is not None:
            if self.done is not None:
                self.done.synchronize()
            probs = self.probs
            if isinstance(probs, list):  # workers' batches: tensors (on the host for a GPU caller too) or arrays
                parts = [f.result() for f in probs]
                probs = np.concatenate([p.cpu().numpy() if isinstance(p, torch.Tensor) else p for p in parts])
            out[self.order] = np.asarray(probs)  # the batches cover `order` front to back
        return out


INT8_DEPRECATED = (
    "note: torch marks its int8 kernels (torch.ao quantization) deprecated, to be removed "
    "(pytorch/pytorch#184982); --runtime onnxruntime (pip install 'spamjob[onnx]'; then the default "
    "for --quantize int8) does not use them"
)


def dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with dynamic int8 Linear layers (torch.ao). torch's deprecation warning
    becomes the one line INT8_DEPRECATED (what the user can do about it); other warnings pass."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    deprecated = [w for w in caught if "deprecated" in str(w.message) and "quantiz" in str(w.message)]
    if deprecated:
        say(INT8_DEPRECATED)
    for w in caught:
        if w not in deprecated:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return quantized
