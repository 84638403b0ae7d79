"""Fine-tuning on an Accelerator: main() builds the run in named steps -> fit() -> evaluate() ->
the classifier artifact.

One code path for the CPU, one GPU and many processes. Each process owns a fixed shard
of every split (rank r takes rows r, r+W, ...), so the frozen-prefix cache of a process
covers exactly its shard, and every reported accuracy is an integer count summed over
processes: each example is counted once whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from spamjob import __version__
from spamjob.batches import PrefixCache, Shard, make_loader, to_device
from spamjob.checkpoints import TrainState, check_resume, save_checkpoint, save_trainable_only, start_state
from spamjob.config import TrainConfig, resolve_mixed_precision
from spamjob.console import say
from spamjob.data import SPLITS
from spamjob.errors import SpamjobError
from spamjob.export.card import write_card
from spamjob.faults import kill_point
from spamjob.fsutil import atomic_path, read_json, sha256_file, write_json
from spamjob.model import GPTModel, SpamClassifier, first_trainable_block, freeze, replace_head
from spamjob.operating import ARGMAX, choose, counts_at, curve, parse_rule, thin
from spamjob.plots import PlotProcess, plot_process
from spamjob.text import encode, load_tokenizer
from spamjob.threads import apply_threads


@dataclass
class Model:
    """The GPT-2 being fine-tuned, its tokenizer, and where they came from."""

    gpt: GPTModel
    lora: object | None  # the peft wrapper with --trainable lora
    weights_dir: Path | None
    tokenizer: object
    tok_search: list  # folders the tokenizer files were looked up in (copied into the artifact)


@dataclass
class Run:
    """What `fit`, `evaluate` and the artifact writer use."""

    cfg: TrainConfig
    accelerator: object
    out: Path
    data_dir: Path
    model: Model
    max_length: int
    shards: dict[str, Shard]
    classifier: torch.nn.Module  # prepared (DDP-wrapped with several processes)
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader


def main(cfg: TrainConfig) -> dict:
    """Fine-tune, evaluate on the full splits, write the classifier artifact; returns metrics."""
    wall0 = time.perf_counter()
    cfg = cfg.resolved()
    accelerator = _accelerator(cfg)
    threads = apply_threads(cfg.threads)
    out = Path(cfg.out)
    check_resume(cfg, out)
    data_dir = _data_dir(cfg, accelerator)
    frames = load_splits(data_dir)
    model = build_model(cfg, accelerator.device)
    ids = {name: encode(model.tokenizer, frames[name]["Text"].astype(str).tolist()) for name in SPLITS}
    max_length = _max_length(cfg, ids["train"], model.gpt.cfg.context_length)
    shards = make_shards(frames, ids, max_length, accelerator.process_index, accelerator.num_processes)
    phases = {"setup_s": time.perf_counter() - wall0}
    cache_info = _maybe_cache(model.gpt, shards, cfg, max_length, accelerator)
    phases["cache_s"] = cache_info["build_s"]

    # The plots' child process starts here: its matplotlib import overlaps the optimizer's
    # torch._dynamo import and training (separate processes, no shared GIL).
    with plot_process(accelerator.is_main_process) as plots:
        t0 = time.perf_counter()
        classifier, optimizer = build_optimizer(model.gpt, cfg, accelerator)
        train_loader, val_loader = make_loaders(shards, cfg, max_length, accelerator.num_processes)
        phases["optimizer_s"] = time.perf_counter() - t0  # torch.optim's first use imports torch._dynamo (~1 s)
        run = Run(
            cfg, accelerator, out, data_dir, model, max_length, shards, classifier, optimizer, train_loader, val_loader
        )
        state = fit(run, start_state(cfg, accelerator, out))
        phases["train_s"] = state.train_time_s
        t0 = time.perf_counter()
        final = evaluate(run)
        phases["final_eval_s"] = time.perf_counter() - t0
        metrics = {**_metrics(run, state, final, cache_info, phases), "threads": threads}
        if accelerator.is_main_process:
            _write_artifact(run, state.history, metrics, plots)
            metrics["wall_time_s"] = round(time.perf_counter() - wall0, 3)
            write_json(out / "metrics.json", metrics)
            write_card(out, read_json(out / "config.json"), metrics)
    accelerator.wait_for_everyone()
    metrics["wall_time_s"] = round(time.perf_counter() - wall0, 3)
    accelerator.end_training()
    return metrics


def _accelerator(cfg: TrainConfig):
    from spamjob.processes import accelerator

    gpu = torch.cuda.is_available()
    return accelerator(
        cpu=not gpu,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision, gpu),
        gradient_accumulation_steps=cfg.grad_accum,
    )


def load_splits(data_dir: Path) -> dict[str, pd.DataFrame]:
    """train / validation / test as written by `spamjob prepare`, checked: not empty, labels 0/1."""
    from spamjob.data import load_split

    frames = {}
    for name in SPLITS:
        frames[name] = load_split(data_dir, name)
        if frames[name].empty:
            raise SpamjobError(f"split {name} in {data_dir} is empty")
        bad = ~frames[name]["Label"].isin([0, 1])
        if bad.any():
            raise SpamjobError(f"{data_dir}/{name}: labels must be 0/1, found {frames[name]['Label'][bad].iloc[0]!r}")
    return frames


def build_model(cfg: TrainConfig, device: torch.device) -> Model:
    """GPT-2 from --weights, its tokenizer, the new 2-class head (seeded as the reference does), freezing."""
    from spamjob.weights import load_gpt

    gpt, weights_dir = load_gpt(
        cfg.weights,
        cfg.model,
        n_layers=cfg.n_layers,
        emb_dim=cfg.emb_dim,
        n_heads=cfg.n_heads,
        context_length=cfg.context_length,
        seed=cfg.seed,
        cache=cfg.weights_cache,
    )
    tok_search = [weights_dir] if weights_dir else []
    tokenizer = load_tokenizer(cfg.tokenizer, search=tok_search)
    # The reference's fine-tuning setup: new head right after manual_seed(seed), then freezing.
    replace_head(gpt, 2, seed=cfg.seed)
    lora = _add_lora(gpt, cfg) if cfg.trainable == "lora" else None
    if lora is None:
        freeze(gpt, cfg.trainable)
    return Model(gpt.to(device), lora, weights_dir, tokenizer, tok_search)


def _max_length(cfg: TrainConfig, train_ids: list[list[int]], context_length: int) -> int:
    """--max-length, else the longest training message (the reference); at most the model's context."""
    longest = max(len(s) for s in train_ids)
    max_length = cfg.max_length or longest
    if max_length > context_length:
        raise SpamjobError(
            f"max_length {max_length} (longest training message: {longest} tokens) exceeds the model's context of "
            f"{context_length}; pass --max-length <= {context_length}"
        )
    return max_length


