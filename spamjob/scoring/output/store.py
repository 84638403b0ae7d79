"""An --out in an object store (s3://, gs://, abfs://): the output folder's protocol where there
is no rename and no lock, step by step:

1. `prepare`: `_plan.json` is created only if absent (the store's conditional write): of tasks
   that start together one creates it and the others read it and find it theirs, or stop. The same
   plan resumes; another one (or objects spamjob did not write) is an error unless --overwrite,
   which deletes only what a scoring job writes. `_SUCCESS` is deleted.
2. Each attempt at a unit writes its part (and rejects) under a name unique to the attempt
   (`part-<unit>.<attempt>.parquet`: an object appears whole or not at all), then creates the
   unit's sidecar `_parts/<unit>.json`, only if absent: the sidecar is the commit, and names the
   files it commits. An attempt that finds a valid sidecar there lost: it deletes its files. A
   sidecar whose files are gone (or that commits another kind of unit) is replaced.
3. `finish`: the report, `_manifest.json` (the committed parts), then every object in
   predictions/, rejects/ and _parts/ that the manifest does not name is deleted (a killed or
   losing attempt's), then `_SUCCESS`, last.

Readers follow `_manifest.json`; after `_SUCCESS`, predictions/ holds exactly its parts. Where
the store's conditional write is not reachable (no s3fs/gcsfs installed) a create is a plain
write: two attempts of one unit both "commit", the later sidecar wins, and the last task to
finish still deletes the other part, so a finished output is the same; two jobs of different
plans started at the same instant are then not told apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from spamjob import stores
from spamjob.errors import SpamjobError
from spamjob.faults import kill_point
from spamjob.fsutil import sha256_file
from spamjob.scoring.output.names import (
    MANIFEST,
    PLAN,
    PREDICTIONS,
    REJECTS,
    RUNS,
    SIDECARS,
    SOURCES,
    SUCCESS,
    another_job,
    commits,
    manifest_names,
    not_ours,
    owned,
)
from spamjob.scoring.output.runs import STALE_BEATS, heartbeat_s, record_name
from spamjob.scoring.parts import PartWriter


class StorePartWriter(PartWriter):
    """A part written to a local temporary file, uploaded under its attempt's name at `commit`."""

    def __init__(self, uri: str, fmt: str):
        self.uri = uri
        self._tmpdir = tempfile.TemporaryDirectory(prefix="spamjob-part-")
        super().__init__(Path(self._tmpdir.name) / uri.rsplit("/", 1)[1], fmt)

    def commit(self, schema) -> None:
        super().commit(schema)
        self.record = {"size": self.dest.stat().st_size, "sha256": sha256_file(self.dest)}
        stores.upload(self.dest, self.uri)
        self._tmpdir.cleanup()

    def abort(self) -> None:
        super().abort()
        self._tmpdir.cleanup()


