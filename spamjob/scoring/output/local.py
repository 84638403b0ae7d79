"""A local --out folder and its commit protocol, step by step:

1. `prepare`: under the folder's plan lock, the job's plan (`_plan.json`: what decides every
   prediction) is checked against the one there: the same plan resumes, another one (or files
   spamjob did not write) is an error unless --overwrite, which deletes only what a scoring job
   writes. Temporaries of dead processes go; the plan is written; `_SUCCESS` is removed.
2. Each work unit is written under its own lock (`lock(unit)`): its part in predictions/ under a
   temporary name (a PartWriter at `part_path`), renamed into place when complete; then its
   rejects; then its sidecar `_parts/<unit>.json` (rows, counts and the size and sha256 of each
   file): the sidecar is the commit (`commit`). A unit whose sidecar is missing, or whose files
   no longer match it, is redone (`committed`).
3. `finish`: the report (written by the caller under the report lock), `_manifest.json`, then
   `_SUCCESS`, last.

Locks are flock(2) files in `_locks/`, released when a process dies however it dies; a temporary
file is removed only when the lock of its unit is free (no live process is writing it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from spamjob.errors import SpamjobError
from spamjob.faults import kill_point, pause_point
from spamjob.fsutil import atomic_path, create_file, locked, read_json, sha256_file, write_json
from spamjob.scoring.output.names import (
    LOCKS,
    MANIFEST,
    PLAN,
    PLAN_LOCK,
    PREDICTIONS,
    REJECTS,
    REPORT_LOCK,
    RUNS,
    SIDECARS,
    SOURCES,
    SUCCESS,
    another_job,
    commits,
    manifest_names,
    not_ours,
    owned,
    unit_of,
)
from spamjob.scoring.output.runs import record_name
from spamjob.scoring.parts import PartWriter


class LocalFolder:
    """A local --out folder: commits by rename, concurrency by flock (see the module's protocol);
    the `OutputFolder` interface (spamjob.scoring.output), as the store's StoreFolder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def location(self) -> str:
        """The folder as reports and messages name it."""
        return str(self.path.resolve())

    def child(self, name: str) -> str:
        return str(self.path / name)

    def part_writer(self, unit: str, fmt: str) -> PartWriter:
        return PartWriter(self.part_path(unit, fmt), fmt)

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """A local folder whose files are the output's (here: the folder itself; the report goes there)."""
        self.path.mkdir(parents=True, exist_ok=True)
        yield self.path

    def read_json(self, name: str) -> dict | None:
        """A bookkeeping file of the folder (the manifest, a report), None when it is absent."""
        path = self.path / name
        return read_json(path) if path.is_file() else None

    def lock(self, name: str, wait: bool = True):
        """The lock of a unit (its part name), of a CSV file's blocks (its key), or PLAN_LOCK/REPORT_LOCK."""
        return locked(self.path / LOCKS / f"{name}.lock", wait=wait)

    def finished_with(self, plan: dict) -> bool:
        """A finished job of this very plan is here."""
        plan_path = self.path / PLAN
        return (self.path / SUCCESS).is_file() and plan_path.is_file() and read_json(plan_path) == plan

    def prepare(self, plan: dict, overwrite: bool, resume: bool = True) -> None:
        """Step 1 of the protocol. Same plan: resume (with `resume` off, start again). Tasks that
        start together (a Slurm array) agree under the plan lock: the first writes the plan, the
        others wait for it, then find it theirs."""
        self.path.mkdir(parents=True, exist_ok=True)
        plan_path = self.path / PLAN
        with self.lock(PLAN_LOCK):
            if [p for p in self.path.iterdir() if p.name not in (LOCKS, RUNS)]:
                old = read_json(plan_path) if plan_path.is_file() else None
                if old != plan or not resume:
                    self._clear(old, overwrite or old == plan)
            self.remove_temporaries()  # of killed runs; a live run's are locked and stay
            pause_point("SPAMJOB_PAUSE_BEFORE_PLAN", 1)  # concurrency tests: a plan being written
            with self.lock(REPORT_LOCK):
                (self.path / SUCCESS).unlink(missing_ok=True)
                write_json(plan_path, plan)

    def _clear(self, old: dict | None, overwrite: bool) -> None:
        """The folder holds another job's files (or none of spamjob's): an error, or with --overwrite
        their deletion (the locks and runs stay: other processes may be waiting on them)."""
        if not overwrite:
            raise another_job(f"output folder {self.path}", old)
        whole = old is not None and old.get("engine") == "ray"  # Ray names its part files itself
        foreign = [n for n in self._names() if not owned(n, whole)]
        if foreign:
            raise not_ours(self.path / foreign[0], self.path)
        for p in self.path.iterdir():
            if p.name not in (LOCKS, RUNS):  # (an incremental output's run claims this one too)
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def _names(self) -> list[str]:
        """Every file below the folder (and every folder holding none), relative to it; the locks left out."""
        found = []
        for p in sorted(self.path.rglob("*")):
            name = p.relative_to(self.path).as_posix()
            if name.split("/")[0] != LOCKS and (p.is_file() or not any(p.iterdir())):
                found.append(name + ("/" if p.is_dir() else ""))
        return found

    def remove_temporaries(self, unit: str | None = None) -> None:
        """Temporary files that no live process is writing: each belongs to a unit (or the report)
        whose lock is free. With `unit`, only that unit's (the caller holds its lock)."""
        for folder in (self.path, *(self.path / name for name in (PREDICTIONS, REJECTS, SIDECARS, SOURCES))):
            for tmp in (p for p in folder.glob(".*.part") if p.is_file()):
                name = unit_of(tmp.name) or REPORT_LOCK
                if unit is not None:
                    if name == unit:
                        tmp.unlink(missing_ok=True)
                    continue
                with self.lock(name, wait=False) as free:
                    if free:
                        tmp.unlink(missing_ok=True)

    def part_path(self, unit: str, fmt: str) -> Path:
        return self.path / PREDICTIONS / f"{unit}.{fmt}"

    def sidecar(self, unit: str) -> dict | None:
        """A unit's commit record, None when it has none (or it cannot be read: the unit is redone)."""
        path = self.path / SIDECARS / f"{unit}.json"
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except SpamjobError:
            return None

    def committed(self, unit: str, where: dict | None = None) -> bool:
        """The unit's sidecar is there, commits `where` (the unit's input, index and kind) and every
        file it lists has its recorded size and sha256: a part truncated or a rejects file deleted
        since is redone, never trusted."""
        info = self.sidecar(unit) or {}
        files = info.get("files", {})
        if where is not None and not commits(info, where):
            return False
        return bool(files) and all(self._unchanged(name, rec) for name, rec in files.items())

    def _unchanged(self, name: str, rec: dict) -> bool:
        """A committed file still has its recorded size and sha256. An incremental output's record
        also holds its mtime: a file of that size and mtime is taken as unchanged unhashed (each run
        checks every earlier part; hashing them all would read the whole output every night)."""
        path = self.path / name
        if not path.is_file() or path.stat().st_size != rec["size"]:
            return False
        return rec.get("mtime_ns") == path.stat().st_mtime_ns or sha256_file(path) == rec["sha256"]

    def _record(self, name: str, mtime: bool = False) -> dict:
        """Size and sha256 of a file just committed (`mtime`: and its mtime)."""
        path = self.path / name
        record = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        return {**record, "mtime_ns": path.stat().st_mtime_ns} if mtime else record

    def commit(
        self, unit: str, where: dict, part, schema, rejects: list[dict], counts: dict, run: int | None = None
    ) -> None:
        """Step 2: the part (a complete PartWriter, of `schema`), then the rejects, then the sidecar
        (`where`: the unit's input and index; its counts; the files' sizes and hashes): a unit without
        its sidecar is redone on rerun."""
        part.commit(schema)
        rejects_name = None
        if rejects:
            rejects_name = f"{REJECTS}/{unit}.jsonl"
            with atomic_path(self.path / rejects_name) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in rejects))
        part_name = part.dest.relative_to(self.path).as_posix()
        write_json(
            self.path / SIDECARS / f"{unit}.json",
            {
                **where,
                "part": part_name,
                "rows": part.rows,
                "rejects": rejects_name,
                "counts": counts,
                **({"run": run} if run is not None else {}),
                "files": {name: self._record(name, run is not None) for name in (part_name, rejects_name) if name},
            },
        )

    def uncommit(self, unit: str) -> None:
        """Undo a unit's commit: its sidecar first (the unit reads as not done), then its files."""
        info = self.sidecar(unit) or {}
        (self.path / SIDECARS / f"{unit}.json").unlink(missing_ok=True)
        for name in info.get("files", {}):
            (self.path / name).unlink(missing_ok=True)

    def source_record(self, key: str) -> dict:
        """What the job recorded about an input file (a CSV file's unit count, why it is read whole)."""
        path = self.path / SOURCES / f"{key}.json"
        return read_json(path) if path.is_file() else {}

    def record_source(self, key: str, record: dict) -> None:
        write_json(self.path / SOURCES / f"{key}.json", record)

    def uncommit_source(self, key: str, reason: str, path: str) -> None:
        """Delete every unit of an input file and record why it is read whole now. Data files, then
        sidecars (a sidecar whose files are gone is redone), then the record: a kill before it leaves
        the file to be split again, and the same check to fail again."""
        for folder in (PREDICTIONS, REJECTS, SIDECARS):
            kill_point("SPAMJOB_KILL_IN_FALL_BACK", folder)  # crash tests
            for p in (self.path / folder).glob(f"part-{key}-*"):
                p.unlink()
        self.record_source(key, {"path": path, "reason": reason})

    def run_records(self) -> dict[int, dict]:
        """The runs of an incremental output (spamjob.scoring.output.runs), by number."""
        return {int(p.stem): read_json(p) for p in (self.path / RUNS).glob("[0-9]*.json")}

    def claim_run(self, number: int, record: dict) -> Held | None:
        """Run `number`'s lock (held until released, or the process dies), then its record, created
        only if absent; None when another run holds either."""
        hold = contextlib.ExitStack()
        if hold.enter_context(self.lock(f"run-{number:06d}", wait=False)) and create_file(
            self.path / record_name(number), json.dumps(record, indent=2) + "\n"
        ):
            return Held(hold)
        hold.close()
        return None

    def run_alive(self, number: int, mine: int) -> bool:
        """Whether run `number`'s process is alive: it holds its lock."""
        with self.lock(f"run-{number:06d}", wait=False) as free:
            return not free

    def drop_run(self, number: int) -> None:
        (self.path / record_name(number)).unlink(missing_ok=True)

    def write_run(self, number: int, record: dict) -> None:
        write_json(self.path / record_name(number), record)

    def delete_unnamed(self, keep: set[str]) -> int:
        """Every unit file of predictions/, rejects/, _parts/ and _sources/ not in `keep` (names
        relative to the folder): an incremental output's superseded parts. Returns how many."""
        gone = 0
        for folder in (PREDICTIONS, REJECTS, SIDECARS, SOURCES):
            for p in (self.path / folder).glob("*"):
                if p.is_file() and f"{folder}/{p.name}" not in keep and unit_of(p.name) is not None:
                    p.unlink()
                    gone += 1
        return gone

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """Step 3, around the report: temporaries nobody holds go (e.g. a killed --shard task's), then
        the report lock is held while the caller writes the report and calls `finish`."""
        self.remove_temporaries()
        with self.lock(REPORT_LOCK):
            yield

    def finish(self, manifest: dict | None = None) -> None:
        """`_manifest.json` (which unit of which input each part is), then `_SUCCESS`, last."""
        if manifest is not None:
            write_json(self.path / MANIFEST, manifest)
            if manifest.get("incremental"):  # earlier versions' parts: superseded once it is written
                self.delete_unnamed(manifest_names(manifest))
        with atomic_path(self.path / SUCCESS) as tmp:
            tmp.write_text("")


class Held:
    """A local run's claim: its lock, held until `release`."""

    def __init__(self, hold: contextlib.ExitStack):
        self._hold = hold

    def release(self) -> None:
        self._hold.close()