def make_shards(
    frames: dict[str, pd.DataFrame], ids: dict[str, list[list[int]]], max_length: int, rank: int, world: int
) -> dict[str, Shard]:
    """This process's rows of every split (rows rank, rank + world, ...), truncated to max_length."""
    shards = {}
    for name in SPLITS:
        rows = list(range(rank, len(ids[name]), world))
        shards[name] = Shard(
            name,
            [ids[name][i][:max_length] for i in rows],
            torch.tensor(frames[name]["Label"].to_numpy()[rows], dtype=torch.long),
            n_total=len(ids[name]),
            truncated_total=sum(len(s) > max_length for s in ids[name]),
        )
    return shards


def build_optimizer(gpt: GPTModel, cfg: TrainConfig, accelerator) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The classifier module and AdamW over what trains, prepared by accelerate (DDP with several processes)."""
    classifier = SpamClassifier(gpt, cfg.pooling, pooled_only=cfg.compute == "fast")
    torch.manual_seed(cfg.seed)  # the reference seeds again right before training
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    # Reference compute keeps torch's default AdamW kernel (the book's run, bit for bit);
    # fast compute the fused kernel: one call per step instead of ~5 ops per parameter tensor.
    fused = cfg.compute == "fast" and device_supports_fused(accelerator.device)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    classifier, optimizer = accelerator.prepare(classifier, optimizer)
    save_trainable_only(accelerator)
    return classifier, optimizer


def make_loaders(
    shards: dict[str, Shard], cfg: TrainConfig, max_length: int, world: int
) -> tuple[DataLoader, DataLoader]:
    """The training loader (shuffled, drop_last) and the validation loader of the evaluation schedule."""
    # Equal step counts on every process (DDP needs them): each trains on n_train // world rows.
    n_rows = shards["train"].n_total // world
    train_loader = make_loader(shards["train"], cfg.batch_size, cfg.padding, max_length, train=True, n_rows=n_rows)
    if len(train_loader) == 0:
        raise SpamjobError(
            f"{n_rows} training rows per process is less than one batch of {cfg.batch_size}; lower --batch-size"
        )
    return train_loader, make_loader(shards["validation"], cfg.batch_size, cfg.padding, max_length, train=False)


def fit(run: Run, state: TrainState) -> TrainState:
    """The epoch loop from `state` on: the reference's evaluation schedule (its lines printed), a
    checkpoint after every epoch. Returns the final state, whose `history` holds every evaluation."""
    cfg, accelerator = run.cfg, run.accelerator
    state = dataclasses.replace(state, history=list(state.history))
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        _train_epoch(run, state, epoch)
        train_acc, val_acc = _eval_pair(run, cfg.eval_iter, "accuracy")
        state.history.append(
            {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": state.global_step,
                "examples_seen": state.examples_seen,
                "train_acc": train_acc,
                "val_acc": val_acc,
            }
        )
        say(f"Training accuracy: {train_acc * 100:.2f}% | Validation accuracy: {val_acc * 100:.2f}%")
        state.epoch = epoch + 1
        state.train_time_s += time.perf_counter() - t0
        save_checkpoint(accelerator, run.out, state)
        kill_point("SPAMJOB_KILL_AFTER_EPOCH", state.epoch)  # crash tests: resume after a real kill
    return state


def _train_epoch(run: Run, state: TrainState, epoch: int) -> None:
    """One pass over the training loader; evaluation lines every --eval-freq steps. The loss stays on
    the device (no per-step synchronisation) and is read once per --eval-freq steps for the bar."""
    cfg, accelerator = run.cfg, run.accelerator
    world = accelerator.num_processes
    run.classifier.train()
    # tqdm counts steps but never iterates the loader: every extra iterator of a shuffled
    # DataLoader draws from the global RNG and would change the reference's batch order.
    bar = tqdm(
        total=len(run.train_loader),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not accelerator.is_main_process,
        leave=False,
    )
    running = None
    for batch in run.train_loader:
        state.examples_seen += len(batch["labels"]) * world
        loss = train_step(run.classifier, run.optimizer, accelerator, batch)
        running = loss if running is None else running.mul(0.9).add_(loss, alpha=0.1)
        state.global_step += 1
        bar.update()
        if state.global_step % cfg.eval_freq == 0:
            bar.set_postfix(loss=f"{running.item():.3f}", refresh=False)
            train_loss, val_loss = _eval_pair(run, cfg.eval_iter, "loss")
            state.history.append(
                {
                    "kind": "eval",
                    "epoch": epoch + 1,
                    "step": state.global_step,
                    "examples_seen": state.examples_seen,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                }
            )
            say(f"Ep {epoch + 1} (Step {state.global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
    bar.close()


def train_step(classifier: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator, batch: dict) -> torch.Tensor:
    """One optimizer step (or accumulation step) on one batch; the loss, detached, still on the device."""
    device = accelerator.device
    labels = batch.pop("labels").to(device, non_blocking=True)
    with accelerator.accumulate(classifier):
        logits = classifier(**to_device(batch, device))
        loss = F.cross_entropy(logits.float(), labels)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return loss.detach()


def _eval_pair(run: Run, num_batches: int, what: str) -> list[float]:
    """[train, validation] mean batch loss (`loss`) or accuracy over `num_batches` batches of each,
    summed over processes (a sync point)."""
    accelerator = run.accelerator
    model = accelerator.unwrap_model(run.classifier)
    sums = torch.stack(
        [
            evaluate_sums(model, loader, accelerator.device, accelerator.autocast, num_batches)
            for loader in (run.train_loader, run.val_loader)
        ]
    )
    s = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    return (s[:, 0] / s[:, 1] if what == "loss" else s[:, 3] / s[:, 4]).tolist()


def _logits(model: torch.nn.Module, loader: DataLoader, device, autocast, num_batches: int | None = None):
    """(fp32 logits, labels) of (at most num_batches) batches, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            labels = batch.pop("labels").to(device)
            with torch.no_grad(), autocast():
                logits = model(**to_device(batch, device)).float()
            yield logits, labels
    finally:
        model.train(was_training)


