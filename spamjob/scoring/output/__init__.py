"""A scoring job's output folder (`--out`): one protocol, its names and rules declared once
(names.py), implemented for a local folder (local.py: commits by rename, flock) and a prefix in
an object store (store.py: commits by create-if-absent, attempts), read back by reader.py
(`spamjob report`); lookup.py finds the output a path lies in. docs/architecture.md, "The
output commit protocol", tells the steps.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

from spamjob import stores
from spamjob.scoring.output.local import LocalFolder
from spamjob.scoring.output.store import StoreFolder


class OutputFolder(Protocol):
    """What a scoring job (and the Ray engine) asks of --out, wherever it is."""

    location: str  # the folder as reports and messages name it

    def child(self, name: str) -> str: ...
    def read_json(self, name: str) -> dict | None: ...
    def finished_with(self, plan: dict) -> bool: ...
    def prepare(self, plan: dict, overwrite: bool, resume: bool = True) -> None:
        """Step 1: the plan checked against the one there (resume, or an error unless --overwrite)."""

    def lock(self, name: str, wait: bool = True): ...
    def remove_temporaries(self, unit: str | None = None) -> None: ...
    def part_writer(self, unit: str, fmt: str): ...
    def sidecar(self, unit: str) -> dict | None: ...
    def committed(self, unit: str, where: dict | None = None) -> bool: ...
    def commit(
        self, unit: str, where: dict, part, schema, rejects: list[dict], counts: dict, run: int | None = None
    ) -> None:
        """Step 2: a unit's part, then its rejects, then its sidecar (the commit)."""

    def uncommit(self, unit: str) -> None: ...
    def source_record(self, key: str) -> dict: ...
    def record_source(self, key: str, record: dict) -> None: ...
    def uncommit_source(self, key: str, reason: str, path: str) -> None: ...
    # --incremental (spamjob.scoring.output.runs): the runs' records, one claimed at a time.
    def run_records(self) -> dict[int, dict]: ...
    def claim_run(self, number: int, record: dict):
        """The run's record created only if absent, and held (a lock, a heartbeat); None if taken."""

    def run_alive(self, number: int, mine: int) -> bool: ...
    def drop_run(self, number: int) -> None: ...
    def write_run(self, number: int, record: dict) -> None: ...
    def delete_unnamed(self, keep: set[str]) -> int:
        """The unit files that `keep` (a manifest's) does not name: superseded parts."""

    def finishing(self) -> contextlib.AbstractContextManager: ...
    def staged(self) -> contextlib.AbstractContextManager[Path]: ...
    def finish(self, manifest: dict | None = None) -> None:
        """Step 3: the manifest, then `_SUCCESS`, last."""


def open_output(out: str) -> OutputFolder:
    """The output folder of --out: a local folder, or a prefix in an object store."""
    return StoreFolder(out) if stores.is_uri(out) else LocalFolder(out)
