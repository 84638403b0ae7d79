"""The torch runtime (`--runtime torch`): the classifier's own model, on the CPU or a GPU, in
fp32, bf16 or fp16, torch's dynamic int8, optionally compiled."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from spamjob.console import say
from spamjob.errors import SpamjobError
from spamjob.model import for_scoring
from spamjob.scoring.runtimes import Loaded, Request
from spamjob.scoring.runtimes.launch import Launched, sorted_batches
from spamjob.text import PAD_ID, encode
from spamjob.tokens import TokenIds


class TorchRuntime:
    name = "torch"
    needs_weights = True
    precisions = ("no", "bf16", "fp16")

    def available(self) -> bool:
        return True

    def suits(self, request: Request) -> bool:
        return True  # the fallback of `auto`: runs every job

    def check(self, request: Request) -> None:
        if request.quantize == "int8" and request.gpu:
            raise SpamjobError("--quantize int8 is for CPU scoring (dynamic int8 kernels); on GPU use bf16")

    def load(self, clf, folder, request: Request) -> Loaded:
        device, batch_tokens, workers = torch.device(request.device), request.batch_tokens, request.workers
        # fp32 beside a faster precision: its agreement on a sample of the job (the model's own
        # weights: no copy).
        exact = request.quantize is None and request.mixed_precision == "no"
        reference = None if exact else TorchPredictor(clf, device, "no", batch_tokens, workers)
        if request.quantize == "int8":
            quantized = copy.copy(clf)
            quantized.model = dynamic_int8(clf.model)
            predictor = TorchPredictor(quantized, device, "no", batch_tokens, workers)
        else:
            predictor = TorchPredictor(clf, device, request.mixed_precision, batch_tokens, workers)
        if request.compile:
            predictor.model = torch.compile(predictor.model, dynamic=True)
        record = {"name": self.name, "version": torch.__version__.split("+")[0]}
        return Loaded(predictor, record, record, reference)


RUNTIME = TorchRuntime()


class TorchPredictor:
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
            return Launched.empty()
        order, batches = sorted_batches(tokens, self.clf.max_length, self.clf.padding, self.batch_tokens)
        if self.pool is not None:
            return Launched(order, [self.pool.submit(self._forward, tokens, rows) for rows in batches])
        pending = torch.cat([self._forward(tokens, rows) for rows in batches])
        if self.device.type != "cuda":
            return Launched(order, pending)
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


def spam_probability(clf, texts: Sequence[str], batch_tokens: int = 1024) -> tuple[list[float], list[bool]]:
    """P(spam) per text and whether it was truncated to max_length: scoring's batched path in fp32,
    on the device the classifier's weights are on (the reference the other runtimes are checked by)."""
    ids = encode(clf.tokenizer, texts)
    device = next(clf.model.parameters()).device
    probs = TorchPredictor(clf, device, "no", batch_tokens)(ids)
    return probs.tolist(), [len(s) > clf.max_length for s in ids]


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
