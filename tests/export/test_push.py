"""`spamjob push`: the hf export and model card uploaded with huggingface_hub, against a local
stand-in for the Hub's API on 127.0.0.1 (repos/create, validate-yaml, preupload, commit)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each push is a fresh `spamjob` process (~4 s): end-to-end checks

TOKEN = "hf_standin_write_token"


class StandIn(BaseHTTPRequestHandler):
    """Answers what huggingface_hub's create_repo and upload_folder ask, every file as a regular
    (non-LFS) upload; records the requests, the repositories and the committed files."""

    hub: dict  # set on the subclass per server

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.hub["requests"].append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"error": "Invalid username or password."})
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "repos", "create"]:
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}"
            self.hub["repos"][repo] = payload
            return self._answer(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
        if parts[:2] == ["api", "validate-yaml"]:
            return self._answer(200, {"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            return self._answer(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if parts[:2] == ["api", "models"] and parts[4] == "commit":
            repo = f"{parts[2]}/{parts[3]}"
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            self.hub["commits"].append({"repo": repo, "summary": lines[0]["value"]["summary"], "files": files})
            return self._answer(
                200,
                {
                    "commitUrl": f"http://{self.headers['Host']}/{repo}/commit/c0ffee",
                    "commitOid": "c0ffee" * 6 + "c0ff",
                    "pullRequestUrl": None,
                },
            )
        return self._answer(404, {"error": f"no stand-in for {self.path}"})

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def hub():
    state = {"requests": [], "repos": {}, "commits": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (StandIn,), {"hub": state}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["endpoint"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def push(
    hub: dict, tmp_path: Path, *args: str, token: str | None = TOKEN, xet: bool = False, offline: bool = False
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        {
            "HF_ENDPOINT": hub["endpoint"],
            "HF_HOME": str(tmp_path / "hf-home"),
            "NO_PROXY": "127.0.0.1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
    )
    if token:
        env["HF_TOKEN"] = token
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    offline_flag = ["--offline"] if offline else []
    return subprocess.run(
        [sys.executable, "-m", "spamjob.cli", *offline_flag, "push", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("xet", [False, True], ids=["single-commit", "upload-pipeline"])
def test_push_uploads_the_export_and_the_card(classifier_dir, hub, tmp_path, xet):
    from spamjob.export.hf import export_hf

    r = push(hub, tmp_path, str(classifier_dir), "someone/spam-filter", "--private", xet=xet)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"pushed {classifier_dir} to {hub['endpoint']}/someone/spam-filter" in r.stdout
    assert hub["repos"]["someone/spam-filter"]["visibility"] == "private"
    (commit,) = hub["commits"]
    local = export_hf(classifier_dir, tmp_path / "local")
    assert commit["files"] == {p.name: p.read_bytes() for p in local.iterdir()}  # byte for byte
    assert {"README.md", "config.json", "model.safetensors", "vocab.json", "merges.txt"} <= set(commit["files"])
    assert commit["summary"].startswith("spamjob ") and "classifier " in commit["summary"]


def test_public_by_default_and_token_from_hf_token(classifier_dir, hub, tmp_path):
    r = push(hub, tmp_path, str(classifier_dir), "someone/spam-filter")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "visibility" not in hub["repos"]["someone/spam-filter"]
    assert {auth for _, auth in hub["requests"]} == {f"Bearer {TOKEN}"}


def test_refusals_are_one_line(classifier_dir, hub, tmp_path):
    r = push(hub, tmp_path, str(classifier_dir), "someone/spam-filter", token=None)
    assert r.returncode == 1 and "refused" in r.stderr and "HF_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0 and not hub["commits"]
    hub["requests"].clear()
    r = push(hub, tmp_path, str(classifier_dir), "someone/spam-filter", offline=True)
    assert r.returncode == 1 and "not possible offline" in r.stderr and not hub["requests"]
    r = push(hub, tmp_path, str(classifier_dir), "a/b/c")
    assert r.returncode == 1 and "REPO_ID must be NAME or OWNER/NAME" in r.stderr
    hub["endpoint"] = "http://127.0.0.1:9"  # nothing listens there
    r = push(hub, tmp_path, str(classifier_dir), "someone/spam-filter")
    assert (
        r.returncode == 1 and "cannot reach the Hub at http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr
    )
