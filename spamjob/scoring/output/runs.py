"""The runs of an incremental output (`spamjob score --incremental`): one at a time, each numbered.

A run claims the next number by creating `_runs/<n>.json` only if absent (a local folder: an
exclusive create under the run's flock; a store: its conditional write), then looks at every
earlier run that never finished: one still alive makes this run stop with one line, committing
nothing (two runs started together: the later one stops). A local run is alive while its process
holds its lock (released however it dies); a run in a store rewrites its record every
`heartbeat_s()` seconds and is taken for dead once its record is `STALE_BEATS` heartbeats older
than the record of the run looking at it (both times the store's own, so clocks need not agree).

What a run commits is `_manifest.json` (spamjob.scoring.job): it names the run, and the parts of
every file as last scored; `previous_run` reads it back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from spamjob.errors import SpamjobError
from spamjob.scoring.output.names import MANIFEST

RUNS = "_runs"
STALE_BEATS = 6  # a store's run whose record is this many heartbeats old is dead
HEARTBEAT_VARIABLE = "SPAMJOB_HEARTBEAT_S"  # seconds between a store run's heartbeats [10]


def heartbeat_s() -> float:
    return float(os.environ.get(HEARTBEAT_VARIABLE) or 10)


def record_name(number: int) -> str:
    return f"{RUNS}/{number:06d}.json"


@dataclass
class Run:
    """This run of an incremental output: its number, the last committed one, and its claim (held
    until `release`: a lock, or a heartbeat)."""

    number: int
    previous: int
    claim: object

    def release(self) -> None:
        self.claim.release()


def begin(out, prepare, attempts: int = 5) -> Run:
    """Claim the next run of `out` (the main process), or stop while an earlier one is alive; then
    prepare --out (`prepare()`): a run stopped there (another job's folder) leaves no record."""
    run = _claim(out, attempts)
    try:
        prepare()
    except BaseException:
        run.release()
        out.drop_run(run.number)
        raise
    return run


def _claim(out, attempts: int) -> Run:
    for _ in range(attempts):
        records = out.run_records()
        number = max(records, default=0) + 1
        claim = out.claim_run(number, {"run": number, "status": "running", "started": _now()})
        if claim is None:  # another run claimed this number first: look again
            continue
        live = [k for k, r in sorted(records.items()) if r.get("status") == "running" and out.run_alive(k, number)]
        if live:
            claim.release()
            out.drop_run(number)
            raise SpamjobError(
                f"run {live[0]} of the incremental output {out.location} is still running; this run stops "
                "without writing (start it again once that run has ended)"
            )
        return Run(number, previous_run(out), claim)
    raise SpamjobError(f"{out.location}: other runs kept starting while this one tried to; start it again")


def schema_record(schema) -> list[list[str]]:
    """An Arrow schema as a manifest records it."""
    return [[f.name, str(f.type)] for f in schema]


def check_schema(out, schema) -> None:
    """Every run of an output writes parts of one schema: the one its first run wrote."""
    old = (out.read_json(MANIFEST) or {}).get("schema")
    new = schema_record(schema)
    if old is not None and old != new:
        cols = ", ".join(f"{n}: {t}" for n, t in new)
        was = ", ".join(f"{n}: {t}" for n, t in old)
        raise SpamjobError(
            f"the inputs now make the output columns ({cols}), but earlier runs into {out.location} wrote "
            f"({was}); keep the same columns (--keep-columns), or start afresh with --overwrite"
        )


def previous_run(out) -> int:
    """The last run whose manifest was committed (0: none yet)."""
    manifest = out.read_json(MANIFEST) or {}
    return int(manifest.get("run") or 0)


def current(out) -> int:
    """This run's number, on processes other than the main one (after it has begun the run)."""
    return max(out.run_records(), default=0)


def finished(out, run: Run, summary: dict) -> None:
    """The run's record, marked finished with its summary; its claim released."""
    run.release()
    out.write_run(run.number, {"run": run.number, "status": "finished", "finished": _now(), **summary})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
