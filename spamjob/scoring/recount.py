"""`spamjob report DIR`: the scoring report recounted from a predictions dataset, whichever
engine wrote it (`spamjob score`, `--engine ray`, Spark's `score_dataframe`).

Rows are counted by the same rule as `spamjob score` (`report.count_rows`), one record batch
at a time, so the integer counts and figures equal the ones `spamjob score` reported for the
same rows. A `spamjob score` folder adds what only it knows: lines rejected before scoring
(`rejects/`) and which input each part came from (`_manifest.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from spamjob import __version__
from spamjob.errors import SpamjobError, first_line
from spamjob.fsutil import read_json
from spamjob.scoring.columns import OUTPUT_COLUMNS, OUTPUT_TYPES, labels_of
from spamjob.scoring.outdir import PREDICTIONS, REJECTS
from spamjob.scoring.report import Counts, build, count_rows, write

FORMATS = {".parquet": "parquet", ".csv": "csv"}


def recount(out: str | Path, label_column: str | None = None) -> dict:
    """Count `out/predictions/` (and `out/rejects/`), write report.json/md/png into `out`; returns the report."""
    total, per_input, extra = count_folder(out, label_column)
    report = build(total, per_input, extra)
    write(out, report)
    return report


def count_folder(out: str | Path, label_column: str | None = None) -> tuple[Counts, dict[str, Counts], dict]:
    """The counts of `out/predictions/` (and `out/rejects/`): in all, per input, and what they came from."""
    out = Path(out)
    dataset, fmt = _dataset(out / PREDICTIONS, label_column)
    missing = [c for c in (*OUTPUT_COLUMNS, *([label_column] if label_column else [])) if c not in dataset.schema.names]
    if missing:
        raise SpamjobError(
            f"{out / PREDICTIONS}: no column(s) {', '.join(missing)} (has {', '.join(dataset.schema.names)})"
        )
    manifest = read_json(out / "_manifest.json") if (out / "_manifest.json").is_file() else None
    source_of = {p["part"]: p["source"] for p in manifest["parts"]} if manifest else {}
    per_input: dict[str, Counts] = {}
    for fragment in dataset.get_fragments():
        part = Path(fragment.path).relative_to(out).as_posix()
        counts = per_input.setdefault(source_of.get(part, str(out / PREDICTIONS)), Counts())
        try:
            counts += _count_part(fragment, dataset.schema, label_column)
        except (pa.ArrowException, OSError) as e:
            raise SpamjobError(f"{fragment.path}: cannot read this part ({first_line(e)})") from None
    _add_rejects(out, manifest, per_input)
    total = Counts()
    for counts in per_input.values():
        total += counts
    extra = {
        "recounted_from": {
            "folder": str((out / PREDICTIONS).resolve()),
            "format": fmt,
            "parts": len(dataset.files),
            "label_column": label_column,
        },
        "model": manifest["plan"]["model"] if manifest else None,
        "spamjob_version": __version__,
    }
    return total, per_input, extra


def _count_part(fragment: ds.Fragment, schema: pa.Schema, label_column: str | None) -> Counts:
    counts = Counts()
    columns = [*OUTPUT_COLUMNS, *([label_column] if label_column else [])]
    for batch in fragment.to_batches(columns=columns, schema=schema):
        labels = labels_of(batch.column(label_column)) if label_column else None
        counts += count_rows({c: batch.column(c) for c in OUTPUT_COLUMNS}, labels)
    return counts


def _dataset(folder: Path, label_column: str | None) -> tuple[ds.Dataset, str]:
    """The predictions dataset: Parquet or CSV part files (names starting with `_` or `.` are
    an engine's bookkeeping, e.g. Spark's `_SUCCESS` and `.crc` files)."""
    if not folder.is_dir():
        raise SpamjobError(f"{folder}: no predictions folder (written by `spamjob score`, `--engine ray` or Spark)")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(("_", "."))
        and not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts[:-1])
    )
    kinds = {FORMATS.get(p.suffix) for p in files}
    if not files or len(kinds) != 1 or None in kinds:
        found = ", ".join(sorted({p.suffix or p.name for p in files})) or "nothing"
        raise SpamjobError(f"{folder}: expected only .parquet or only .csv part files, found {found}")
    fmt = file_format = kinds.pop()
    if fmt == "csv":  # one type per column whatever a part holds (a part may have no scored row)
        types = {**OUTPUT_TYPES, **({label_column: pa.string()} if label_column else {})}
        file_format = ds.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
            )
        )  # as spamjob writes nulls
    try:
        return ds.dataset([str(p) for p in files], format=file_format), fmt
    except (pa.ArrowInvalid, OSError) as e:
        raise SpamjobError(f"{folder}: cannot read the predictions ({first_line(e)})") from None


def _add_rejects(out: Path, manifest: dict | None, per_input: dict[str, Counts]) -> None:
    """Lines `spamjob score` rejected before scoring, counted under their input."""
    source_of = {p["rejects"]: p["source"] for p in manifest["parts"] if p.get("rejects")} if manifest else {}
    for path in sorted((out / REJECTS).glob("*.jsonl")):
        counts = per_input.setdefault(source_of.get(f"{REJECTS}/{path.name}", str(out / PREDICTIONS)), Counts())
        for line in path.read_text(encoding="utf-8").splitlines():
            counts.rejected[json.loads(line)["reason"]] += 1
