"""What every runtime shares around its model: a window's rows sorted by length and cut into
token-budgeted batches (`sorted_batches`), and its probabilities on their way back (`Launched`),
so that a window's copy back and post-processing overlap the next window's compute."""

from __future__ import annotations

import numpy as np

from spamjob.text import rows_within
from spamjob.tokens import TokenIds


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

    def __init__(self, order: np.ndarray, probs=None, done=None):
        self.order, self.probs, self.done = order, probs, done

    @classmethod
    def empty(cls) -> Launched:
        return cls(np.empty(0, dtype=np.int64))

    def result(self) -> np.ndarray:
        out = np.empty(len(self.order), dtype=np.float64)
        if self.probs is not None:
            if self.done is not None:
                self.done.synchronize()
            probs = self.probs
            if isinstance(probs, list):  # workers' batches: tensors (on the host for a GPU caller too) or arrays
                probs = np.concatenate([_host(f.result()) for f in probs])
            out[self.order] = _host(probs)  # the batches cover `order` front to back
        return out


def _host(probs) -> np.ndarray:
    """A batch's probabilities as a NumPy array (a torch tensor is copied to the host)."""
    return probs.cpu().numpy() if hasattr(probs, "cpu") else np.asarray(probs)
