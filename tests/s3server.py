"""A real S3 endpoint on 127.0.0.1 for the object-store tests: moto's standalone server, and a
proxy in front of it that answers some requests with an error (throttling, 5xx, 403)."""

from __future__ import annotations

import http.client
import http.server
import logging
import os
import threading
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


class FaultProxy:
    """An HTTP proxy to `target` that answers a request with `fault(method, path, n)`'s status
    (None: forwarded) where n counts requests; `seen` lists (method, path, status)."""

    def __init__(self, target: str, fault: Callable[[str, str, int], int | None]):
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
                if status is not None:
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
                if self.command != "HEAD":
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


def use(env: dict[str, str]) -> None:
    """Point this process's store clients at an endpoint (they are made once per process)."""
    from spamjob import stores

    os.environ.update(env)
    stores.filesystem.cache_clear()
    stores.s3_region.cache_clear()
    stores.fsspec_store.cache_clear()
