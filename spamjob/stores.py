"""Object stores (S3, GCS, Azure) behind one set of calls that also take local paths.

A URI (`s3://bucket/key`, `gs://...`, `abfs://container/...`) is opened through pyarrow.fs: S3
and GCS natively (ranged reads, multipart writes, the store clients' own credential chains),
Azure through adlfs (an fsspec filesystem) wrapped in `PyFileSystem(FSSpecHandler(...))`. An S3
endpoint for an S3-compatible store (MinIO, Ceph) comes from `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL`, as for the AWS SDKs; a GCS emulator from `STORAGE_EMULATOR_HOST`, as for
Google's clients (and gcsfs); Azure's account, key or connection string from adlfs's
`AZURE_STORAGE_*` variables. Requests are retried with backoff on throttling and 5xx
by the clients (`RETRIES` attempts). Bytes are read and written as they are (pyarrow would
otherwise (de)compress by the name's suffix). `create` ("only if absent") needs the store's conditional
write, reached through s3fs / gcsfs / adlfs (`spamjob[s3]`, `[gcs]`, `[azure]`); without it a
create is a plain write (what still holds then: docs/scoring.md).

Every failure is a SpamjobError naming the URI in one line (`store_errors`); credentials never
appear in URIs (spamjob.fields.uri_problem refuses them) and so never in plans, reports or errors;
every message redacts a URI's user-info and query values all the same (spamjob.errors.redact).
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import functools
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from spamjob import extras
from spamjob.errors import SpamjobError, first_line, redact
from spamjob.fields import STORE_SCHEMES

RETRIES = 10  # attempts per request, with the clients' exponential backoff
# Where the stores are and which region: settings, never secrets (an engine hands them to its workers).
ENDPOINT_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "STORAGE_EMULATOR_HOST",
)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
GLOB = re.compile(r"[*?\[]")


def is_uri(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and _SCHEME.match(path) is not None


def local_path(path: str) -> str:
    """A `file://` URI as the local path it names; anything else as it is."""
    if isinstance(path, str) and path[:7].lower() == "file://":
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(path).path)
    return path


@dataclass(frozen=True)
class Location:
    """A URI as a pyarrow filesystem and the path in it (`bucket/key`)."""

    uri: str
    fs: pafs.FileSystem
    path: str
    kind: str  # "s3" | "gcs" | "azure"

    def child(self, name: str) -> str:
        return join(self.uri, name)


def locate(uri: str) -> Location:
    m = _SCHEME.match(uri)
    if m is None or m.group("scheme").lower() not in STORE_SCHEMES:
        raise SpamjobError(f"{uri}: not an s3://, gs:// or abfs:// URI")
    kind = STORE_SCHEMES[m.group("scheme").lower()]
    path = m.group("rest").rstrip("/")
    region = s3_region(path.split("/", 1)[0]) if kind == "s3" else None
    return Location(uri, filesystem(kind, region), path, kind)


@functools.cache
def s3_region(bucket: str) -> str | None:
    """The region to sign S3 requests for: AWS_REGION / AWS_DEFAULT_REGION, else the bucket's own
    (asked once per bucket, as FileSystem.from_uri does); None with an endpoint override."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region or endpoint():
        return region or None
    with store_errors(f"s3://{bucket}"):
        return pafs.resolve_s3_region(bucket)


def join(uri: str, *names: str) -> str:
    return "/".join([uri.rstrip("/"), *(n.strip("/") for n in names)])


def parent(uri: str) -> str:
    head, _, _ = uri.rstrip("/").rpartition("/")
    return head if "://" in head and not head.endswith("://") else uri


