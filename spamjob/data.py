"""SMS Spam Collection: download, verify, read, balance, split and write (the reference recipe)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spamjob import __version__
from spamjob.config import LABELS
from spamjob.console import note
from spamjob.errors import SpamjobError, redact
from spamjob.fetch import download, is_url
from spamjob.fsutil import atomic_path, cache_dir, sha256_file, write_json

UCI_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
UCI_MEMBER = "SMSSpamCollection"
# sha256 of the extracted SMSSpamCollection (477,907 bytes, 5,574 lines).
UCI_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"


def default_source() -> str:
    """The dataset URL: $SPAMJOB_DATA_URL (a mirror) or the UCI zip."""
    return os.environ.get("SPAMJOB_DATA_URL") or UCI_URL


SPLITS = ("train", "validation", "test")


@dataclass
class PrepareResult:
    """What `prepare` did: counts before/after balancing, split sizes, files written."""

    source: str
    source_sha256: str
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    sizes: dict[str, int]
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """Three human-readable lines."""
        before = ", ".join(f"{k} {v:,}" for k, v in self.counts_before.items())
        after = ", ".join(f"{k} {v:,}" for k, v in self.counts_after.items())
        sizes = " / ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        return f"read {sum(self.counts_before.values()):,} rows ({before})\nafter balancing: {after}\nsplits: {sizes}"


def resolve_source(
    source: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Return a local path to the labeled message file behind `source`.

    `source` is a zip URL, a local zip, or an already extracted file. Zips are
    extracted (member `SMSSpamCollection`, or the zip's only file) into the cache and
    the extracted file is checked against `sha256` (default: the UCI file's hash); a
    verified cached copy means no download at all. A plain file is checked only
    against an explicit `sha256`. `sha256="none"` turns checking off.
    """
    source = source or default_source()
    cache = Path(cache) if cache is not None else cache_dir() / "data"
    explicit = None if sha256 in (None, "none") else sha256.lower()
    sha256 = None if sha256 == "none" else (explicit or UCI_SHA256)
    if is_url(source):
        cached = cache / UCI_MEMBER
        if sha256 is not None and cached.exists():
            if sha256_file(cached) == sha256:
                return cached
            note(f"{cached} does not have its pinned sha256 (damaged); extracting it again")
        zip_path = download(
            str(source),
            cache / Path(str(source).split("?")[0]).name,
            progress=progress,
            fetch_hint="download the zip on a machine with network and pass --source ZIP",
        )
        return _extract(zip_path, cache, sha256)
    path = Path(source).expanduser()
    if not path.exists():
        raise SpamjobError(f"source {path} does not exist")
    if path.is_dir():
        raise SpamjobError(f"source {path} is a folder; give a zip or a labeled TSV/CSV file")
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return _extract(path, cache, sha256)
    if explicit is not None and (actual := sha256_file(path)) != explicit:
        raise SpamjobError(f"{path} has sha256 {actual}, expected {explicit}")
    return path


