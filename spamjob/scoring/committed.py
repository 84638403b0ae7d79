"""The committed units of a finished scoring job, as its manifest and reports sum them: each
unit's sidecar (part, rows, counts, run), in the order of the inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spamjob.scoring.output.names import commits
from spamjob.scoring.report import Counts
from spamjob.scoring.units import units_of

if TYPE_CHECKING:
    from spamjob.scoring.setup import ScoreJob


@dataclass(frozen=True)
class Committed:
    """A committed unit: its input's path and its sidecar (the part, rows, counts, run)."""

    source: str
    unit: int
    info: dict

    def part(self) -> dict:
        """The unit as the manifest lists it."""
        info = self.info
        return {
            "part": info["part"],
            "source": self.source,
            "unit": self.unit,
            "rows": info["rows"],
            "rejects": info["rejects"],
        }


def committed_units(job: ScoreJob) -> tuple[list[Committed], list[str]]:
    """The committed units of every input, in order; the names of the units not committed."""
    done, missing = [], []
    for inp in job.inputs:
        for unit in units_of(job, inp):
            info = job.out.sidecar(unit.name)
            if info is None or not commits(info, unit.where):
                missing.append(unit.name)
            else:
                done.append(Committed(inp.source.path, unit.index, info))
    return done, missing


def sum_counts(done: list[Committed]) -> tuple[Counts, dict[str, Counts]]:
    """The counts of units, in all and per input (every input of theirs, in order)."""
    total, per_input = Counts(), {}
    for c in done:
        counts = Counts.from_dict(c.info["counts"])
        per_input.setdefault(c.source, Counts())
        per_input[c.source] += counts
        total += counts
    return total, per_input


def manifest(job: ScoreJob, done: list[Committed], **more) -> dict:
    """`_manifest.json`: the plan, which unit of which input each part is, rows, rejects, skipped files."""
    total, _ = sum_counts(done)
    return {
        "plan": job.plan,
        "parts": [c.part() for c in done],
        "rows": total.rows_read,
        "rejected": sum(total.rejected.values()),
        "skipped": [{"path": path, "reason": why} for path, why in job.skipped.items()],
        **more,
    }
