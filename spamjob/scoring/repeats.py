"""Texts scored once per scorer: bulk message traffic repeats itself (spam campaigns; 7% of the
SMS corpus), and a message's probability does not depend on its batch, so a text that came
before (in this window, or in an earlier one of this scorer) is neither tokenized nor run again:
each of its rows gets the probability it got the first time.

`Seen` remembers the results of the texts a scorer ran, up to a budget of characters (texts
of at most `LONGEST` characters: the repeats that matter are short, and memory stays bounded);
`Repeats` is what a window knows of its own texts: which rows share one, which were seen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

BUDGET_CHARS = 32 << 20  # text kept per scorer (with the dict's own cost: ~100 MB at most)
LONGEST = 2048


class Seen:
    """Text -> (P(spam), token count) of the texts this scorer ran (thread-safe: one writer per window)."""

    def __init__(self, budget_chars: int = BUDGET_CHARS):
        self.results: dict[str, tuple[float, int]] = {}
        self.chars, self.budget = 0, budget_chars
        self.lock = threading.Lock()

    def remember(self, texts: list[str], probs: np.ndarray, lengths: np.ndarray) -> None:
        with self.lock:
            for text, p, t in zip(texts, probs.tolist(), lengths.tolist()):
                if self.chars + len(text) > self.budget:
                    return
                if len(text) <= LONGEST and text not in self.results:
                    self.results[text] = (p, t)
                    self.chars += len(text)


@dataclass(frozen=True)
class Repeats:
    """How a window's scored rows map onto the texts it runs: row r has distinct text `rows_of[r]`;
    distinct text d is run as row `fresh[d]` of the window's token ids, or was seen before
    (`fresh[d]` = -1) with `seen_p[d]`, `seen_len[d]` (its token count)."""

    rows_of: np.ndarray
    fresh: np.ndarray
    seen_p: np.ndarray
    seen_len: np.ndarray
    texts: list[str]  # the texts run, in token-id order (remembered once scored)

    def per_row(self, fresh_values: np.ndarray, seen_values: np.ndarray) -> np.ndarray:
        """Values of the texts run -> one per scored row (seen texts: `seen_values`)."""
        distinct = seen_values.astype(fresh_values.dtype, copy=True)
        run = self.fresh >= 0
        distinct[run] = fresh_values[self.fresh[run]]
        return distinct[self.rows_of]


def find_repeats(texts: list[str], seen: Seen | None) -> Repeats:
    """The texts of a window's scored rows to run: each distinct one once, and those `seen` not at all."""
    place: dict[str, int] = {}
    rows_of = np.fromiter((place.setdefault(t, len(place)) for t in texts), dtype=np.int64, count=len(texts))
    distinct = list(place)
    known = [seen.results.get(t) for t in distinct] if seen is not None and seen.results else [None] * len(distinct)
    fresh = np.full(len(distinct), -1, dtype=np.int64)
    run = [d for d, k in enumerate(known) if k is None]
    fresh[run] = np.arange(len(run))
    seen_p = np.array([k[0] if k else np.nan for k in known], dtype=np.float64)
    seen_len = np.array([k[1] if k else 0 for k in known], dtype=np.int64)
    return Repeats(rows_of, fresh, seen_p, seen_len, [distinct[d] for d in run])
