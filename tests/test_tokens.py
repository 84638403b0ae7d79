"""spamjob.tokens: token ids of many texts in two flat arrays, padded, taken and joined."""

from __future__ import annotations

import numpy as np

from spamjob.text import pad_batch


def test_token_ids_flat_arrays_pad_take_and_concat():
    from spamjob.tokens import TokenIds

    rows = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13]]
    t = TokenIds.from_lists(rows)
    assert t.values.dtype == np.int32 and t.lengths.tolist() == [3, 0, 1, 5] and len(t) == 4
    out, lengths = t.padded(np.array([3, 0, 1]), 4, "dynamic", 99)
    assert out.tolist() == [[9, 10, 11, 12], [5, 6, 7, 99], [99, 99, 99, 99]] and lengths.tolist() == [4, 3, 0]
    assert t.padded(np.array([2]), 4, "fixed", 99)[0].tolist() == [[8, 99, 99, 99]]
    taken = t.take([3, 2])
    assert [taken.row(i).tolist() for i in range(2)] == [rows[3], rows[2]]
    both = TokenIds.concat([t, taken, TokenIds.from_lists([])])
    assert [both.row(i).tolist() for i in range(len(both))] == rows + [rows[3], rows[2]]
    b = pad_batch(rows, 4, padding="dynamic")  # the batch path pads through the same arrays
    assert b.input_ids.tolist()[3] == [9, 10, 11, 12] and b.truncated.tolist() == [False, False, False, True]
