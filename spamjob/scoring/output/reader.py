"""Reading a scoring output, local or in an object store, as `spamjob report` recounts it: its
files by name, the parts a finished job's manifest names, where pyarrow reads them."""

from __future__ import annotations

from pathlib import Path

from spamjob import stores
from spamjob.scoring.output import open_output
from spamjob.scoring.output.names import MANIFEST, PREDICTIONS
from spamjob.stores import is_uri


class OutputReader:
    """The files of a scoring output, local or in an object store: names relative to it, and where
    pyarrow reads them (a path, with `filesystem` for a store). In a store, a `spamjob score`
    output's parts are the ones its manifest names (an unfinished job's attempts may be beside them)."""

    def __init__(self, out: str):
        self.folder = open_output(out)
        self.uri = out.rstrip("/") if is_uri(out) else None
        self.root = stores.locate(out).path if self.uri else str(Path(out).resolve())
        self.filesystem = stores.locate(out).fs if self.uri else None
        self.predictions = self.folder.child(PREDICTIONS) if self.uri else str(Path(out, PREDICTIONS).resolve())
        self.manifest = self.folder.read_json(MANIFEST)
        self.unnamed = self.predictions if self.uri else str(Path(out, PREDICTIONS))  # parts of no known input

    def under(self, sub: str) -> list[str]:
        """Names (relative to the output) of every file below `sub`, sorted."""
        if self.uri:
            return [u[len(self.uri) + 1 :] for u, _, _ in stores.list_files(stores.join(self.uri, sub) + "/")]
        base = Path(self.root)
        return sorted(p.relative_to(base).as_posix() for p in (base / sub).rglob("*") if p.is_file())

    def part_names(self) -> list[str]:
        if self.uri and self.manifest:
            return sorted(p["part"] for p in self.manifest["parts"])
        return self.under(PREDICTIONS)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def name_of(self, path: str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def read_text(self, name: str) -> str:
        if self.uri:
            return (stores.read_bytes(stores.join(self.uri, name)) or b"").decode("utf-8")
        return Path(self.root, name).read_text(encoding="utf-8")
