"""The fine-tuned classifier on disk: model.safetensors + config.json + tokenizer files, no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from spamjob import __version__, digests, stores
from spamjob.config import LABELS, GPTConfig
from spamjob.digests import damaged, differ, remade
from spamjob.errors import SpamjobError, first_line
from spamjob.fsutil import atomic_path, cache_dir, locked, read_json, sha256_file, write_json
from spamjob.model import GPTModel, SpamClassifier, empty_modules
from spamjob.operating import threshold_of
from spamjob.text import PAD_ID, TOKENIZER_FILES, load_tokenizer, tokenizer_files

FORMAT = "spamjob-classifier/1"
TOKENIZER_FOLDER = "tokenizer"  # the classifier's own GPT-2 BPE files, inside its folder


def save_classifier(run_dir: str | os.PathLike, gpt: GPTModel, meta: dict, tokenizer_search: Sequence = ()) -> Path:
    """Write model.safetensors, config.json and tokenizer/ into `run_dir` (each file atomically).

    `meta` holds max_length, pooling, padding, training options, data hashes...; the
    architecture, labels, pad id and version are added here.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in gpt.state_dict().items()}
    with atomic_path(run_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "spamjob": FORMAT})
    files = tokenizer_files(*tokenizer_search)
    if files is not None:
        for src, name in zip(files, TOKENIZER_FILES):
            with atomic_path(run_dir / TOKENIZER_FOLDER / name) as tmp:
                shutil.copyfile(src, tmp)
    config = {
        "format": FORMAT,
        "spamjob_version": __version__,
        "architecture": gpt.cfg.to_dict(),
        "num_classes": gpt.out_head.out_features,
        "labels": list(LABELS),
        "tokenizer": {
            "encoding": "gpt2",
            "pad_id": PAD_ID,
            "folder": TOKENIZER_FOLDER if files else None,
            "sha256": dict(TOKENIZER_FILES),
        },
        **meta,
        "model_sha256": sha256_file(run_dir / "model.safetensors"),
    }
    write_json(run_dir / "config.json", config)
    return run_dir


@dataclass
class Classifier:
    """A loaded classifier: model (None when loaded without its weights), tokenizer and the settings
    it was trained with."""

    model: SpamClassifier | None
    tokenizer: object
    max_length: int
    pooling: str
    labels: list[str]
    config: dict

    @property
    def padding(self) -> str:
        """As trained for `last` pooling (it reads the last padded position); `dynamic` for `last-token`,
        whose result right-padding never changes (causal attention), so the cheaper padding is exact."""
        return self.config.get("padding", "fixed") if self.pooling == "last" else "dynamic"

    @property
    def threshold(self) -> float:
        """Spam when P(spam) > threshold: the operating point chosen in training (0.5 before it existed)."""

        return threshold_of(self.config)


def fetch_classifier(uri: str) -> Path:
    """A classifier folder in an object store, fetched once into the cache (one process at a time),
    its weights verified against the sha256 its config.json records, and reused while that holds:
    every fetched file is checked against the sha256 recorded when it was fetched, and a damaged
    copy fetched again with one `note:` line."""
    config = stores.read_bytes(stores.join(uri, "config.json"))
    if config is None:
        raise SpamjobError(f"{uri} is not a trained classifier (no config.json)")
    want = json.loads(config).get("model_sha256")
    if not want:
        raise SpamjobError(f"{uri}/config.json records no model_sha256: its weights cannot be verified")
    local = cache_dir() / "classifiers" / hashlib.sha1(uri.rstrip("/").encode()).hexdigest()[:16]
    record = local.with_name(local.name + ".json")  # what was fetched, with each file's sha256
    with locked(local.with_suffix(".lock")):
        if (local / "config.json").is_file() and (local / "config.json").read_bytes() == config:
            if (why := _damage(local, record)) is None:
                return local
            remade(f"{uri}'s copy {local}", why, "fetching it again")
        _download_folder(uri, local, want)
        write_json(record, {"uri": uri, "files": digests.record(local, digests.files_below(local))})
    return local