def _extract(zip_path: Path, cache: Path, sha256: str | None) -> Path:
    """Extract the message file from a zip into `cache`, verified, via a temporary name."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            member = next((n for n in names if Path(n).name == UCI_MEMBER), None)
            if member is None:
                data_files = [n for n in names if not Path(n).name.lower().startswith("readme")]
                if len(data_files) != 1:
                    raise SpamjobError(f"{zip_path} holds no {UCI_MEMBER} file (members: {', '.join(names) or 'none'})")
                member = data_files[0]
            dest = cache / Path(member).name
            with atomic_path(dest) as tmp:
                with zf.open(member) as src, open(tmp, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
                if sha256 is not None:
                    actual = sha256_file(tmp)
                    if actual != sha256:
                        raise SpamjobError(
                            f"{member} from {zip_path} has sha256 {actual}, expected {sha256} "
                            "(pass --sha256 none to accept another file)"
                        )
    except zipfile.BadZipFile:
        raise SpamjobError(f"{zip_path} is not a valid zip archive") from None
    return dest


def read_messages(path: str | os.PathLike, delimiter: str | None = None) -> pd.DataFrame:
    """Read a labeled message file into columns `Label` (str) and `Text` (str).

    With no header (the UCI file) this is exactly the reference's
    `pd.read_csv(path, sep="\\t", header=None, names=["Label", "Text"])`, including
    pandas' quote handling that joins a few lines (5,574 lines -> 5,572 rows). A file
    whose first line names `label` and `text` columns (any case) is read with that
    header; other columns are ignored. `.csv` files default to comma, others to tab.
    """
    path = Path(path)
    sep = delimiter or ("," if path.suffix.lower() == ".csv" else "\t")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            first = f.readline().lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise SpamjobError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    header_fields = [c.strip().strip('"').lower() for c in first.split(sep)]
    try:
        if "label" in header_fields and "text" in header_fields:
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", keep_default_na=False, dtype=str)
            df = df.rename(columns={c: c.strip().lower() for c in df.columns})
            df = df[["label", "text"]].rename(columns={"label": "Label", "text": "Text"})
        else:
            df = pd.read_csv(path, sep=sep, header=None, names=["Label", "Text"])
    except UnicodeDecodeError as e:
        raise SpamjobError(f"{path} is not UTF-8 text ({e.reason})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise SpamjobError(f"cannot read {path} as label{sep!r}text: {str(e).strip()}") from None
    if not isinstance(df.index, pd.RangeIndex):
        # pandas turns extra leading fields into an index instead of failing.
        raise SpamjobError(
            f"{path}: expected 2 columns (label, text) separated by {sep!r}, found lines with more; "
            "give a header with `label` and `text` columns to pick them"
        )
    if df.empty:
        raise SpamjobError(f"{path} holds no rows")
    _check(df, path)
    return df


def _check(df: pd.DataFrame, path: Path) -> None:
    """Normalise labels in place (strip, lower case); they must be ham/spam and every text non-empty."""
    labels = df["Label"].astype("string").str.strip().str.lower()
    bad = df.loc[~labels.isin(LABELS), "Label"]
    if len(bad):
        counts = bad.astype("string").fillna("<empty>").value_counts()
        shown = ", ".join(f"{v!r} ({n} rows)" for v, n in counts.head(5).items())
        raise SpamjobError(f"{path}: labels must be ham or spam; found {shown} (first at row {int(bad.index[0]) + 1})")
    df["Label"] = labels
    empty = df["Text"].isna() | (df["Text"].astype("string").str.len() == 0)
    if empty.any():
        raise SpamjobError(f"{path}: {int(empty.sum())} rows have no text (first at row {int(empty.idxmax()) + 1})")


def balance(df: pd.DataFrame, seed: int = 123) -> pd.DataFrame:
    """Undersample the larger class to the smaller one's size (reference: ham sampled, ham first)."""
    ham, spam = df[df["Label"] == "ham"], df[df["Label"] == "spam"]
    if len(ham) >= len(spam):
        ham = ham.sample(len(spam), random_state=seed)
    else:
        spam = spam.sample(len(ham), random_state=seed)
    return pd.concat([ham, spam])


def split(df: pd.DataFrame, seed: int = 123, train_frac: float = 0.7, val_frac: float = 0.1) -> dict[str, pd.DataFrame]:
    """Shuffle once, then cut train / validation / test as the reference does."""
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    val_end = train_end + int(len(df) * val_frac)
    return {"train": df[:train_end], "validation": df[train_end:val_end], "test": df[val_end:]}