def evaluate_sums(
    model: torch.nn.Module,
    loader: DataLoader,
    device,
    autocast,
    num_batches: int | None = None,
    probs: list | None = None,
) -> torch.Tensor:
    """Sums over (at most num_batches) batches: [batch-mean loss, batches, example loss, correct, examples];
    with `probs`, (P(spam), label) tensors of every batch are appended to it."""
    out = torch.zeros(5, dtype=torch.float64, device=device)  # summed on the device: one transfer at the end
    one = torch.ones((), dtype=torch.float64, device=device)
    for logits, labels in _logits(model, loader, device, autocast, num_batches):
        losses = F.cross_entropy(logits, labels, reduction="none").double()
        out += torch.stack(
            [losses.mean(), one, losses.sum(), (logits.argmax(-1) == labels).sum().double(), one * len(labels)]
        )
        if probs is not None:
            probs.append((torch.softmax(logits, dim=-1)[:, 1], labels))
    return out.cpu()


def evaluate(run: Run) -> dict:
    """Accuracy and loss on the full splits (every row of every shard once, sums over processes), and
    the operating point: the threshold run.cfg.threshold_rule picks on validation, applied to test."""
    accelerator = run.accelerator
    model = accelerator.unwrap_model(run.classifier)
    final, probs = {}, {}
    for name in SPLITS:
        shard = run.shards[name]
        # Counts and example-loss sums do not depend on batching; on cached activations the
        # pooled last block is cheap, so larger batches only save per-batch overhead.
        batch_size = run.cfg.batch_size if shard.cache is None else max(run.cfg.batch_size, 64)
        loader = make_loader(shard, batch_size, run.cfg.padding, run.max_length, train=False)
        pairs = [] if name != "train" else None
        s = accelerator.reduce(
            evaluate_sums(model, loader, accelerator.device, accelerator.autocast, probs=pairs).to(accelerator.device),
            "sum",
        ).cpu()
        final[name] = {
            "accuracy": s[3].item() / s[4].item(),
            "loss": s[2].item() / s[4].item(),
            "examples": int(s[4].item()),
            "truncated": shard.truncated_total,
        }
        if pairs is not None:
            probs[name] = _gather_probs(pairs, accelerator)
    final["operating_point"] = operating_point(probs, run.cfg.threshold_rule)
    return final


