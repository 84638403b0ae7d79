"""Input columns of a scoring job: which is the text, the label, what is kept; text and labels
decoded without ever crashing on bad bytes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from spamjob.errors import SpamjobError
from spamjob.scoring import formats
from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.source import Source

TEXT_CANDIDATES = ("Text", "text", "message", "sms")  # the text column, when --text-column is not given
OUTPUT_TYPES = {
    "prediction": pa.string(),
    "spam_probability": pa.float64(),
    "truncated": pa.bool_(),
    "error": pa.string(),
}  # what scoring adds to every row
OUTPUT_COLUMNS = tuple(OUTPUT_TYPES)


def output_fields() -> list[pa.Field]:
    """The four columns scoring adds, as schema fields."""
    return [pa.field(name, t) for name, t in OUTPUT_TYPES.items()]


@dataclass(frozen=True)
class Columns:
    """Resolved columns of one input."""

    text: str
    label: str | None
    keep: tuple[str, ...]


def resolve_columns(source: Source, schema: pa.Schema | None, cfg: ScoreConfig) -> Columns | None:
    """Text/label/kept columns of an input, or an error naming what is wrong. None for an empty file."""
    if schema is None:
        return None
    _check_names(source, schema.names)
    names = schema.names
    try:
        text = text_column_of(names, cfg.text_column)
        check_wanted(names, cfg)
    except SpamjobError as e:
        raise SpamjobError(f"{source.path} has {e}") from None
    t = schema.field(text).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if formats.of(source).typed and not _textual(t):
        raise SpamjobError(f"{source.path}: text column {text!r} holds {t}, not text")
    keep = kept_columns(names, cfg.keep_columns, cfg.id_column)
    _check_nested(source, schema, cfg, keep)
    return Columns(text, cfg.label_column, keep)


def text_column_of(names: list[str], given: str | None = None) -> str:
    """The text column among `names`: `given` (--text-column), else the first of TEXT_CANDIDATES;
    else an error that the caller prefixes with what has the columns."""
    column = given or next((c for c in TEXT_CANDIDATES if c in names), None)
    if column in names:
        return column
    if given:
        raise SpamjobError(f"no text column {given!r} (columns: {', '.join(names)})")
    looked = ", ".join(TEXT_CANDIDATES)
    raise SpamjobError(f"no text column (looked for {looked}; columns: {', '.join(names)}); pass --text-column")


def check_wanted(names: list[str], cfg) -> None:
    """The columns --label-column, --id-column and --keep-columns name are among `names`."""
    wanted = [
        ("--label-column", cfg.label_column),
        ("--id-column", cfg.id_column),
        *(("--keep-columns", c) for c in cfg.keep_columns or ()),
    ]
    missing = [f"{what} {name!r}" for what, name in wanted if name and name not in names]
    if missing:
        raise SpamjobError(f"no {', '.join(missing)} (columns: {', '.join(names)})")


def kept_columns(names: list[str], keep: Iterable[str] | None, id_column: str | None) -> tuple[str, ...]:
    """The input columns an output keeps: --keep-columns (default: all), the --id-column first."""
    keep = tuple(keep) if keep is not None else tuple(names)
    return (id_column, *(c for c in keep if c != id_column)) if id_column else keep


INPUT_PREFIX = "input_"


def renamed_for_output(kept: Iterable[str]) -> dict[str, str]:
    """Kept input columns whose names scoring takes (a scored input's own prediction,
    spam_probability, truncated, error) -> their names in the output, one `input_` prefix more; a
    column already named so (from an earlier scoring) moves one further, so that no two columns
    share a name and each scoring's columns stay apart (input_prediction, input_input_prediction)."""
    taken, renamed = set(kept), {}
    for name in OUTPUT_COLUMNS:
        while name in taken:
            renamed[name] = INPUT_PREFIX + name
            name = INPUT_PREFIX + name
    return renamed


def _textual(t: pa.DataType) -> bool:
    """Types a text column may have: strings and bytes of every layout (views too), or all nulls."""
    return any(
        check(t)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_string_view,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_binary_view,
            pa.types.is_null,
        )
    )


def _check_names(source: Source, names: list[str]) -> None:
    """Columns are addressed by name: an empty or repeated one is an error, not a guess."""
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        raise SpamjobError(f"{source.path}: column {empty[0]} has an empty name (columns: {names})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SpamjobError(f"{source.path}: column name(s) {', '.join(map(repr, repeated))} appear more than once")


def _check_nested(source: Source, schema: pa.Schema, cfg: ScoreConfig, keep: tuple[str, ...]) -> None:
    """A label must be a plain value; CSV output cannot hold nested columns."""
    if cfg.label_column and pa.types.is_nested(schema.field(cfg.label_column).type):
        raise SpamjobError(
            f"{source.path}: --label-column {cfg.label_column!r} holds "
            f"{schema.field(cfg.label_column).type}, not ham/spam or 0/1 values"
        )
    nested = [c for c in keep if pa.types.is_nested(schema.field(c).type)]
    if cfg.format == "csv" and nested:
        raise SpamjobError(
            f"{source.path}: column {nested[0]!r} holds {schema.field(nested[0]).type}, which "
            "--format csv cannot write; leave it out with --keep-columns or use --format parquet"
        )


def as_strings(arr: pa.Array) -> tuple[list, list[bool]]:
    """Python strings (None for null) and, per value, whether its bytes were not valid UTF-8."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        try:
            return arr.cast(pa.large_string()).to_pylist(), [False] * len(arr)
        except pa.ArrowInvalid:  # some value is not UTF-8: decode one by one
            values, bad = [], []
            for b in arr.to_pylist():
                if b is None:
                    values.append(None)
                    bad.append(False)
                    continue
                try:
                    values.append(b.decode("utf-8"))
                    bad.append(False)
                except UnicodeDecodeError:
                    values.append(b.decode("utf-8", errors="replace"))
                    bad.append(True)
            return values, bad
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    return arr.to_pylist(), [False] * len(arr)


def utf8_column(arr: pa.Array) -> pa.Array:
    """A column of bytes (a CSV field read as bytes) -> text (invalid bytes replaced by U+FFFD);
    any other column as it is."""
    if pa.types.is_dictionary(arr.type) and not pa.types.is_string(arr.type.value_type):
        arr = arr.dictionary_decode()
    if pa.types.is_fixed_size_binary(arr.type) or pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        values, bad = as_strings(arr)
        return pa.array(values, type=pa.large_string()) if any(bad) else arr.cast(pa.large_string())
    return arr


LABEL_VALUES = {"ham": 0, "0": 0, "spam": 1, "1": 1}


def labels_of(arr: pa.Array) -> list[int | None]:
    values, _ = as_strings(arr.cast(pa.large_string()) if not pa.types.is_binary(arr.type) else arr)
    return [LABEL_VALUES.get(str(v).strip().lower()) if v is not None else None for v in values]
