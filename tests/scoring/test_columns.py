"""spamjob.scoring.columns: which input column is the text, label, id and kept columns; decoding that never crashes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from spamjob.errors import SpamjobError
from spamjob.scoring.columns import (
    OUTPUT_COLUMNS,
    Columns,
    as_strings,
    labels_of,
    renamed_for_output,
    resolve_columns,
    utf8_column,
)
from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.source import Source

PARQUET = Source(path="/in/a.parquet", kind="parquet", compression=None, size=1, mtime_ns=0)
CSV = Source(path="/in/a.csv", kind="csv", compression=None, size=1, mtime_ns=0)


def cfg(**kw) -> ScoreConfig:
    return ScoreConfig(inputs=("x",), model="m", out="o", **kw)


def schema(**types) -> pa.Schema:
    return pa.schema([(name, t) for name, t in types.items()])


def test_text_column_found_by_name_or_given():
    s = schema(id=pa.int64(), message=pa.string(), Text=pa.string(), label=pa.string())
    assert resolve_columns(PARQUET, s, cfg()) == Columns("Text", None, ("id", "message", "Text", "label"))
    assert resolve_columns(PARQUET, s, cfg(text_column="message")).text == "message"
    assert resolve_columns(CSV, None, cfg()) is None  # an empty file
    with pytest.raises(
        SpamjobError, match=r"/in/a.parquet has no text column 'body' \(columns: id, message, Text, label\)"
    ):
        resolve_columns(PARQUET, s, cfg(text_column="body"))
    with pytest.raises(SpamjobError, match="has no text column .looked for .* pass --text-column"):
        resolve_columns(PARQUET, schema(body=pa.string()), cfg())


def test_text_column_types():
    for t in (pa.string(), pa.large_string(), pa.binary(), pa.dictionary(pa.int32(), pa.string()), pa.null()):
        assert resolve_columns(PARQUET, schema(text=t), cfg()).text == "text"
    with pytest.raises(SpamjobError, match="text column 'text' holds int64, not text"):
        resolve_columns(PARQUET, schema(text=pa.int64()), cfg())


def test_label_id_and_kept_columns():
    s = schema(id=pa.int64(), text=pa.string(), label=pa.string(), extra=pa.float64())
    c = resolve_columns(PARQUET, s, cfg(label_column="label", id_column="id", keep_columns=("extra",)))
    assert c == Columns("text", "label", ("id", "extra"))  # the id is kept, first
    with pytest.raises(SpamjobError, match="has no --label-column 'y'"):
        resolve_columns(PARQUET, s, cfg(label_column="y"))
    with pytest.raises(SpamjobError, match="has no --id-column 'key'"):
        resolve_columns(PARQUET, s, cfg(id_column="key"))
    with pytest.raises(SpamjobError, match="has no --keep-columns 'a', --keep-columns 'b'"):
        resolve_columns(PARQUET, s, cfg(keep_columns=("a", "b", "extra")))
    assert resolve_columns(PARQUET, schema(text=pa.string(), prediction=pa.string()), cfg()).keep == (
        "text",
        "prediction",
    )  # a scored input's own prediction is kept (renamed in the output: below)
    assert resolve_columns(
        PARQUET, schema(text=pa.string(), prediction=pa.string()), cfg(keep_columns=("text",))
    ).keep == ("text",)


def test_as_strings_flags_invalid_utf8_and_keeps_nulls():
    values, bad = as_strings(pa.array([b"ok", None, b"caf\xe9", "é".encode()], type=pa.binary()))
    assert values == ["ok", None, "caf\ufffd", "é"] and bad == [False, False, True, False]
    assert as_strings(pa.array(["a", None])) == (["a", None], [False, False])
    assert as_strings(pa.array(["x", "y", "x"]).dictionary_encode()) == (["x", "y", "x"], [False] * 3)
    assert as_strings(pa.array([1, None])) == (["1", None], [False, False])


def test_utf8_column_and_labels():
    col = utf8_column(pa.array([b"a", b"\xff"], type=pa.binary()))
    assert col.type == pa.large_string() and col.to_pylist() == ["a", "\ufffd"]
    assert utf8_column(pa.array([b"plain"], type=pa.binary())).to_pylist() == ["plain"]
    labels = pa.array([" Spam", "HAM", "1", "0", "maybe", None, ""])
    assert labels_of(labels) == [1, 0, 1, 0, None, None, None]
    assert labels_of(pa.array([1, 0, 2])) == [1, 0, None]
    assert labels_of(pa.array([b"spam", b"\xff"], type=pa.binary())) == [1, None]


def test_a_scored_inputs_own_columns_take_one_more_prefix():
    assert renamed_for_output(["text", "Label"]) == {}
    assert renamed_for_output(["text", "prediction", "error"]) == {
        "prediction": "input_prediction",
        "error": "input_error",
    }
    again = renamed_for_output(["text", "input_prediction", "prediction", "spam_probability"])
    assert again == {
        "prediction": "input_prediction",
        "input_prediction": "input_input_prediction",
        "spam_probability": "input_spam_probability",
    }
    names = ["text", "input_prediction", "prediction", "spam_probability"]
    assert len({again.get(c, c) for c in names} | set(OUTPUT_COLUMNS)) == len(names) + len(OUTPUT_COLUMNS)
