"""`spamjob report DIR`: the scoring report recounted from a predictions dataset, whichever
engine wrote it (`spamjob score`, `--engine ray`, Spark's `score_dataframe`).

Rows are counted by the same rule as `spamjob score` (`report.count_rows`), one record batch
at a time, so the integer counts and figures equal the ones `spamjob score` reported for the
same rows. A `spamjob score` folder adds what only it knows: lines rejected before scoring
(`rejects/`) and which input each part came from (`_manifest.json`).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from spamjob import __version__
from spamjob.errors import SpamjobError, first_line
from spamjob.scoring.columns import OUTPUT_COLUMNS, OUTPUT_TYPES, labels_of
from spamjob.scoring.inputs import skipped_counts
from spamjob.scoring.output import open_output
from spamjob.scoring.output.names import PREDICTIONS, REJECTS
from spamjob.scoring.output.reader import OutputReader
from spamjob.scoring.report import Counts, build, count_rows, write

FORMATS = {".parquet": "parquet", ".csv": "csv"}


def recount(out: str | Path, label_column: str | None = None) -> dict:
    """Count `out/predictions/` (and `out/rejects/`), write report.json/md/png into `out` (a folder
    or a URI); returns the report."""
    total, per_input, extra = count_folder(out, label_column)
    report = build(total, per_input, extra)
    with open_output(str(out)).staged() as folder:
        write(folder, report)
    return report


def count_folder(out: str | Path, label_column: str | None = None) -> tuple[Counts, dict[str, Counts], dict]:
    """The counts of `out/predictions/` (and `out/rejects/`): in all, per input, and what they came from."""
    files = OutputReader(str(out))
    dataset, fmt = _dataset(files, label_column)
    missing = [c for c in (*OUTPUT_COLUMNS, *([label_column] if label_column else [])) if c not in dataset.schema.names]
    if missing:
        raise SpamjobError(
            f"{files.predictions}: no column(s) {', '.join(missing)} (has {', '.join(dataset.schema.names)})"
        )
    manifest = files.manifest
    source_of = {p["part"]: p["source"] for p in manifest["parts"]} if manifest else {}
    per_input: dict[str, Counts] = {}
    for fragment in dataset.get_fragments():
        counts = per_input.setdefault(source_of.get(files.name_of(fragment.path), files.unnamed), Counts())
        try:
            counts += _count_part(fragment, dataset.schema, label_column)
        except (pa.ArrowException, OSError) as e:
            raise SpamjobError(f"{fragment.path}: cannot read this part ({first_line(e)})") from None
    _add_rejects(files, manifest, per_input)
    total = Counts()
    for counts in per_input.values():
        total += counts
    extra = {
        "recounted_from": {
            "folder": files.predictions,
            "format": fmt,
            "parts": len(dataset.files),
            "label_column": label_column,
        },
        "model": manifest["plan"]["model"] if manifest else None,
        "skipped_files": skipped_counts({s["path"]: s["reason"] for s in (manifest or {}).get("skipped", [])}),
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


def _dataset(files: OutputReader, label_column: str | None) -> tuple[ds.Dataset, str]:
    """The predictions dataset: Parquet or CSV part files (names starting with `_` or `.` are
    an engine's bookkeeping, e.g. Spark's `_SUCCESS` and `.crc` files)."""
    names = [n for n in files.part_names() if not any(part.startswith(("_", ".")) for part in n.split("/")[1:])]
    if not (files.under(PREDICTIONS) if files.uri else Path(files.root, PREDICTIONS).is_dir()):
        raise SpamjobError(
            f"{files.predictions}: no predictions folder (written by `spamjob score`, `--engine ray` or Spark)"
        )
    kinds = {FORMATS.get(PurePosixPath(n).suffix) for n in names}
    if not names or len(kinds) != 1 or None in kinds:
        found = ", ".join(sorted({PurePosixPath(n).suffix or PurePosixPath(n).name for n in names})) or "nothing"
        raise SpamjobError(f"{files.predictions}: expected only .parquet or only .csv part files, found {found}")
    fmt = file_format = kinds.pop()
    if fmt == "csv":  # one type per column whatever a part holds (a part may have no scored row)
        types = {**OUTPUT_TYPES, **({label_column: pa.string()} if label_column else {})}
        file_format = ds.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
            )
        )  # as spamjob writes nulls
    try:
        paths = [files.path(n) for n in names]
        return ds.dataset(paths, format=file_format, filesystem=files.filesystem), fmt
    except (pa.ArrowInvalid, OSError) as e:
        raise SpamjobError(f"{files.predictions}: cannot read the predictions ({first_line(e)})") from None


def _add_rejects(files: OutputReader, manifest: dict | None, per_input: dict[str, Counts]) -> None:
    """Lines `spamjob score` rejected before scoring, counted under their input."""
    source_of = {p["rejects"]: p["source"] for p in manifest["parts"] if p.get("rejects")} if manifest else {}
    named = sorted(source_of) if files.uri and manifest else files.under(REJECTS)
    for name in (n for n in named if n.endswith(".jsonl") and n.count("/") == 1):
        counts = per_input.setdefault(source_of.get(name, files.unnamed), Counts())
        for line in files.read_text(name).splitlines():
            counts.rejected[json.loads(line)["reason"]] += 1
