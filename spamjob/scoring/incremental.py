"""`spamjob score --incremental`: an output that grows by runs, each scoring only the units no
earlier run committed (new files, and new versions of files: spamjob.scoring.inputs.versioned).

A unit's part is named after its file's path and version, so a changed file's new parts never
replace the old ones in place: the run's `_manifest.json` (its commit) names the current parts
of every file ever scored, and only then are the superseded ones deleted, before `_SUCCESS`.
A reader of the manifest's parts sees the last committed run at any time; a reader of the whole
predictions/ folder sees the same whenever `_SUCCESS` is there. A file no longer among the inputs
keeps its rows. One run at a time (spamjob.scoring.output.runs); docs/scoring.md tells the rest.
"""

from __future__ import annotations

from spamjob.errors import SpamjobError
from spamjob.scoring import metrics
from spamjob.scoring import report as rep
from spamjob.scoring.committed import Committed, manifest, sum_counts
from spamjob.scoring.output import OutputFolder, runs
from spamjob.scoring.output.names import MANIFEST, METRICS, UNIT_PART

CUMULATIVE = "cumulative"  # cumulative.json / .md: the report of every current row


def finish(job, done: list, extra: dict) -> dict:
    """The run's report (its own rows: units committed since the last committed run), the
    cumulative one, the manifest (every current part), the superseded parts deleted, `_SUCCESS`."""
    out, run = job.out, job.run
    old = out.read_json(MANIFEST) or {}
    paths = {i.source.path for i in job.inputs}
    kept = [
        Committed(p["source"], p["unit"], _sidecar(out, p)) for p in old.get("parts", []) if p["source"] not in paths
    ]
    this_run = [c for c in done if c.info.get("run", 0) > run.previous]
    current = {c.info["part"] for c in done}
    summary = {
        "run": run.number,
        "previous_run": run.previous,
        "files_scored": len({c.source for c in this_run}),
        "units_scored": len(this_run),
        "units_current": len(kept) + len(done),
        "parts_superseded": sum(1 for p in old.get("parts", []) if p["source"] in paths and p["part"] not in current),
        "cumulative_report": out.child(f"{CUMULATIVE}.md"),
    }
    total, per_input = sum_counts(this_run)
    wall = extra["wall_time_s"]
    extra = {**extra, "rows_per_s": round(total.rows_read / wall, 2) if wall else None, "incremental": summary}
    report = rep.build(total, per_input, extra, job.reference)
    timing = ("wall_time_s", "rows_per_s", "steady_rows_per_s")
    cumulative = rep.build(*sum_counts(kept + done), {k: v for k, v in extra.items() if k not in timing}, job.reference)
    with out.staged() as folder:
        rep.write(folder, report)
        rep.write(folder, cumulative, name=CUMULATIVE, png=False)
        metrics.write(folder / METRICS, report, out.location)
    out.finish(manifest(job, kept + done, incremental=True, run=run.number, schema=runs.schema_record(job.schema)))
    runs.finished(out, run, {"rows": total.rows_read, "units": len(this_run)})
    return report


def _sidecar(out: OutputFolder, part: dict) -> dict:
    """The sidecar of a part an earlier run committed (its counts go into the cumulative report)."""
    m = UNIT_PART.match(part["part"].rsplit("/", 1)[-1])
    info = out.sidecar(m.group("unit")) if m else None
    if info is None:
        raise SpamjobError(f"{out.child(part['part'])}: its commit record is gone; rescore with --overwrite")
    return info
