"""Token ids of many texts in two flat arrays, and their padding in one vectorised step.

Row i is `values[offsets[i]:offsets[i + 1]]`. Two numpy arrays cross a process boundary (the
tokenizer pool) or come out of an Arrow list column in one copy each, where nested Python
lists cost the receiving process ~1.5 us per message to unpickle, under its GIL.
No torch here: the tokenizer processes import this module.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenIds:
    """Token ids of n texts: `values` (int32, all rows end to end) and `offsets` (int64, n + 1)."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> TokenIds:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
        return cls(values, offsets)

    @classmethod
    def concat(cls, parts: Iterable[TokenIds]) -> TokenIds:
        parts = list(parts)
        if not parts:
            return cls.from_lists([])
        shifts = np.cumsum([0] + [len(p.values) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        return cls(np.concatenate([p.values for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per row (before any truncation)."""
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def take(self, rows: Sequence[int] | np.ndarray) -> TokenIds:
        """The given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return TokenIds(self.values[index], offsets)

    def padded(self, rows: np.ndarray, max_length: int, padding: str, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, W) int64 ids of `rows`, each cut to max_length and right-padded with pad_id, and their
        kept lengths: W is max_length (`fixed`) or the longest kept row (`dynamic`, at least 1)."""
        starts = self.offsets[rows]
        lengths = np.minimum(self.offsets[np.asarray(rows) + 1] - starts, max_length)
        width = max_length if padding == "fixed" else max(int(lengths.max(initial=1)), 1)
        cols = np.arange(width)
        keep = cols[None, :] < lengths[:, None]
        out = np.full((len(starts), width), pad_id, dtype=np.int64)
        out[keep] = self.values[(starts[:, None] + cols[None, :])[keep]]
        return out, lengths