def prepare(
    source: str | os.PathLike | None = None,
    out: str | os.PathLike = "data",
    *,
    seed: int = 123,
    train_frac: float = 0.7,
    val_frac: float = 0.1,
    balanced: bool = True,
    formats: tuple[str, ...] = ("csv",),
    sha256: str | None = None,
    delimiter: str | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Read, (balance,) map labels to 0/1, split, and write `train/validation/test` files + prepare.json."""
    _check_split_options(train_frac, val_frac, formats)
    path = resolve_source(source, cache=cache, sha256=sha256, progress=progress)
    df = read_messages(path, delimiter=delimiter)
    counts_before = {k: int((df["Label"] == k).sum()) for k in LABELS}
    if balanced:
        if min(counts_before.values()) == 0:
            raise SpamjobError(f"cannot balance {path}: one class has no rows ({counts_before})")
        df = balance(df, seed)
    counts_after = {k: int((df["Label"] == k).sum()) for k in LABELS}
    df["Label"] = df["Label"].map({k: i for i, k in enumerate(LABELS)})
    parts = split(df, seed, train_frac, val_frac)
    empty = [k for k, v in parts.items() if v.empty]
    if empty:
        raise SpamjobError(f"split(s) {', '.join(empty)} would be empty with {len(df)} rows; change the fractions")

    files = _write_splits(parts, Path(out), formats)
    result = PrepareResult(
        source=redact(str(source or default_source())),  # a mirror's URL may carry a token
        source_sha256=sha256_file(path),
        counts_before=counts_before,
        counts_after=counts_after,
        sizes={k: len(v) for k, v in parts.items()},
        files=files,
    )
    write_json(
        Path(out) / "prepare.json",
        {
            "spamjob_version": __version__,
            "source": result.source,
            "source_sha256": result.source_sha256,
            "seed": seed,
            "train_frac": train_frac,
            "val_frac": val_frac,
            "balanced": balanced,
            "labels": list(LABELS),
            "counts_before": counts_before,
            "counts_after": counts_after,
            "sizes": result.sizes,
            "files": {p.name: sha256_file(p) for p in files},
        },
    )
    return result


def prepare_from(cfg) -> PrepareResult:
    """`prepare` with `spamjob prepare`'s options (spamjob.command_config.PrepareConfig)."""
    formats = ("csv", "parquet") if cfg.format == "parquet" else ("csv",)
    return prepare(
        cfg.source,
        cfg.out,
        seed=cfg.seed,
        train_frac=cfg.train_frac,
        val_frac=cfg.val_frac,
        balanced=cfg.balance,
        formats=formats,
        sha256=cfg.sha256,
        delimiter=cfg.delimiter,
        cache=cfg.cache_dir,
    )


def _check_split_options(train_frac: float, val_frac: float, formats: tuple[str, ...]) -> None:
    if not (0 < train_frac < 1 and 0 <= val_frac < 1 and train_frac + val_frac < 1):
        raise SpamjobError(
            f"need 0 < train-frac < 1, 0 <= val-frac and train-frac + val-frac < 1; got {train_frac} and {val_frac}"
        )
    unknown = set(formats) - {"csv", "parquet"}
    if unknown:
        raise SpamjobError(f"unknown format(s) {sorted(unknown)}; choose csv or parquet")


def _write_splits(parts: dict[str, pd.DataFrame], out: Path, formats: tuple[str, ...]) -> list[Path]:
    """Each split as CSV (the reference's files) and/or Parquet, each file atomically."""
    files = []
    for name, part in parts.items():
        for fmt in ("csv", "parquet"):
            if fmt in formats:
                with atomic_path(out / f"{name}.{fmt}") as tmp:
                    part.to_csv(tmp, index=False) if fmt == "csv" else part.to_parquet(tmp, index=False)
                files.append(out / f"{name}.{fmt}")
    return files


def load_split(data_dir: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read one prepared split (CSV, else Parquet) with columns Label (0/1) and Text."""
    data_dir = Path(data_dir)
    for ext, reader in ((".csv", pd.read_csv), (".parquet", pd.read_parquet)):
        p = data_dir / f"{name}{ext}"
        if p.exists():
            df = reader(p)
            missing = {"Label", "Text"} - set(df.columns)
            if missing:
                raise SpamjobError(f"{p} lacks column(s) {sorted(missing)}")
            return df
    raise SpamjobError(f"{data_dir} has no {name}.csv or {name}.parquet; run `spamjob prepare --out {data_dir}`")
