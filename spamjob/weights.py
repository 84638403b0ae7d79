"""Fetch and load pretrained GPT-2: Hugging Face safetensors, OpenAI's TensorFlow checkpoint, or random."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch

from spamjob import extras
from spamjob.config import HF_REPOS, OPENAI_NAMES, GPTConfig, canonical_size, config_for, matches_size
from spamjob.digests import damaged, differ, hub_blob_damage, remade
from spamjob.errors import SpamjobError, first_line
from spamjob.fetch import download, is_offline
from spamjob.fsutil import cache_dir, read_json
from spamjob.model import GPTModel, empty_modules, generate_greedy
from spamjob.text import TOKENIZER_FILES, encode, load_tokenizer

HF_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
OPENAI_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
# Buffers some HF checkpoints carry (the causal mask); the model rebuilds them implicitly.
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


# --------------------------------------------------------------------------- fetching


def fetch_hf(
    size: str,
    *,
    cache: str | os.PathLike | None = None,
    local_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> Path:
    """Folder holding config.json + model.safetensors (+ tokenizer) of `size` from the Hub.

    Uses the Hugging Face cache conventions ($HF_HOME / $HF_HUB_CACHE, or `cache`)
    and honours HF_HUB_OFFLINE / SPAMJOB_OFFLINE. With `local_dir` the files are
    copied there as a plain folder that `--weights DIR` accepts.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    size = canonical_size(size)
    repo = HF_REPOS[size]
    path = None
    for name in HF_FILES:
        try:
            get = functools.partial(
                hf_hub_download, repo, name, cache_dir=cache, local_dir=local_dir, endpoint=endpoint
            )
            path = get(local_files_only=is_offline())
            if damage := hub_blob_damage(path):  # checked before use: fetched again once
                if is_offline():
                    raise SpamjobError(f"offline (SPAMJOB_OFFLINE/HF_HUB_OFFLINE set) and {damage}")
                remade(f"{repo}/{name}", damage, "fetching it again from the Hub")
                if damage := hub_blob_damage(path := get(force_download=True)):
                    raise SpamjobError(damage)
        except LocalEntryNotFoundError:
            where = local_dir or cache or "the Hugging Face cache"
            raise SpamjobError(
                f"{size} weights ({repo}/{name}) are not in {where} and the Hub cannot be reached "
                "(offline or no network): "
                f"run `spamjob download --model {size} --source hf` where there is network, or pass --weights DIR"
            ) from None
        except HfHubHTTPError as e:
            raise SpamjobError(f"cannot fetch {repo}/{name} from the Hub: {first_line(e)}") from None
    return Path(path).parent  # type: ignore[arg-type]