def endpoint() -> str | None:
    """The S3 endpoint override the AWS SDKs read (MinIO, Ceph, a test server)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@functools.cache
def filesystem(kind: str, region: str | None = None) -> pafs.FileSystem:
    """One client per store kind (and S3 region) and process (the clients pool their connections)."""
    if kind == "s3":
        return pafs.S3FileSystem(
            region=region,
            endpoint_override=endpoint(),
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=RETRIES),
            check_directory_existence_before_creation=False,
            allow_delayed_open=True,  # a small object in one PutObject, not a 3-request multipart upload
        )
    if kind == "gcs":
        retry = datetime.timedelta(seconds=RETRIES * 6)
        if emulator := os.environ.get("STORAGE_EMULATOR_HOST"):  # fake-gcs-server, a test server
            scheme, _, host = emulator.rpartition("://")
            return pafs.GcsFileSystem(
                endpoint_override=host, scheme=scheme or "http", anonymous=True, retry_time_limit=retry
            )
        return pafs.GcsFileSystem(retry_time_limit=retry)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_store("azure")))


@functools.cache
def fsspec_store(kind: str):
    """The fsspec filesystem of a store kind, for conditional writes (and all of Azure)."""
    if kind == "azure":
        extras.require("azure", "an abfs:// URI")
    elif not extras.is_available(kind):
        return None  # no conditional writes: `create` writes plainly
    if kind == "s3":
        import s3fs

        retries = {"retries": {"max_attempts": RETRIES, "mode": "standard"}}
        return s3fs.S3FileSystem(endpoint_url=endpoint(), config_kwargs=retries)
    if kind == "gcs":
        import gcsfs

        return gcsfs.GCSFileSystem()
    import adlfs

    return adlfs.AzureBlobFileSystem()  # its AZURE_STORAGE_* variables, else Azure's credential chain


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """A store's failure as one line naming `uri`: absent, denied, no bucket, or the client's words."""
    try:
        yield
    except (SpamjobError, FileExistsError):
        raise
    except FileNotFoundError:
        raise SpamjobError(f"{uri}: not found") from None
    except Exception as e:  # the clients' errors: OSError (pyarrow), botocore's, azure's
        raise SpamjobError(f"{uri}: {reason(e)}") from None


def reason(e: BaseException) -> str:
    text = first_line(e)
    if "ACCESS_DENIED" in text or "AccessDenied" in text or " 403" in text or "Forbidden" in text:
        return "access denied (check the credentials and the bucket's policy)"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return "no such bucket"
    return scrub(text)


def scrub(text: str) -> str:
    """`text` without the value of any credential variable, and its URIs redacted (defence in depth:
    clients' messages)."""
    text = redact(text)
    for name, value in os.environ.items():
        if value and len(value) >= 8 and re.search(r"SECRET|TOKEN|KEY|PASSWORD|CREDENTIAL|CONNECTION_STRING", name):
            text = text.replace(value, "***")
    return text


def info(uri: str) -> pafs.FileInfo:
    loc = locate(uri)
    with store_errors(uri):
        return loc.fs.get_file_info(loc.path)


def exists(uri: str) -> bool:
    return info(uri).type == pafs.FileType.File


def list_files(uri: str) -> list[tuple[str, int, int]]:
    """(uri, size, mtime_ns) of every object under the prefix `uri`, by key; [] when none."""
    loc = locate(uri)
    selector = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    with store_errors(uri):
        found = loc.fs.get_file_info(selector)
    scheme = uri.split("://", 1)[0]
    return sorted((f"{scheme}://{f.path}", f.size, f.mtime_ns or 0) for f in found if f.type == pafs.FileType.File)


# What a store's listing says of an object's content: S3's and Azure's ETag, GCS's generation.
_VERSION_KEYS = ("ETag", "etag", "generation")


def versions(uris: list[str]) -> dict[str, str]:
    """Objects' content versions (ETag, or GCS's generation), one listing per folder they lie in,
    through the store's fsspec filesystem; {} where that is not installed (the caller then has
    size and mtime alone)."""
    found: dict[str, str] = {}
    by_folder: dict[str, list[str]] = {}
    for uri in uris:
        by_folder.setdefault(parent(uri), []).append(uri)
    for folder, members in by_folder.items():
        loc = locate(folder)
        store = fsspec_store(loc.kind)
        if store is None:
            return {}
        with store_errors(folder):
            store.invalidate_cache(loc.path)
            listed = store.find(loc.path, maxdepth=1, detail=True)
        scheme = folder.split("://", 1)[0]
        tags = {f"{scheme}://{path}": _version(i) for path, i in listed.items()}
        found.update({uri: tags[uri] for uri in members if tags.get(uri)})
    return found


def _version(listed: dict) -> str:
    return next((str(listed[k]) for k in _VERSION_KEYS if listed.get(k)), "")


def glob_files(pattern: str) -> list[tuple[str, int, int]]:
    """Objects matching a glob (`*`, `?`, `[...]`; `*` also crosses `/`), listed from the prefix before it."""
    return [f for f in list_files(glob_base(pattern)) if fnmatch.fnmatchcase(f[0], pattern)]


def glob_base(pattern: str) -> str:
    """The prefix (a whole "folder") that a glob's wildcards start below."""
    return parent(pattern[: GLOB.search(pattern).start()] + "x")


def read_bytes(uri: str) -> bytes | None:
    """An object's bytes, None when it is absent."""
    try:
        with open_input_file(uri) as f:
            return f.read()
    except SpamjobError as e:
        if str(e).endswith(": not found"):
            return None
        raise


def download(uri: str, dest: os.PathLike) -> None:
    """An object into a local file, streamed."""
    with open_input_file(uri) as f, open(dest, "wb") as out:
        while block := f.read(8 << 20):
            out.write(block)


def upload(path: os.PathLike, uri: str) -> None:
    """A local file into an object, streamed (multipart for a large one)."""
    loc = locate(uri)
    with store_errors(uri), open(path, "rb") as f, loc.fs.open_output_stream(loc.path, compression=None) as sink:
        while block := f.read(8 << 20):
            sink.write(block)


def write_bytes(uri: str, data: bytes) -> None:
    loc = locate(uri)
    with store_errors(uri), loc.fs.open_output_stream(loc.path, compression=None) as f:
        f.write(data)


def create(uri: str, data: bytes) -> bool:
    """Write the object only if it is absent (the store's conditional write); False when it was
    there. Without a conditional write (no s3fs/gcsfs) it is written, and True returned."""
    loc = locate(uri)
    store = fsspec_store(loc.kind)
    if store is None:
        write_bytes(uri, data)
        return True
    try:
        with store_errors(uri):
            store.pipe_file(loc.path, data, mode="create")
    except FileExistsError:
        return False
    return True


def conditional(uri: str) -> bool:
    """Whether `create` is exclusive for this store (its fsspec filesystem is installed)."""
    return fsspec_store(locate(uri).kind) is not None


def delete(uris: list[str]) -> None:
    for uri in uris:
        loc = locate(uri)
        try:
            with store_errors(uri):
                loc.fs.delete_file(loc.path)
        except SpamjobError as e:
            if not str(e).endswith(": not found"):
                raise


def open_input_file(path: str):
    """A file with seek/read/readinto: a local path opened, an object read by ranges (`RetryingFile`)."""
    return RetryingFile(path) if is_uri(path) else open(path, "rb")


def open_input_stream(path: str, compression: str | None = None):
    """An Arrow input stream (decompressed as asked) over a local file or an object."""
    return pa.input_stream(open_input_file(path) if is_uri(path) else path, compression=compression)


class RetryingFile(io.RawIOBase):
    """An object read by ranges, each read retried with backoff where the client gives up: the AWS
    SDK writes an error response's body into the caller's buffer, so a 503 to a read smaller than
    that body fails as a non-retryable "Failed to flush response stream" (apache/doris#66557)."""

    def __init__(self, uri: str):
        self.uri, self.loc, self.pos = uri, locate(uri), 0
        self.file = self._call(lambda: self.loc.fs.open_input_file(self.loc.path))
        self.size = self.file.size()

    def _call(self, read):
        for attempt in range(RETRIES):
            try:
                with store_errors(self.uri):
                    return read()
            except SpamjobError as e:
                if not _transient(str(e)[len(self.uri) :]) or attempt == RETRIES - 1:
                    raise
                time.sleep(min(0.05 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all that is left with n < 0) in one ranged request."""
        n = max(self.size - self.pos, 0) if n is None or n < 0 else min(n, max(self.size - self.pos, 0))
        data = self._call(lambda: self.file.read_at(n, self.pos)) if n else b""
        self.pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = min(len(buffer), max(self.size - self.pos, 0))
        data = self._call(lambda: self.file.read_at(n, self.pos)) if n else b""
        memoryview(buffer).cast("B")[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed and hasattr(self, "file"):
            self.file.close()
        super().close()


_TRANSIENT = ("Failed to flush response stream", "SlowDown", "Throttl", "HTTP status 5", "NETWORK_CONNECTION")


def _transient(message: str) -> bool:
    return any(word in message for word in _TRANSIENT)
