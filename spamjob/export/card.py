"""The model card (README.md) every training run writes beside its classifier: metadata the
Hugging Face Hub reads, then how the model was made, what it scored and where it falls short."""

from __future__ import annotations

import json
from pathlib import Path

from spamjob.fsutil import atomic_path

HUB_NAMES = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
DATASET = "ucirvine/sms_spam"  # the UCI SMS Spam Collection on the Hub


def write_card(run_dir: str | Path, config: dict, metrics: dict) -> Path:
    """README.md in `run_dir` from the artifact's config.json and the run's metrics.json."""
    path = Path(run_dir) / "README.md"
    with atomic_path(path) as tmp:
        tmp.write_text(_front_matter(config, metrics) + _body(config, metrics))
    return path


def _base_model(config: dict) -> str | None:
    t = config["training"]
    return None if t["weights"] == "random" else HUB_NAMES.get(t["model"] or "gpt2-small")


def _front_matter(config: dict, metrics: dict) -> str:
    """YAML (written as JSON values, which YAML reads) for the Hub's model page."""
    meta = {
        "language": ["en"],
        "pipeline_tag": "text-classification",
        "library_name": "transformers",
        "tags": ["spam-detection", "sms", "gpt2", "spamjob"],
        "datasets": [DATASET],
        "metrics": ["accuracy"],
    }
    if _base_model(config):
        meta["base_model"] = _base_model(config)
    results = [
        {
            "task": {"type": "text-classification"},
            "dataset": {"name": "SMS Spam Collection", "type": DATASET, "split": "test"},
            "metrics": [{"type": "accuracy", "value": round(metrics["test"]["accuracy"], 4)}],
        }
    ]
    meta["model-index"] = [{"name": "spamjob GPT-2 spam classifier", "results": results}]
    return "---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in meta.items()) + "---\n\n"


def _operating_point(op: dict) -> str:
    """The threshold, its rule and its test figures beside the argmax's."""

    def figures(m: dict) -> str:
        return (
            f"precision {m['precision'] * 100:.2f}%, recall {m['recall'] * 100:.2f}%, "
            f"accuracy {m['accuracy'] * 100:.2f}%"
        )

    how = (
        f"picked on the validation split by the rule `{op['rule']}`"
        if op["rule_met"]
        else f"no threshold met the rule `{op['rule']}` on the validation split, so the argmax is kept"
    )
    return (
        f"Operating point: spam when P(spam) > {op['threshold']:.4g} ({how}; `spamjob score --threshold` "
        f"overrides it). On test: {figures(op['test'])}; at 0.5 (argmax): {figures(op['test_at_0.5'])}."
    )


def _body(config: dict, metrics: dict) -> str:
    t, arch = config["training"], config["architecture"]
    random = t["weights"] == "random"
    base = _base_model(config) or "GPT-2 architecture with random weights"
    splits = "\n".join(
        f"| {name} | {metrics[name]['examples']:,} | {metrics[name]['accuracy'] * 100:.2f}% |"
        for name in ("train", "validation", "test")
    )
    data = "\n".join(f"- `{name}`: sha256 `{digest}`" for name, digest in config["data"]["sha256"].items())
    warning = (
        "\n**Random weights.** This run started from random weights, not pretrained GPT-2: its accuracy "
        "says how the pipeline works, not how well a pretrained model classifies.\n"
        if random
        else ""
    )
    return f"""# GPT-2 spam classifier (spamjob)
{warning}
Fine-tuned from {base} ({arch["n_layers"]} layers, {arch["emb_dim"]} dims, {arch["n_heads"]} heads) to label SMS
messages ham or spam, by spamjob `{config["spamjob_version"]}`.

## Training

- recipe: preset `{t["preset"]}`, trainable `{t["trainable"]}`, pooling `{config["pooling"]}`, padding
  `{config["padding"]}`, {t["epochs"]} epoch(s), batch {t["batch_size"]}, lr {t["lr"]}, weight decay
  {t["weight_decay"]}, seed {t["seed"]}
- max_length {config["max_length"]} tokens (longer messages are truncated)
- {metrics["num_processes"]} process(es) on {metrics["device"]}, mixed precision `{metrics["mixed_precision"]}`;
  {metrics["train_time_s"]:.1f} s of training, {metrics["train_examples_per_s"]:,.1f} examples/s
- data: splits made by `spamjob prepare` from the SMS Spam Collection
  (source sha256 `{config["data"].get("source_sha256")}`)
{data}

## Results

| split | messages | accuracy |
|---|---|---|
{splits}

{_operating_point(metrics["operating_point"])}

## Use

`spamjob classify --model RUN_DIR "text"`, `spamjob score` for files, `spamjob export RUN_DIR
--format hf` for a transformers folder (tokenize with `truncation=True`; a pipeline takes the
argmax, the threshold above is `config.json`'s `spamjob.spam_threshold`), `--format onnx` for
ONNX Runtime, or `spamjob push RUN_DIR OWNER/NAME` for the Hub.

## Limitations

English SMS messages from one 2012 collection: other languages, channels (email, chat) and
later spam campaigns are outside what it saw. The balanced training split has as much spam
as ham, unlike real traffic: expect more false positives on ham than the test accuracy
suggests, and choose a threshold for your cost of errors.
"""