def _gather_probs(pairs: list, accelerator) -> tuple[np.ndarray, np.ndarray]:
    """(P(spam), label) of every row of a split, from all processes (each row once)."""
    from accelerate.utils import gather_object

    p = torch.cat([a for a, _ in pairs]).double().cpu().numpy() if pairs else np.empty(0)
    y = torch.cat([b for _, b in pairs]).cpu().numpy() if pairs else np.empty(0, dtype=np.int64)
    if accelerator.num_processes > 1:
        parts = gather_object([(p, y)])
        p, y = np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    return p, y


def operating_point(probs: dict[str, tuple[np.ndarray, np.ndarray]], rule: str) -> dict:
    """The threshold `rule` picks on validation, its figures on validation and test (and test at
    0.5, the argmax), and the validation precision/recall curve (thinned for metrics.json)."""
    val_p, val_y = probs["validation"]
    chosen = choose(val_p, val_y, parse_rule(rule))
    if not chosen["rule_met"]:
        say(f"operating point: no threshold meets {chosen['rule']} on the validation split; using 0.5 (argmax)")
    test_p, test_y = probs["test"]
    return {
        **chosen,
        "test": counts_at(test_p, test_y, chosen["threshold"]),
        "test_at_0.5": counts_at(test_p, test_y, ARGMAX),
        "validation_curve": thin(curve(val_p, val_y)) if (val_y == 1).any() else None,
    }


