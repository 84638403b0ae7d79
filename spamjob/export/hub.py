"""`spamjob push RUN_DIR REPO_ID`: a classifier on the Hugging Face Hub.

The run's transformers export (`spamjob export --format hf`, model card included) is written
to a temporary folder and uploaded with huggingface_hub (`create_repo`, then `upload_folder`:
one commit). The token is huggingface_hub's own lookup (`HF_TOKEN`, else the saved
`hf auth login`), the address `HF_ENDPOINT` (default huggingface.co); offline runs refuse.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from spamjob import __version__
from spamjob.errors import SpamjobError
from spamjob.export.hf import export_hf
from spamjob.fetch import is_offline
from spamjob.fsutil import read_json


@dataclass(frozen=True)
class Pushed:
    repo_url: str
    commit_url: str
    files: list[str]


def push(run_dir: str | os.PathLike, repo_id: str, private: bool = False) -> Pushed:
    """Upload the hf export of `run_dir` to the model repository `repo_id` (created if missing)."""

    if is_offline():
        raise SpamjobError(
            "spamjob push uploads to the Hugging Face Hub: not possible offline "
            "(--offline, SPAMJOB_OFFLINE or HF_HUB_OFFLINE is set)"
        )
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise SpamjobError(f"REPO_ID must be NAME or OWNER/NAME, got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="spamjob-push-") as tmp:
        folder = export_hf(run_dir, Path(tmp) / "hf")
        files = sorted(p.name for p in folder.iterdir())
        sha = (read_json(folder / "config.json")["spamjob"]["model_sha256"] or "")[:12]
        repo_url, commit_url = _upload(folder, repo_id, private, f"spamjob {__version__}: classifier {sha}")
    return Pushed(repo_url, commit_url, files)


def _upload(folder: Path, repo_id: str, private: bool, message: str) -> tuple[str, str]:
    """create_repo + upload_folder; the Hub's refusals and network failures as one line."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        repo = api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = " (set HF_TOKEN to a write token, or run `hf auth login`)" if status in (401, 403) else ""
        raise SpamjobError(f"the Hub at {api.endpoint} refused: {_first_line(e)}{hint}") from None
    except Exception as e:  # network failures (no route, refused, timeouts) from the HTTP client
        raise SpamjobError(f"cannot reach the Hub at {api.endpoint}: {type(e).__name__}: {_first_line(e)}") from None
    return str(repo), commit.commit_url


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
