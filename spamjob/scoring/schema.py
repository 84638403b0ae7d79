"""One schema for every part of a scoring output: each kept column takes a type that every
input's values convert to exactly, or the job stops in one line before any file is written.

The rule, per column whose type differs between inputs:
- strings of any layout -> large_string; strings and bytes -> large_binary (bytes stay bytes);
- numbers, decimals, dates, times -> the type Arrow widens them to, when every input's values
  fit it exactly (int32 + int64 -> int64, int32 + float64 -> float64, decimal(10,2) +
  decimal(20,4) -> decimal(20,4)); timestamps of one zone in several units -> the finest unit,
  when the footers' statistics show every value of the coarser inputs in its range;
- anything else that is not bytes or nested -> large_string (int64 + float64, a number and a
  string, timestamps of different zones: every value written exactly as text);
- bytes beside anything but text, or a nested column that differs -> an error.
CSV parts hold text: there a bytes column is written as text, invalid UTF-8 replaced by U+FFFD.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from spamjob.errors import SpamjobError

Found = list[tuple[str, pa.DataType]]  # (input path, the column's type there), for one column
RangeOf = Callable[[str, str], "list | None"]  # (path, column) -> [its smallest, its largest value], if known

TEXT, BYTES = pa.large_string(), pa.large_binary()
_UNITS = ("s", "ms", "us", "ns")


def common_type(name: str, found: Found, range_of: RangeOf) -> pa.DataType:
    """The type column `name` takes in every part (see the module's rule)."""
    types = [_plain(t) for _, t in found]
    if all(t == types[0] for t in types):
        return found[0][1] if all(t == found[0][1] for _, t in found) else types[0]
    if all(_is_text(t) or _is_bytes(t) for t in types):
        return BYTES if any(_is_bytes(t) for t in types) else TEXT
    if any(pa.types.is_nested(t) for t in types) or any(_is_bytes(t) for t in types):
        kinds = " and ".join(sorted({str(t) for t in types}))
        raise SpamjobError(
            f"column {name!r} is {kinds} in different inputs; score them separately or leave it out with --keep-columns"
        )
    widened = _widened(types)
    if widened is not None and all(_exact(t, widened) for t in types):
        if pa.types.is_timestamp(widened):
            _check_range(name, found, widened, range_of)
        return widened
    return TEXT


def as_csv_text(t: pa.DataType) -> pa.DataType:
    """The type a column takes in CSV parts, which hold text: bytes become text (invalid UTF-8
    replaced by U+FFFD, as in CSV inputs); every other type is written as Arrow writes it."""
    return TEXT if _is_bytes(_plain(t)) else t


def conform(values: pa.Array | pa.ChunkedArray, to: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """`values` as type `to` (a `common_type`): exact, or Arrow's error (never a silent change)."""
    if values.type == to:
        return values
    if pa.types.is_dictionary(values.type):
        values = (
            values.dictionary_decode()
            if isinstance(values, pa.Array)
            else pa.chunked_array([c.dictionary_decode() for c in values.chunks], values.type.value_type)
        )
    return values.cast(to, safe=True)


def _plain(t: pa.DataType) -> pa.DataType:
    """Dictionary-encoded columns by their values; views as the plain layouts."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    return t


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _widened(types: list[pa.DataType]) -> pa.DataType | None:
    """What Arrow's permissive promotion proposes, if anything (checked by `_exact` after)."""
    schemas = [pa.schema([pa.field("c", t)]) for t in types]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive").field(0).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _exact(src: pa.DataType, dst: pa.DataType) -> bool:
    """Every value of type `src` converts to `dst` without change (timestamps: but for range)."""
    if src == dst or pa.types.is_null(src):
        return True
    if pa.types.is_integer(src):
        lo, hi = _int_range(src)
        if pa.types.is_integer(dst):
            dlo, dhi = _int_range(dst)
            return dlo <= lo and hi <= dhi
        if pa.types.is_floating(dst):
            return dst.bit_width == 64 and src.bit_width <= 32  # float64 holds every int32 exactly
        if pa.types.is_decimal(dst):
            return len(str(max(-lo, hi))) <= dst.precision - dst.scale
        return False
    if pa.types.is_floating(src):
        return pa.types.is_floating(dst) and dst.bit_width >= src.bit_width
    if pa.types.is_decimal(src):
        return (
            pa.types.is_decimal(dst)
            and dst.scale >= src.scale
            and dst.precision - dst.scale >= src.precision - src.scale
        )
    if pa.types.is_date(src):
        return pa.types.is_date64(dst)  # days -> milliseconds: always in range
    if pa.types.is_time(src) or pa.types.is_timestamp(src):
        same_kind = pa.types.is_time(dst) if pa.types.is_time(src) else pa.types.is_timestamp(dst)
        same_zone = not pa.types.is_timestamp(src) or src.tz == dst.tz
        return same_kind and same_zone and _UNITS.index(dst.unit) >= _UNITS.index(src.unit)
    return False


def _int_range(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    return (0, 2**bits - 1) if pa.types.is_unsigned_integer(t) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _check_range(name: str, found: Found, to: pa.DataType, range_of: RangeOf) -> None:
    """Timestamps of a coarser unit fit `to`'s only within its range (ns: the years 1677-2262): the
    inputs' footer statistics must show that they do."""
    for path, t in found:
        t = _plain(t)
        if pa.types.is_null(t) or t.unit == to.unit:
            continue
        bounds = range_of(path, name)
        if bounds is not None and _fits(pa.array(bounds, t), to):
            continue
        why = "its statistics are missing" if bounds is None else "some values lie outside that range"
        raise SpamjobError(
            f"column {name!r} is {t} in {path} and {to} elsewhere; {to} cannot hold every value "
            f"({why}); score them separately or leave it out with --keep-columns"
        )


def _fits(values: pa.Array, to: pa.DataType) -> bool:
    try:
        conform(values, to)
        return True
    except (pa.ArrowInvalid, OverflowError):
        return False