def _metrics(run: Run, state: TrainState, final: dict, cache_info: dict, phases: dict) -> dict:
    """metrics.json: accuracies, counts, speed, the real world size, time per phase."""
    accelerator, cfg = run.accelerator, run.cfg
    return {
        "spamjob_version": __version__,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "preset": cfg.preset,
        **final,
        "epochs": cfg.epochs,
        "steps": state.global_step + 1,
        "examples_seen": state.examples_seen,
        "train_time_s": round(state.train_time_s, 3),
        "train_examples_per_s": round(state.examples_seen / state.train_time_s, 2) if state.train_time_s else None,
        "wall_time_s": None,
        "max_length": run.max_length,
        "prefix_cache": cache_info,
        "phases_s": phases,
    }


def _data_dir(cfg: TrainConfig, accelerator) -> Path:
    """--data as given, or `prepare` into OUT/data on the main process while the others wait."""
    if cfg.data is not None:
        d = Path(cfg.data)
        if not d.is_dir():
            raise SpamjobError(f"--data {d} is not a folder; run `spamjob prepare --out {d}` first")
        return d
    from spamjob.data import prepare

    d = Path(cfg.out) / "data"
    if accelerator.is_main_process and not (d / "prepare.json").is_file():
        result = prepare(cfg.source, d, seed=cfg.seed)
        say(result.summary())
    accelerator.wait_for_everyone()
    return d


def _maybe_cache(gpt: GPTModel, shards: dict, cfg: TrainConfig, max_length: int, accelerator) -> dict:
    """Build the frozen-prefix cache of every shard when it is exact and fits the budget."""
    start = first_trainable_block(gpt)
    info = {"used": False, "start_block": start, "megabytes": 0.0, "build_s": 0.0, "reason": ""}
    if cfg.prefix_cache == "off":
        info["reason"] = "off"
        return info
    if start < 1:
        info["reason"] = "no frozen block below the first trainable one"
        return info
    if gpt.cfg.drop_rate > 0:
        info["reason"] = "dropout in frozen blocks"
        return info
    if cfg.padding == "dynamic" and cfg.pooling == "last":
        info["reason"] = "last-position pooling with dynamic padding depends on the batch"
        say("prefix cache: off (pooling 'last' with dynamic padding reads a batch-dependent position)")
        return info
    widths = {n: [max_length if cfg.padding == "fixed" else max(len(s), 1) for s in sh.ids] for n, sh in shards.items()}
    # Computed in bf16 on a GPU, kept in bf16 there (half the memory); fp32 otherwise.
    on_gpu_bf16 = accelerator.device.type == "cuda" and accelerator.mixed_precision == "bf16"
    dtype = torch.bfloat16 if on_gpu_bf16 else torch.float32
    need = sum(sum(w) for w in widths.values()) * gpt.cfg.emb_dim * dtype.itemsize / 2**20
    if need > cfg.cache_budget_mb:
        info["reason"] = f"needs {need:.0f} MB > budget {cfg.cache_budget_mb} MB"
        say(
            f"prefix cache: off, it would need {need:.0f} MB per process, over --cache-budget-mb "
            f"{cfg.cache_budget_mb}; running the frozen blocks every step"
        )
        return info
    t0 = time.perf_counter()
    for name, shard in shards.items():
        shard.cache = PrefixCache.build(
            gpt, shard.ids, widths[name], start, accelerator.device, accelerator.autocast, dtype=dtype
        )
    info.update(
        used=True,
        dtype=str(dtype).removeprefix("torch."),
        megabytes=round(sum(s.cache.megabytes for s in shards.values()), 1),
        build_s=round(time.perf_counter() - t0, 3),
    )
    say(
        f"prefix cache: blocks 0-{start - 1} run once per example ({info['megabytes']:.1f} MB, {info['build_s']:.1f} s)"
    )
    return info


