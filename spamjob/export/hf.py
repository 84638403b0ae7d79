"""A trained classifier in Hugging Face transformers' layout (`spamjob export --format hf`):
a folder that `AutoModelForSequenceClassification.from_pretrained` and
`pipeline("text-classification", ...)` load without spamjob, giving spamjob's probabilities.

How spamjob's classifier maps onto `GPT2ForSequenceClassification`:
- the blocks: the same GPT-2 weights, Linear layers stored (in, out) as transformers' Conv1D,
  query/key/value fused into `c_attn`;
- pooling: transformers reads the last token that is not `pad_token_id` (50256), which is
  spamjob's `last-token` pooling. `last` pooling (the reference recipe: the last position of
  a row padded to max_length) has no such expression and is refused;
- the head: transformers' `score` layer has no bias. The bias b is moved into the final
  layer norm's shift as a vector d with W d = b (the least-norm solution), which changes the
  logits by exactly b, since that norm feeds only the head;
- text: `split_special_tokens` makes `<|endoftext|>` in a message plain text, as spamjob's
  tokenizer reads it (and keeps it from being taken for padding); `model_max_length` is the
  classifier's max_length, so `truncation=True` cuts messages where spamjob does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from spamjob.artifact import load_classifier, tokenizer_folder
from spamjob.errors import SpamjobError
from spamjob.fsutil import atomic_path, write_json
from spamjob.text import PAD_ID, tokenizer_files

SPECIAL = "<|endoftext|>"


def export_hf(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write config.json, model.safetensors and the tokenizer files into `out`."""
    from safetensors.torch import save_file

    clf = load_classifier(run_dir)
    if clf.pooling != "last-token":
        raise SpamjobError(
            f"{run_dir} was trained with `last` pooling (a row padded to max_length, the reference "
            "recipe); transformers pools the last non-pad token, so it cannot reproduce it: train "
            "with --pooling last-token (the default) to export"
        )
    out = Path(out)
    state = hf_state(clf.model.gpt.state_dict(), clf.model.gpt.cfg.n_layers)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(out / "config.json", hf_config(clf))
    _tokenizer(clf, Path(run_dir), out)
    if (Path(run_dir) / "README.md").is_file():  # the model card, for the Hub
        with atomic_path(out / "README.md") as tmp:
            shutil.copyfile(Path(run_dir) / "README.md", tmp)
    return out


def hf_state(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """spamjob's GPT-2 + head -> GPT2ForSequenceClassification's tensors (the head's bias folded)."""
    linear = {"attention.out_proj": "attn.c_proj", "ffn.layers.0": "mlp.c_fc", "ffn.layers.2": "mlp.c_proj"}
    new = {
        "transformer.wte.weight": sd["token_emb.weight"],
        "transformer.wpe.weight": sd["pos_emb.weight"],
        "transformer.ln_f.weight": sd["final_norm.scale"],
        "transformer.ln_f.bias": sd["final_norm.shift"] + _bias_shift(sd["out_head.weight"], sd["out_head.bias"]),
        "score.weight": sd["out_head.weight"],
    }
    for i in range(n_layers):
        b, h = f"transformer_blocks.{i}.", f"transformer.h.{i}."
        qkv = ("W_q", "W_k", "W_v")
        new[h + "attn.c_attn.weight"] = torch.cat([sd[b + f"attention.{t}.weight"] for t in qkv]).T
        new[h + "attn.c_attn.bias"] = torch.cat(
            [sd.get(b + f"attention.{t}.bias", torch.zeros(sd[b + f"attention.{t}.weight"].shape[0])) for t in qkv]
        )
        for src, dst in linear.items():
            new[h + dst + ".weight"] = sd[b + src + ".weight"].T
            new[h + dst + ".bias"] = sd[b + src + ".bias"]
        for src, dst in (("norm1", "ln_1"), ("norm2", "ln_2")):
            new[h + dst + ".weight"], new[h + dst + ".bias"] = sd[b + src + ".scale"], sd[b + src + ".shift"]
    return {k: v.detach().to(torch.float32).contiguous() for k, v in new.items()}


def _bias_shift(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """d with weight @ d == bias (least norm), in float64 for accuracy."""
    w, b = weight.double(), bias.double()
    return (w.T @ torch.linalg.solve(w @ w.T, b)).float()


def hf_config(clf) -> dict:
    """transformers' GPT2Config for the classifier, as JSON."""
    c = clf.model.gpt.cfg
    labels = dict(enumerate(clf.labels))
    return {
        "architectures": ["GPT2ForSequenceClassification"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context_length,
        "n_embd": c.emb_dim,
        "n_layer": c.n_layers,
        "n_head": c.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "num_labels": len(labels),
        "id2label": {str(i): name for i, name in labels.items()},
        "label2id": {name: i for i, name in labels.items()},
        "bos_token_id": PAD_ID,
        "eos_token_id": PAD_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": "float32",
        "spamjob": {
            "max_length": clf.max_length,
            "pooling": clf.pooling,
            "model_sha256": clf.config.get("model_sha256"),
            "spam_threshold": clf.threshold,
            # the score head's weights are divided by the temperature: calibrated probabilities
            "calibration": clf.config.get("calibration") or {"method": "none", "temperature": 1.0},
        },
    }  # pipelines take the argmax; spam when P(spam) > this


def _tokenizer(clf, run_dir: Path, out: Path) -> None:
    """vocab.json and merges.txt (GPT-2's encoder.json and vocab.bpe) and the settings above."""
    files = tokenizer_files(tokenizer_folder(run_dir))  # the run's own copy, else the caches
    if files is None:
        raise SpamjobError(f"{run_dir} has no tokenizer files and none are cached: run `spamjob download --tokenizer`")
    for src, name in zip(files, ("vocab.json", "merges.txt")):
        with atomic_path(out / name) as tmp:
            shutil.copyfile(src, tmp)
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "GPT2Tokenizer",
            "model_max_length": clf.max_length,
            "padding_side": "right",
            "truncation_side": "right",
            "add_prefix_space": False,
            "split_special_tokens": True,
            "bos_token": SPECIAL,
            "eos_token": SPECIAL,
            "unk_token": SPECIAL,
            "pad_token": SPECIAL,
        },
    )
    write_json(
        out / "special_tokens_map.json", {k: SPECIAL for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    )
