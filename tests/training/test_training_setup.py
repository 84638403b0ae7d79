"""spamjob.training.setup: the padded length (the longest training message, at most the model's
context) and each process's rows of every split (every row once over any number of processes)."""

from __future__ import annotations

import pandas as pd
import pytest

from spamjob.config import TrainConfig
from spamjob.errors import SpamjobError
from spamjob.training.setup import make_slices, max_length_for

IDS = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11]]


def test_the_padded_length_is_the_longest_message_or_what_is_asked():
    assert max_length_for(TrainConfig(), IDS, 1024) == 5
    assert max_length_for(TrainConfig(max_length=3), IDS, 1024) == 3
    with pytest.raises(SpamjobError, match=r"^max_length 5 \(longest training message: 5 tokens\) exceeds .* 4; pass"):
        max_length_for(TrainConfig(), IDS, 4)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_of_every_split_is_on_one_process(world):
    frames = {name: pd.DataFrame({"Label": [0, 1, 1, 0]}) for name in ("train", "validation", "test")}
    ids = {name: IDS for name in frames}
    slices = [make_slices(frames, ids, 3, rank, world) for rank in range(world)]
    for name in frames:
        rows = sorted(tuple(r) for s in slices for r in s[name].ids)
        assert rows == sorted(tuple(r[:3]) for r in IDS)  # truncated to max_length, each once
        assert sum(len(s[name].labels) for s in slices) == 4
        assert all(s[name].n_total == 4 and s[name].truncated_total == 1 for s in slices)