class StoreFolder:
    """--out in an object store (the module's protocol); the `OutputFolder` interface
    (spamjob.scoring.output), as the local LocalFolder."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.attempt = uuid.uuid4().hex[:12]  # this process's attempt: its files' names carry it

    @property
    def location(self) -> str:
        return self.uri

    def child(self, name: str) -> str:
        return stores.join(self.uri, name)

    def lock(self, name: str, wait: bool = True):
        """No locks in a store: a unit's attempts race to create its sidecar instead."""
        return contextlib.nullcontext(True)

    def read_json(self, name: str) -> dict | None:
        data = stores.read_bytes(self.child(name))
        if data is None:
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SpamjobError(f"{self.child(name)} is not valid JSON") from None

    def _write_json(self, name: str, obj) -> None:
        stores.write_bytes(self.child(name), _json(obj))

    def finished_with(self, plan: dict) -> bool:
        return stores.exists(self.child(SUCCESS)) and self.read_json(PLAN) == plan

    def prepare(self, plan: dict, overwrite: bool, resume: bool = True) -> None:
        """Step 1 of the protocol."""
        old = self.read_json(PLAN)
        if old is None and self._names():
            old = self.read_json(PLAN)  # another task may have created it since
            if old is None:
                self._clear(None, overwrite)
        if old is not None and (old != plan or not resume):
            self._clear(old, overwrite or old == plan)
            old = None
        if old is None and not stores.create(self.child(PLAN), _json(plan)) and self.read_json(PLAN) != plan:
            raise SpamjobError(f"another job with another plan started writing {self.uri} just now")
        stores.delete([self.child(SUCCESS)])

    def _names(self) -> list[str]:
        """Every object under the prefix, relative to it, but the runs' records (--incremental: this
        run's claim is there before the plan)."""
        names = [uri[len(self.uri) + 1 :] for uri, _, _ in stores.list_files(self.uri + "/")]
        return [n for n in names if not n.startswith(RUNS + "/")]

    def _clear(self, old: dict | None, overwrite: bool) -> None:
        if not overwrite:
            raise another_job(f"output {self.uri}", old)
        whole = old is not None and old.get("engine") == "ray"
        names = self._names()
        foreign = [n for n in names if not owned(n, whole)]
        if foreign:
            raise not_ours(self.child(foreign[0]), self.uri)
        stores.delete([self.child(n) for n in names if n != PLAN] + [self.child(PLAN)])

    def remove_temporaries(self, unit: str | None = None) -> None:
        """A store holds no temporaries (an object appears whole); a dead attempt's files go at `finish`."""

    def part_writer(self, unit: str, fmt: str) -> StorePartWriter:
        return StorePartWriter(self.child(f"{PREDICTIONS}/{unit}.{self.attempt}.{fmt}"), fmt)

    def sidecar(self, unit: str) -> dict | None:
        try:
            return self.read_json(f"{SIDECARS}/{unit}.json")
        except SpamjobError as e:
            if "not valid JSON" in str(e):
                return None
            raise

    def committed(self, unit: str, where: dict | None = None) -> bool:
        return self._valid(self.sidecar(unit), where)

    def _valid(self, info: dict | None, where: dict | None) -> bool:
        """A sidecar that commits `where` and whose files are all there at their recorded sizes."""
        if not info or not info.get("files") or (where is not None and not commits(info, where)):
            return False
        for name, record in info["files"].items():
            found = stores.info(self.child(name))
            if found.type != pafs.FileType.File or found.size != record["size"]:
                return False
        return True

    def commit(
        self,
        unit: str,
        where: dict,
        part: StorePartWriter,
        schema,
        rejects: list[dict],
        counts: dict,
        run: int | None = None,
    ) -> None:
        """Step 2: the part and rejects under this attempt's names, then the sidecar, created only if
        absent; a losing attempt deletes its files."""
        part.commit(schema)
        part_name = f"{PREDICTIONS}/{part.uri.rsplit('/', 1)[1]}"
        files = {part_name: part.record}
        rejects_name = None
        if rejects:
            rejects_name = f"{REJECTS}/{unit}.{self.attempt}.jsonl"
            data = "".join(json.dumps(r) + "\n" for r in rejects).encode()
            stores.write_bytes(self.child(rejects_name), data)
            files[rejects_name] = {"size": len(data), "sha256": _sha256(data)}
        kill_point("SPAMJOB_KILL_BEFORE_SIDECAR", 1)  # crash tests: a part without its commit
        record = {**where, "part": part_name, "rows": part.rows, "rejects": rejects_name, "counts": counts}
        if run is not None:
            record["run"] = run  # --incremental: the run that committed it
        self._create_sidecar(unit, where, {**record, "files": files})

    def _create_sidecar(self, unit: str, where: dict, record: dict) -> None:
        uri = self.child(f"{SIDECARS}/{unit}.json")
        for _ in range(3):
            if stores.create(uri, _json(record)):
                return
            if self._valid(self.sidecar(unit), where):  # another attempt committed it first
                stores.delete([self.child(name) for name in record["files"]])
                return
            stores.delete([uri])  # a stale commit (its files gone, or another kind of unit): replace it
        raise SpamjobError(f"{uri}: could not commit (other attempts keep replacing it)")

    def uncommit(self, unit: str) -> None:
        info = self.sidecar(unit) or {}
        stores.delete([self.child(f"{SIDECARS}/{unit}.json"), *(self.child(n) for n in info.get("files", {}))])

    def source_record(self, key: str) -> dict:
        return self.read_json(f"{SOURCES}/{key}.json") or {}

    def record_source(self, key: str, record: dict) -> None:
        self._write_json(f"{SOURCES}/{key}.json", record)

    def uncommit_source(self, key: str, reason: str, path: str) -> None:
        """The record first (a block's commit checks it after its sidecar), then every unit of the
        file; a kill in between leaves units that `where` tells apart and `finish` deletes."""
        self.record_source(key, {"path": path, "reason": reason})
        for folder in (PREDICTIONS, REJECTS, SIDECARS):
            kill_point("SPAMJOB_KILL_IN_FALL_BACK", folder)  # crash tests
            stores.delete([uri for uri, _, _ in stores.list_files(self.child(f"{folder}/part-{key}-"))])

    def run_records(self) -> dict[int, dict]:
        """The runs of an incremental output (spamjob.scoring.output.runs), by number."""
        listed = stores.list_files(self.child(RUNS) + "/")
        names = [u[len(self.uri) + 1 :] for u, _, _ in listed]
        return {int(n[len(RUNS) + 1 : -5]): self.read_json(n) or {} for n in names if n.endswith(".json")}

    def claim_run(self, number: int, record: dict) -> Heartbeat | None:
        """Run `number`'s record, created only if absent, then rewritten every heartbeat until
        released; None when another run created it first."""
        if not stores.create(self.child(record_name(number)), _json(record)):
            return None
        return Heartbeat(self.child(record_name(number)), record)

    def run_alive(self, number: int, mine: int) -> bool:
        """Whether run `number` beat lately: its record is less than STALE_BEATS heartbeats older than
        run `mine`'s, created just now (the store's clock for both)."""
        theirs, now = (stores.info(self.child(record_name(n))).mtime_ns or 0 for n in (number, mine))
        return now - theirs < STALE_BEATS * heartbeat_s() * 1e9

    def drop_run(self, number: int) -> None:
        stores.delete([self.child(record_name(number))])

    def write_run(self, number: int, record: dict) -> None:
        self._write_json(record_name(number), record)

    def delete_unnamed(self, keep: set[str]) -> int:
        """Every object of predictions/, rejects/, _parts/ and _sources/ not in `keep`. Returns how many."""
        gone = [
            uri
            for folder in (PREDICTIONS, REJECTS, SIDECARS, SOURCES)
            for uri, _, _ in stores.list_files(self.child(folder) + "/")
            if uri[len(self.uri) + 1 :] not in keep
        ]
        stores.delete(gone)
        return len(gone)

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """A local folder whose files are uploaded into the output when the block ends."""
        with tempfile.TemporaryDirectory(prefix="spamjob-report-") as tmp:
            yield Path(tmp)
            for path in sorted(Path(tmp).iterdir()):
                stores.upload(path, self.child(path.name))

    def finish(self, manifest: dict | None = None) -> None:
        """Step 3: the manifest, the objects it does not name deleted, then `_SUCCESS`."""
        if manifest is not None:
            self._write_json(MANIFEST, manifest)
            self.delete_unnamed(manifest_names(manifest))
        stores.write_bytes(self.child(SUCCESS), b"")


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Heartbeat:
    """A store run's claim: its record rewritten every `heartbeat_s()` seconds by a daemon thread
    (a failed write is tried again at the next beat), until `release`."""

    def __init__(self, uri: str, record: dict):
        self.uri, self.record, self._stop = uri, record, threading.Event()
        self._thread = threading.Thread(target=self._beat, name="spamjob-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        beats = 0
        while not self._stop.wait(heartbeat_s()):
            beats += 1
            with contextlib.suppress(SpamjobError):
                stores.write_bytes(self.uri, _json({**self.record, "heartbeats": beats}))

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
