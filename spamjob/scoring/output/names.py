"""The output folder's names and rules, declared once for every implementation (a local folder,
a store prefix, the reader): what a scoring job writes, which files are its own (what
--overwrite may delete), which unit a sidecar commits, and the errors a foreign folder gets."""

from __future__ import annotations

import re

from spamjob.errors import SpamjobError

PLAN = "_plan.json"  # written first: it makes a folder a scoring output
MANIFEST = "_manifest.json"  # written at the finish: which unit of which input each part is
SUCCESS = "_SUCCESS"  # written last
PREDICTIONS = "predictions"  # the parts, one Parquet/CSV dataset
REJECTS, SIDECARS, SOURCES, LOCKS, RUNS = "rejects", "_parts", "_sources", "_locks", "_runs"
REPORT_FILES = ("report.json", "report.md", "report.png")
CUMULATIVE_FILES = ("cumulative.json", "cumulative.md")  # --incremental: the report of every current row
METRICS = "metrics.prom"  # the run's metrics, Prometheus text (spamjob.scoring.metrics)
# What a scoring job writes into --out, and nothing else: --overwrite deletes only these.
OWNED_FILES = {PLAN, MANIFEST, SUCCESS, *REPORT_FILES, *CUMULATIVE_FILES, METRICS}
OWNED_FOLDERS = {SIDECARS, SOURCES, LOCKS, PREDICTIONS, REJECTS, RUNS}
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^.]+\.part$")  # atomic_path's and PartWriter's (local folders)
# A unit's files (an object store's carry the attempt that wrote them), the report's and plan's locks, sources.
_UNIT_FILE = re.compile(
    r"^(?P<unit>part-[0-9a-f]{12}-\d{6}|report|plan)(?:\.[0-9a-f]{12})?\.(parquet|csv|json|jsonl|lock)$"
    r"|^[0-9a-f]{12}\.(json|lock)$|^run-\d{6}\.lock$|^\d{6}\.json$"
)
UNIT_PART = re.compile(r"^(?P<unit>part-[0-9a-f]{12}-\d{6})\.")  # a part's unit, from its file name
REPORT_LOCK = "report"  # held while the report files are written
PLAN_LOCK = "plan"  # held while a task checks --out against its plan (and writes it)


def unit_name(key: str, index: int) -> str:
    """A work unit's name (its part, sidecar and lock): its input's key and its index there."""
    return f"part-{key}-{index:06d}"


def without_temporary(name: str) -> str:
    """The file a temporary name stands for (`.x.json.123.part` -> `x.json`); other names unchanged."""
    m = TEMPORARY.match(name)
    return m.group("name") if m else name


def unit_of(name: str) -> str | None:
    """The unit (or lock: `report`, `plan`) a file of an owned folder belongs to, None if it is no unit's."""
    m = _UNIT_FILE.match(without_temporary(name))
    return None if m is None else (m.group("unit") or REPORT_LOCK)


def unit_file(name: str) -> bool:
    return _UNIT_FILE.match(without_temporary(name)) is not None


def owned(name: str, whole: bool) -> bool:
    """A file of --out (its name relative to the folder, `/`-separated; `x/` an empty folder) that a
    scoring job writes; `whole`: any file in an owned folder (an engine that names its files
    itself, as Ray does)."""
    top, folder, rest = name.partition("/")
    top = without_temporary(top)
    if not folder:
        return top in OWNED_FILES
    return top in OWNED_FOLDERS and (not rest or whole or ("/" not in rest and unit_file(rest)))


def commits(sidecar: dict, where: dict) -> bool:
    """A sidecar is the commit of the unit `where` names (a byte block and a block of a file read
    whole share an index and a name)."""
    return all(sidecar.get(k, False if k == "byte_block" else None) == v for k, v in where.items())


def manifest_names(manifest: dict) -> set[str]:
    """The files of the units a manifest names: parts, rejects, sidecars, their inputs' records
    (relative to the output); what finishing deletes the other unit files of."""
    keep = set()
    for p in manifest["parts"]:
        keep |= {p["part"], *([p["rejects"]] if p["rejects"] else [])}
        if m := UNIT_PART.match(p["part"].rsplit("/", 1)[-1]):
            keep |= {f"{SIDECARS}/{m.group('unit')}.json", f"{SOURCES}/{m.group('unit')[5:17]}.json"}
    return keep


def another_job(what: str, old: dict | None) -> SpamjobError:
    """--out holds another job's output (`old`: its plan), or files of no scoring job at all."""
    why = (
        "was written with another model, other inputs or other options"
        if old is not None
        else "is not empty and holds no spamjob scoring plan"
    )
    return SpamjobError(f"{what} {why}; pass --overwrite to replace it, or choose another --out")


def not_ours(found, out) -> SpamjobError:
    return SpamjobError(f"--overwrite would delete {found}, which spamjob did not write; clear {out} by hand")
