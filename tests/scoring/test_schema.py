"""spamjob.scoring.schema: every input's values fit the one output type exactly, or one error before any file."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pytest

from spamjob.errors import SpamjobError
from spamjob.scoring.schema import common_type, conform

NO_STATS = lambda path, column: None  # noqa: E731


def _common(*types, range_of=NO_STATS):
    return common_type("c", [(f"in{k}.parquet", t) for k, t in enumerate(types)], range_of)


@pytest.mark.parametrize(
    "types, expected",
    [
        ((pa.string(), pa.string()), pa.string()),
        (
            (pa.dictionary(pa.int32(), pa.string()), pa.dictionary(pa.int32(), pa.string())),
            pa.dictionary(pa.int32(), pa.string()),
        ),  # equal types stay as they are
        ((pa.string(), pa.large_string(), pa.string_view()), pa.large_string()),
        ((pa.dictionary(pa.int32(), pa.string()), pa.string()), pa.string()),
        ((pa.string(), pa.binary()), pa.large_binary()),
        ((pa.dictionary(pa.int32(), pa.string()), pa.binary(), pa.string_view()), pa.large_binary()),
        ((pa.large_string(), pa.null()), pa.large_string()),
        ((pa.int32(), pa.int64()), pa.int64()),
        ((pa.uint32(), pa.int64()), pa.int64()),
        ((pa.int32(), pa.float64()), pa.float64()),
        ((pa.float32(), pa.float64()), pa.float64()),
        ((pa.int64(), pa.float64()), pa.large_string()),  # float64 cannot hold every int64
        ((pa.int64(), pa.uint64()), pa.large_string()),
        ((pa.int64(), pa.string()), pa.large_string()),
        ((pa.bool_(), pa.int8()), pa.large_string()),
        ((pa.decimal128(10, 2), pa.decimal128(20, 4)), pa.decimal128(20, 4)),
        ((pa.decimal128(38, 2), pa.decimal128(38, 10)), pa.decimal256(46, 10)),
        ((pa.date32(), pa.date64()), pa.date64()),
        ((pa.timestamp("us", "UTC"), pa.timestamp("us")), pa.large_string()),  # an instant and a wall clock
        ((pa.timestamp("us", "UTC"), pa.timestamp("us", "Europe/Paris")), pa.large_string()),
        ((pa.int64(), pa.null()), pa.int64()),
    ],
)
def test_each_input_type_converts_exactly(types, expected):
    assert _common(*types) == expected


SAMPLES = {
    pa.string(): ["a", None],
    pa.large_string(): ["b"],
    pa.string_view(): ["c"],
    pa.binary(): [b"\xff\x00", None],
    pa.dictionary(pa.int32(), pa.string()): ["d", "d"],
    pa.int32(): [-(2**31), 2**31 - 1],
    pa.int64(): [-(2**63), 2**63 - 1, 2**53 + 1],
    pa.uint32(): [2**32 - 1],
    pa.uint64(): [2**64 - 1],
    pa.float32(): [0.1, float("inf")],
    pa.float64(): [0.1 + 0.2, 1e300, 5e-324],
    pa.int8(): [-128],
    pa.bool_(): [True, False],
    pa.decimal128(10, 2): [decimal.Decimal("-99999999.99")],
    pa.decimal128(20, 4): [decimal.Decimal("1234567890123456.0001")],
    pa.decimal128(38, 2): [decimal.Decimal("9" * 36 + ".99")],
    pa.decimal128(38, 10): [decimal.Decimal("0.0000000001")],
    pa.date32(): [datetime.date(1, 1, 1)],
    pa.date64(): [datetime.date(9999, 12, 31)],
    pa.timestamp("us", "UTC"): [datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)],
    pa.timestamp("us"): [datetime.datetime(1, 1, 1)],
    pa.timestamp("us", "Europe/Paris"): [datetime.datetime(2026, 6, 1, 12, tzinfo=datetime.timezone.utc)],
    pa.null(): [None],
}


@pytest.mark.parametrize(
    "types",
    [
        (pa.string(), pa.large_string(), pa.string_view()),
        (pa.dictionary(pa.int32(), pa.string()), pa.binary()),
        (pa.int32(), pa.int64()),
        (pa.int32(), pa.float64()),
        (pa.int64(), pa.float64()),
        (pa.int64(), pa.uint64()),
        (pa.bool_(), pa.int8()),
        (pa.decimal128(10, 2), pa.decimal128(20, 4)),
        (pa.decimal128(38, 2), pa.decimal128(38, 10)),
        (pa.date32(), pa.date64()),
        (pa.timestamp("us", "UTC"), pa.timestamp("us"), pa.timestamp("us", "Europe/Paris")),
        (pa.int64(), pa.string()),
        (pa.string(), pa.null()),
    ],
)
def test_values_survive_the_conversion(types):
    """Converted to the common type and back, or read as text, every value is what it was."""
    to = _common(*types)
    for t in types:
        values = pa.array(SAMPLES[t], t)
        out = conform(values, to)
        assert out.type == to
        if to == pa.large_string() and not (
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_string_view(t)
            or pa.types.is_dictionary(t)
        ):
            assert out.to_pylist() == values.cast(pa.large_string()).to_pylist()  # Arrow's exact text
            if pa.types.is_floating(t) or pa.types.is_integer(t):
                assert [type(v)(s) for v, s in zip(values.to_pylist(), out.to_pylist())] == values.to_pylist()
        elif pa.types.is_large_binary(to):
            assert out.to_pylist() == [v.encode() if isinstance(v, str) else v for v in values.to_pylist()]
        else:
            assert out.to_pylist() == values.to_pylist()


@pytest.mark.parametrize(
    "types, word",
    [
        ((pa.binary(), pa.int64()), "binary and int64"),
        ((pa.list_(pa.int32()), pa.int32()), "in different inputs"),
        ((pa.struct([("a", pa.int8())]), pa.struct([("a", pa.int16())])), "in different inputs"),
    ],
)
def test_what_cannot_be_held_exactly_is_one_error(types, word):
    with pytest.raises(SpamjobError, match=word) as e:
        _common(*types)
    assert "--keep-columns" in str(e.value) and "\n" not in str(e.value)


def test_timestamp_units_widen_when_the_footers_show_every_value_fits():
    bounds = {"in0.parquet": [datetime.datetime(2001, 1, 1), datetime.datetime(2030, 1, 1)]}
    assert _common(pa.timestamp("us"), pa.timestamp("ns"), range_of=lambda p, c: bounds.get(p)) == pa.timestamp("ns")
    bounds["in0.parquet"][0] = datetime.datetime(1, 1, 1)  # a common 'no date' sentinel: outside ns's range
    with pytest.raises(SpamjobError, match="some values lie outside that range"):
        _common(pa.timestamp("us"), pa.timestamp("ns"), range_of=lambda p, c: bounds.get(p))
    with pytest.raises(SpamjobError, match="its statistics are missing"):
        _common(pa.timestamp("ms"), pa.timestamp("us"))
