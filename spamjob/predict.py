"""Inference for bulk scoring: token ids -> spam probabilities in token-budgeted, length-sorted
batches; tokenization in the reading thread or a process pool; a prefetching thread that overlaps I/O."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from spamjob.model import for_scoring
from spamjob.text import encode, pad_batch, rows_within


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

    def __call__(self, ids: list[list[int]]) -> np.ndarray:
        n = len(ids)
        probs = np.empty(n, dtype=np.float64)
        if not n:
            return probs
        max_len = self.clf.max_length
        lengths = np.minimum(np.fromiter((len(s) for s in ids), dtype=np.int64, count=n), max_len)
        order = np.argsort(lengths, kind="stable")
        widths = np.full(n, max_len) if self.clf.padding == "fixed" else np.maximum(lengths[order], 1)
        batches = []
        start = 0
        while start < n:
            end = start + rows_within(widths, self.batch_tokens, start)
            batches.append([ids[i] for i in order[start:end]])
            start = end
        # Probabilities stay on the device until the window is done: one transfer and one
        # synchronisation per window, so a GPU runs batch k while Python pads batch k+1.
        pending = list((self.pool.map if self.pool else map)(self._forward, batches))
        probs[order] = torch.cat(pending).cpu().numpy()  # batches cover `order` front to back
        return probs

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        """P(spam) of one batch, on the device."""
        b = pad_batch(rows, self.clf.max_length, padding=self.clf.padding)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.dtype is torch.float16):
            logits = self.model(b.input_ids.to(self.device, non_blocking=True),
                                b.lengths.to(self.device, non_blocking=True))
        return torch.softmax(logits.float(), dim=-1)[:, 1]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run an iterator in a background thread, `depth` items ahead (reading and tokenizing
    overlap the model's work; Arrow and tiktoken release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)

    t = threading.Thread(target=work, name="spamjob-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class TokenizerPool:
    """Token ids of a window of texts: in the calling (prefetch) thread, or split over a process
    pool, which GPU scoring needs to tokenize as fast as the model runs."""

    def __init__(self, tokenizer, tok_dir: Path, workers: int):
        self.tok = tokenizer
        self.workers = workers
        self.pool = None
        if workers > 0:
            import concurrent.futures as cf
            import multiprocessing as mp

            self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                               initializer=_worker_init, initargs=(str(tok_dir),))

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if self.pool is None or len(texts) < 4096:
            return encode(self.tok, texts)
        step = -(-len(texts) // (self.workers * 2))
        parts = self.pool.map(_worker_encode, [texts[i : i + step] for i in range(0, len(texts), step)])
        return [ids for part in parts for ids in part]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


_WORKER_TOK = None


def _worker_init(tok_dir: str) -> None:
    global _WORKER_TOK
    from spamjob.text import load_tokenizer

    _WORKER_TOK = load_tokenizer(tok_dir if Path(tok_dir).is_dir() else None)


def _worker_encode(texts: list[str]) -> list[list[int]]:
    return encode(_WORKER_TOK, texts)
