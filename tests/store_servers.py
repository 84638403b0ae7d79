"""Store endpoints on 127.0.0.1 for the object-store tests, each a server a user could run too:
S3 from moto's standalone server, Azure Blob from Azurite (Microsoft's emulator, an npm package
that .ci/run installs), GCS from gcp-storage-emulator; and a proxy in front of S3 that answers
some requests with an error (throttling, 5xx, 403). Every server has `bucket(name)` (a URI to
write under), `env()` (what points the store clients at it) and `stop()`."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

# Fake credentials, distinctive so that a test can grep every file the job writes for them.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIASPAMJOBTEST00001",
    "AWS_SECRET_ACCESS_KEY": "spamjob-test-secret-never-in-a-file",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3:
    """moto's S3 server on a free port; `env` points the store clients at it."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}

    def bucket(self, name: str) -> str:
        fs = pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            allow_bucket_creation=True,
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region="us-east-1",
        )
        fs.create_dir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.server.stop()


REPO = Path(__file__).resolve().parents[1]
# Azurite's well-known development account (published in its README): not a secret, but the
# tests check that it lands in no file the job writes, as a real key must not.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_command() -> str | None:
    """Azurite's blob server: where .ci/run installs it (.ci/node), else on PATH."""
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


class Azurite:
    """Azurite's Blob service on a free port, in memory; `env` is a connection string (adlfs reads it)."""

    def __init__(self):
        command = azurite_command()
        if command is None:
            raise RuntimeError("Azurite is not installed: npm install --prefix .ci/node azurite (as .ci/run does)")
        args = ["--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence", "--silent", "--loose"]
        self.process = subprocess.Popen(
            [command, *args, "--skipApiVersionCheck", "--disableTelemetry"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.endpoint = _wait_for_line(self.process, re.compile(r"listens on (http://\S+)"))

    def env(self) -> dict[str, str]:
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )
        return {"AZURE_STORAGE_CONNECTION_STRING": connection}

    def bucket(self, name: str) -> str:
        import adlfs

        adlfs.AzureBlobFileSystem(connection_string=self.env()["AZURE_STORAGE_CONNECTION_STRING"]).mkdir(name)
        return f"abfs://{name}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class GcsEmulator:
    """gcp-storage-emulator (a GCS JSON API server) on a free port, in memory. It ignores
    preconditions (`ifGenerationMatch=0`): a create there is a plain write, as docs/scoring.md
    says for stores without conditional writes."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Its server answers one request at a time: a client that stops reading one download (pyarrow
        # reads ahead) would stall every other request. A real GCS serves them concurrently.
        threaded = (
            "import http.server as h, sys; h.HTTPServer = h.ThreadingHTTPServer; "
            "from gcp_storage_emulator.__main__ import main; sys.exit(main())"
        )
        command = [sys.executable, "-c", threaded, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gcp-storage-emulator did not answer on {self.endpoint}")

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def bucket(self, name: str) -> str:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()
        return f"gs://{name}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _wait_for_line(process: subprocess.Popen, pattern: re.Pattern, timeout: float = 60) -> str:
    """The first group of the first line of the process's output that matches (it keeps running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if m := pattern.search(line):
            threading.Thread(target=process.stdout.read, daemon=True).start()  # drain the rest
            return m.group(1)
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"{process.args[0]} did not start")


DROP, CUT = 0, -1  # FaultProxy's faults beside HTTP statuses: no answer at all; half an answer


class FaultProxy:
    """An HTTP proxy to `target` that answers a request with `fault(method, path, n)`'s status
    (None: forwarded) where n counts requests; `seen` lists (method, path, status). DROP closes the
    connection without an answer (a dropped connection); CUT forwards the request and closes the
    connection halfway through the answer's body (a connection reset mid-download). With
    `signed_only`, an unsigned request (no Authorization header: a client without credentials)
    gets 403, as a private bucket answers it; moto's server alone accepts it."""

    def __init__(self, target: str, fault: Callable[[str, str, int], int | None], signed_only: bool = False):
        self.fault, self.seen, self.count = fault, [], 0
        host, port = target.removeprefix("http://").split(":")
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self._body()
                with lock:
                    proxy.count += 1
                    status = proxy.fault(self.command, self.path, proxy.count)
                if signed_only and "Authorization" not in self.headers and "X-Amz-Signature" not in self.path:
                    status = 403
                if status == DROP:
                    proxy.seen.append((self.command, self.path, status))
                    self.close_connection = True
                    return
                if status is not None and status != CUT:
                    proxy.seen.append((self.command, self.path, status))
                    self._error(status)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                proxy.seen.append((self.command, self.path, reply.status))
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                length = reply.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if status == CUT and len(data) > 1:
                    proxy.seen[-1] = (self.command, self.path, CUT)
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                elif self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().strip().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _error(self, status: int) -> None:
                code = {403: "AccessDenied", 503: "SlowDown", 500: "InternalError"}.get(status, "Error")
                body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def objects(uri: str) -> dict[str, bytes]:
    """Every object under a prefix, by name relative to it (through spamjob's own store client)."""
    from spamjob import stores

    prefix = uri.rstrip("/") + "/"
    return {u[len(prefix) :]: stores.read_bytes(u) for u, _, _ in stores.list_files(prefix)}


def put_folder(folder: Path, uri: str) -> str:
    """Upload a local folder's files under `uri`."""
    from spamjob import stores

    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stores.upload(path, stores.join(uri, path.relative_to(folder).as_posix()))
    return uri


@contextlib.contextmanager
def serving(server):
    """The server, with this process's store clients pointed at it; the environment restored after."""
    saved = {k: os.environ.get(k) for k in server.env()}
    use(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        use({})


def use(env: dict[str, str]) -> None:
    """Point this process's store clients at an endpoint (they are made once per process)."""
    from spamjob import stores

    os.environ.update(env)
    stores.filesystem.cache_clear()
    stores.s3_region.cache_clear()
    stores.fsspec_store.cache_clear()