def _add_lora(gpt: GPTModel, cfg: TrainConfig):
    """LoRA adapters (peft) on every attention and feed-forward Linear; the new head trains fully."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SpamjobError("--trainable lora needs peft: pip install 'spamjob[lora]'") from None
    for p in gpt.parameters():
        p.requires_grad = False
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules=["W_q", "W_k", "W_v", "out_proj", "layers.0", "layers.2"],
        modules_to_save=None,
    )
    peft_model = get_peft_model(gpt, config)  # injects adapters into `gpt` in place
    for p in gpt.out_head.parameters():
        p.requires_grad = True
    return peft_model


def device_supports_fused(device: torch.device) -> bool:
    """Fused AdamW exists for CUDA and (torch >= 2.4) CPU float32 parameters."""
    return device.type in ("cuda", "cpu")


def _write_artifact(run: Run, history: list[dict], metrics: dict, plots: PlotProcess) -> None:
    """model.safetensors + config.json + tokenizer/, history.jsonl, plots (main process); the time
    it takes goes into metrics' phases."""
    from spamjob.artifact import save_classifier

    t0 = time.perf_counter()
    cfg, out, data_dir, model = run.cfg, run.out, run.data_dir, run.model
    examples_per_epoch = len(run.train_loader) * cfg.batch_size * run.accelerator.num_processes
    plots.render(out, history, cfg.epochs, examples_per_epoch)  # drawn while the rest is written
    data = {}
    for name in SPLITS:
        f = next(data_dir / f"{name}{ext}" for ext in (".csv", ".parquet") if (data_dir / f"{name}{ext}").exists())
        data[f.name] = sha256_file(f)
    prep = data_dir / "prepare.json"
    meta = {
        "max_length": run.max_length,
        "pooling": cfg.pooling,
        "padding": cfg.padding,
        "operating_point": {k: metrics["operating_point"][k] for k in ("rule", "threshold", "rule_met")},
        "training": cfg.to_dict(),
        "base_weights": {"source": cfg.weights, "folder": str(model.weights_dir) if model.weights_dir else None},
        "data": {
            "folder": str(data_dir),
            "sha256": data,
            "source_sha256": read_json(prep).get("source_sha256") if prep.is_file() else None,
        },
    }
    gpt = model.gpt if model.lora is None else model.lora.merge_and_unload()
    save_classifier(out, gpt, meta, model.tok_search)
    with atomic_path(out / "history.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    plots.wait()
    metrics["phases_s"]["write_s"] = time.perf_counter() - t0
    metrics["phases_s"] = {k: round(v, 3) for k, v in metrics["phases_s"].items()}


def summary(metrics: dict, out: str) -> str:
    """The final lines a run prints."""
    acc = " | ".join(f"{n} {metrics[n]['accuracy'] * 100:.2f}% ({metrics[n]['examples']})" for n in SPLITS)
    op = metrics["operating_point"]
    at = op["test"]
    return (
        f"accuracy: {acc}\n"
        f"operating point ({op['rule']}, on validation): spam when P(spam) > {op['threshold']:.4g}; test precision "
        f"{at['precision'] * 100:.2f}%, recall {at['recall'] * 100:.2f}%, accuracy {at['accuracy'] * 100:.2f}%\n"
        f"trained {metrics['epochs']} epochs, {metrics['examples_seen']:,} examples in {metrics['train_time_s']:.1f} s "
        f"({metrics['train_examples_per_s']} examples/s) on {metrics['num_processes']} process(es), "
        f"wall {metrics['wall_time_s']:.1f} s\n"
        f"classifier, metrics.json, history.jsonl and plots in {out}"
    )