def _damage(local: Path, record: Path) -> str | None:
    """None when every file of a fetched classifier still has the sha256 recorded when it was
    fetched; else what differs."""
    try:
        files = read_json(record)["files"]
    except (SpamjobError, KeyError, TypeError):
        return "the record of what was fetched is missing or damaged"
    return differ(damaged(local, files), "what was fetched")


def _download_folder(uri: str, local: Path, sha256: str) -> None:
    """Every object under `uri` into `local` (replaced whole, by rename, once the weights check out)."""
    tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = uri.rstrip("/") + "/"
    for obj, _, _ in stores.list_files(prefix):
        dest = tmp / obj[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        stores.download(obj, dest)
    got = sha256_file(tmp / "model.safetensors") if (tmp / "model.safetensors").is_file() else None
    if got != sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SpamjobError(f"{uri}/model.safetensors: sha256 {got} is not the {sha256} that config.json records")
    shutil.rmtree(local, ignore_errors=True)
    os.replace(tmp, local)


def local_folder(model: str | os.PathLike) -> Path:
    """The classifier's folder on this machine: a URI's fetched copy in the cache (`fetch_classifier`),
    else the path given."""
    return fetch_classifier(str(model)) if stores.is_uri(str(model)) else Path(model)


def tokenizer_folder(run_dir: str | os.PathLike) -> Path | None:
    """Where the classifier in the local folder `run_dir` keeps its tokenizer files; None when it
    carries none (then `load_tokenizer(None)` finds GPT-2's in $SPAMJOB_TOKENIZER or the caches)."""
    folder = Path(run_dir) / TOKENIZER_FOLDER
    return folder if folder.is_dir() else None


def load_classifier(run_dir: str | os.PathLike, device: str | torch.device = "cpu", weights: bool = True) -> Classifier:
    """Load a classifier written by `save_classifier` (a local folder or a URI: `fetch_classifier`);
    needs no base weights. Without `weights`, its settings and tokenizer only (`model` is None: for
    a runtime that runs the classifier's ONNX graph instead)."""
    run_dir = local_folder(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise SpamjobError(f"{run_dir} is not a trained classifier (needs config.json and model.safetensors)")
    cfg = read_json(run_dir / "config.json")
    if cfg.get("format") != FORMAT:
        raise SpamjobError(f"{run_dir}/config.json is not a {FORMAT} config (format {cfg.get('format')!r})")
    tokenizer = load_tokenizer(tokenizer_folder(run_dir))
    model = _load_model(run_dir, cfg, device) if weights else None
    return Classifier(model, tokenizer, int(cfg["max_length"]), cfg["pooling"], list(cfg["labels"]), cfg)


def _load_model(run_dir: Path, cfg: dict, device: str | torch.device) -> SpamClassifier:
    from safetensors.torch import load_file

    arch = GPTConfig.from_dict(cfg["architecture"])
    with empty_modules():
        gpt = GPTModel(arch)
        gpt.out_head = torch.nn.Linear(arch.emb_dim, cfg["num_classes"])
    try:
        gpt.load_state_dict(load_file(run_dir / "model.safetensors", device=str(device)), strict=True, assign=True)
    except Exception as e:  # safetensors or shape errors: a damaged or foreign file
        raise SpamjobError(f"cannot load {run_dir}/model.safetensors: {first_line(e)}") from None
    t = temperature(cfg)
    if t != 1.0:  # calibrated: softmax(logits / T) is the head's weights and bias over T
        with torch.no_grad():
            gpt.out_head.weight.div_(t)
            gpt.out_head.bias.div_(t)
    return SpamClassifier(gpt, cfg["pooling"]).eval()


def temperature(config: dict) -> float:
    """The temperature a classifier's probabilities are calibrated with (1.0: none; spamjob.calibration)."""
    return float((config.get("calibration") or {}).get("temperature") or 1.0)