def fetch_openai(size: str, dest: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """Folder holding OpenAI's original checkpoint files of `size` (downloaded when missing)."""
    size = canonical_size(size)
    name = OPENAI_NAMES[size]
    dest = Path(dest) if dest is not None else cache_dir() / "openai" / name
    base = os.environ.get("SPAMJOB_OPENAI_URL", OPENAI_URL).rstrip("/")
    for f in OPENAI_FILES:
        download(
            f"{base}/{name}/{f}",
            dest / f,
            sha256=TOKENIZER_FILES.get(f),
            progress=progress,
            fetch_hint=f"run `spamjob download --model {size} --source openai` where there is network",
        )
    return dest


# --------------------------------------------------------------------------- reading


def detect_layout(folder: str | os.PathLike) -> str:
    """'hf' (config.json + model.safetensors) or 'openai' (hparams.json + model.ckpt.*)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SpamjobError(f"weights folder {folder} does not exist")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return "hf"
    if (folder / "hparams.json").is_file() and any(folder.glob("model.ckpt*.index")):
        return "openai"
    raise SpamjobError(
        f"{folder} is neither a Hugging Face folder (config.json + model.safetensors) "
        "nor an OpenAI checkpoint (hparams.json + model.ckpt.*)"
    )


def read_config(folder: str | os.PathLike) -> GPTConfig:
    """Architecture from the checkpoint's own config file."""
    folder = Path(folder)
    if detect_layout(folder) == "hf":
        c = read_json(folder / "config.json")
        if c.get("model_type", "gpt2") != "gpt2":
            raise SpamjobError(f"{folder}/config.json describes a {c['model_type']!r} model, not gpt2")
        act = c.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise SpamjobError(f"{folder}/config.json uses activation {act!r}; GPT-2 uses tanh-approximated GELU")
        keys = {
            "vocab_size": "vocab_size",
            "context_length": "n_positions",
            "emb_dim": "n_embd",
            "n_heads": "n_head",
            "n_layers": "n_layer",
        }
        c.setdefault("n_positions", c.get("n_ctx"))
        missing = [v for v in keys.values() if c.get(v) is None]
        if missing:
            raise SpamjobError(f"{folder}/config.json lacks {', '.join(missing)}")
        return GPTConfig(ln_eps=float(c.get("layer_norm_epsilon", 1e-5)), **{k: int(c[v]) for k, v in keys.items()})
    h = read_json(folder / "hparams.json")
    keys = {
        "vocab_size": "n_vocab",
        "context_length": "n_ctx",
        "emb_dim": "n_embd",
        "n_heads": "n_head",
        "n_layers": "n_layer",
    }
    missing = [v for v in keys.values() if v not in h]
    if missing:
        raise SpamjobError(f"{folder}/hparams.json lacks {', '.join(missing)}")
    return GPTConfig(**{k: int(h[v]) for k, v in keys.items()})


def read_hf_state(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors of model.safetensors with HF GPT-2 names, `transformer.` prefix removed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        raw = load_file(folder / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise SpamjobError(f"cannot read {folder / 'model.safetensors'}: {e}") from None
    return {k.removeprefix("transformer."): v for k, v in raw.items()}


def read_openai_state(folder: Path) -> dict[str, torch.Tensor]:
    """Variables of OpenAI's TF checkpoint renamed to HF GPT-2 names (`model/h3/attn/c_attn/w` ->
    `h.3.attn.c_attn.weight`)."""
    extras.require("tf", f"{folder} is an OpenAI TensorFlow checkpoint; reading it", " (or use --weights hf)")
    tf = _import_tensorflow()
    ckpt = tf.train.latest_checkpoint(str(folder))
    if ckpt is None or not Path(ckpt + ".index").exists():
        ckpt = str(next(folder.glob("model.ckpt*.index"))).removesuffix(".index")
    try:
        reader = tf.train.load_checkpoint(ckpt)
        names = reader.get_variable_to_shape_map()
        state = {}
        for name in names:
            parts = name.removeprefix("model/").split("/")
            parts = [f"h.{p[1:]}" if re.fullmatch(r"h\d+", p) else p for p in parts]
            parts[-1] = {"g": "weight", "w": "weight", "b": "bias"}.get(parts[-1], parts[-1])
            key = ".".join(parts)
            if key in ("wte", "wpe"):
                key += ".weight"
            arr = reader.get_tensor(name)
            if arr.ndim == 3 and arr.shape[0] == 1:  # conv1d weights stored [1, in, out]
                arr = arr[0]
            state[key] = torch.from_numpy(arr.copy())
    except (tf.errors.OpError, ValueError) as e:
        raise SpamjobError(f"cannot read the TensorFlow checkpoint {ckpt}: {first_line(e)}") from None
    return state


def _import_tensorflow():
    """Import TensorFlow without its start-up log lines on stderr (C++ logging ignores Python)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf


def to_spamjob_state(hf: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """HF/OpenAI GPT-2 tensors -> GPTModel state dict.

    Linear weights are stored (in, out) and transposed here; `c_attn` fuses q|k|v
    along its last axis and is split into W_q, W_k, W_v. The LM head is `lm_head`
    when present, else tied to `wte`.
    """
    d = cfg.emb_dim
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in hf:
            raise SpamjobError(f"checkpoint lacks tensor {key!r} (has {len(hf)} tensors, e.g. {sorted(hf)[:3]})")
        used.add(key)
        return hf[key].float()

    out = {"token_emb.weight": take("wte.weight"), "pos_emb.weight": take("wpe.weight")}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"transformer_blocks.{i}."
        for w, t in zip(take(h + "attn.c_attn.weight").split(d, dim=1), ("W_q", "W_k", "W_v")):
            out[f"{b}attention.{t}.weight"] = w.T.contiguous()
        for v, t in zip(take(h + "attn.c_attn.bias").split(d), ("W_q", "W_k", "W_v")):
            out[f"{b}attention.{t}.bias"] = v.contiguous()
        pairs = {"attn.c_proj": "attention.out_proj", "mlp.c_fc": "ffn.layers.0", "mlp.c_proj": "ffn.layers.2"}
        for src, dst in pairs.items():
            out[f"{b}{dst}.weight"] = take(f"{h}{src}.weight").T.contiguous()
            out[f"{b}{dst}.bias"] = take(f"{h}{src}.bias")
        for src, dst in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[f"{b}{dst}.scale"] = take(f"{h}{src}.weight")
            out[f"{b}{dst}.shift"] = take(f"{h}{src}.bias")
    out["final_norm.scale"] = take("ln_f.weight")
    out["final_norm.shift"] = take("ln_f.bias")
    out["out_head.weight"] = (take("lm_head.weight") if "lm_head.weight" in hf else out["token_emb.weight"]).clone()
    extra = [k for k in hf if k not in used and not _IGNORED.match(k)]
    if extra:
        raise SpamjobError(f"checkpoint has tensors GPT-2 does not: {', '.join(sorted(extra)[:5])}")
    return out


def load_folder(folder: str | os.PathLike) -> GPTModel:
    """GPTModel with the weights of a local folder in either layout, architecture from its config."""
    folder = Path(folder)
    cfg = read_config(folder)
    raw = read_hf_state(folder) if detect_layout(folder) == "hf" else read_openai_state(folder)
    state = to_spamjob_state(raw, cfg)
    with empty_modules():  # no random init of weights that are overwritten next
        model = GPTModel(cfg)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise SpamjobError(f"weights in {folder} do not fit {cfg.shape()}: {str(e).splitlines()[-1].strip()}") from None
    return model


# --------------------------------------------------------------------------- one entry point


def hf_bundle_dir(size: str) -> Path:
    """Plain HF-layout folder of `size` inside the spamjob cache (what `download --all` fills)."""
    return cache_dir() / "hf" / canonical_size(size)


def resolve_weights(weights: str, size: str | None = None, *, cache: str | os.PathLike | None = None) -> Path | None:
    """Local folder behind a `--weights` value (hf|openai|DIR), fetching if needed; None for random.

    `hf` looks first in the spamjob cache (`$SPAMJOB_CACHE/hf/<size>`, an air-gapped
    bundle), then in the Hugging Face cache, then on the Hub.
    """
    if weights == "random":
        return None
    if weights == "hf":
        bundled = hf_bundle_dir(size or "gpt2-small")
        if cache is None and (bundled / "config.json").is_file() and (bundled / "model.safetensors").is_file():
            return _checked_bundle(bundled, size or "gpt2-small")
        return fetch_hf(size or "gpt2-small", cache=cache)
    if weights == "openai":
        size = canonical_size(size or "gpt2-small")
        return fetch_openai(size, None if cache is None else Path(cache) / OPENAI_NAMES[size])
    folder = Path(weights).expanduser()
    if not folder.exists():
        raise SpamjobError(f"--weights {weights!r} is neither hf, openai, random nor an existing folder")
    return folder


def _checked_bundle(folder: Path, size: str) -> Path:
    """The weights of a `spamjob download --all` bundle, checked against the sha256 its bundle.json
    recorded; damaged files fetched again once (offline: one error line)."""
    root = cache_dir()
    listed = read_json(root / "bundle.json").get("files", {}) if (root / "bundle.json").is_file() else {}
    prefix = folder.relative_to(root).as_posix() + "/"
    bad = damaged(root, {name: h for name, h in listed.items() if name.startswith(prefix)})
    if not bad:
        return folder
    why = differ(bad, "bundle.json")
    if is_offline():
        raise SpamjobError(f"offline (SPAMJOB_OFFLINE/HF_HUB_OFFLINE set) and in {root}, {why}: copy the bundle again")
    remade(str(folder), why, "fetching those files again from the Hub")
    for name in bad:
        (root / name).unlink(missing_ok=True)
    fetch_hf(size, local_dir=folder)
    if bad := damaged(root, {name: listed[name] for name in bad}):
        raise SpamjobError(f"{', '.join(bad)} still differ from {root / 'bundle.json'} after a fresh download")
    return folder


def load_gpt(
    weights: str = "hf",
    size: str | None = None,
    *,
    n_layers: int | None = None,
    emb_dim: int | None = None,
    n_heads: int | None = None,
    context_length: int | None = None,
    seed: int = 123,
    cache: str | os.PathLike | None = None,
) -> tuple[GPTModel, Path | None]:
    """Build GPT-2 from `--weights` and `--model`; returns the model and the weights folder used.

    Custom dimensions apply only to random weights; a `size` that disagrees with a
    checkpoint's own config is an error (the checkpoint's config decides).
    """
    custom = {"n_layers": n_layers, "emb_dim": emb_dim, "n_heads": n_heads, "context_length": context_length}
    if weights == "random":
        cfg = config_for(size or "gpt2-small", **custom)
        torch.manual_seed(seed)
        return GPTModel(cfg), None
    given = [f"--{k.replace('_', '-')}" for k, v in custom.items() if v is not None]
    if given:
        raise SpamjobError(
            f"{', '.join(given)} only apply to --weights random; pretrained weights fix the architecture"
        )
    folder = resolve_weights(weights, size, cache=cache)
    assert folder is not None
    model = load_folder(folder)
    if size is not None and not matches_size(model.cfg, size):
        raise SpamjobError(
            f"--model {size} ({config_for(size).shape()}) conflicts with the checkpoint in {folder} "
            f"({model.cfg.shape()})"
        )
    return model, folder


def generate(cfg) -> dict:
    """`spamjob generate` (spamjob.command_config.GenerateConfig): the weights loaded, the prompt
    continued greedily; prompt, token ids and text."""
    if not cfg.prompt:
        raise SpamjobError("the prompt is empty")
    model, folder = load_gpt(cfg.weights, cfg.model, seed=cfg.seed, cache=cfg.cache_dir)
    tok = load_tokenizer(cfg.tokenizer, search=[folder] if folder else [])
    ids = encode(tok, [cfg.prompt])[0]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = generate_greedy(model.to(device), torch.tensor([ids], device=device), cfg.max_new_tokens)[0].tolist()
    new = out[len(ids) :]
    return {"prompt": cfg.prompt, "prompt_ids": ids, "new_ids": new, "text": cfg.prompt + tok.decode(new)}
