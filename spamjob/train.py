"""Fine-tuning on an Accelerator: setup() -> fit() -> final evaluation -> classifier artifact.

One code path for the CPU, one GPU and many processes. Each process owns a fixed shard
of every split (rank r takes rows r, r+W, ...), so the frozen-prefix cache of a process
covers exactly its shard, and every reported accuracy is an integer count summed over
processes: each example is counted once whatever the number of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from spamjob import __version__
from spamjob.config import TrainConfig, resolve_mixed_precision
from spamjob.console import say
from spamjob.data import SPLITS
from spamjob.errors import SpamjobError
from spamjob.faults import kill_point
from spamjob.fsutil import atomic_path, read_json, sha256_file, write_json
from spamjob.model import GPTModel, SpamClassifier, first_trainable_block, freeze, replace_head
from spamjob.batches import PrefixCache, Shard, evaluate_sums, make_loader, to_device
from spamjob.plots import PlotProcess
from spamjob.text import encode, load_tokenizer

CHECKPOINTS = "checkpoints"


# --------------------------------------------------------------------------- run


@dataclass
class TrainState:
    """What a checkpoint needs besides model, optimizer and RNG states."""

    epoch: int = 0
    global_step: int = -1
    examples_seen: int = 0
    train_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    gpu = torch.cuda.is_available()
    return Accelerator(cpu=not gpu, mixed_precision=resolve_mixed_precision(cfg.mixed_precision, gpu),
                       gradient_accumulation_steps=cfg.grad_accum)


def checkpoint_dirs(out: Path) -> list[Path]:
    """Completed epoch checkpoints, oldest first (names `epoch-N`; temporaries start with a dot)."""
    root = out / CHECKPOINTS
    found = [p for p in root.glob("epoch-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


_RESUME_FREE = {"resume", "epochs", "out", "cache_budget_mb", "prefix_cache", "compute", "weights_cache", "tokenizer",
                "data", "source"}


@dataclass
class Run:
    """Everything `setup` builds and `fit` / `evaluate` / the artifact writer use."""

    cfg: TrainConfig
    accelerator: object
    out: Path
    data_dir: Path
    gpt: GPTModel
    lora: object | None
    weights_dir: Path | None
    tok_search: list
    max_length: int
    shards: dict
    cache_info: dict
    classifier: torch.nn.Module  # prepared (DDP-wrapped with several processes)
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader
    state: TrainState
    phases: dict
    wall0: float
    plots: PlotProcess | None  # the main process's plot child (None elsewhere)



def setup(cfg: TrainConfig) -> Run:
    """Data, tokens, model, freezing, shards, prefix cache, optimizer, loaders, resume state."""
    wall0 = time.perf_counter()
    cfg = cfg.resolved()
    accelerator = _accelerator(cfg)
    out = Path(cfg.out)
    world, rank = accelerator.num_processes, accelerator.process_index
    _check_resume(cfg, out)

    data_dir = _data_dir(cfg, accelerator)
    from spamjob.data import load_split
    from spamjob.weights import load_gpt

    frames = {}
    for name in SPLITS:
        frames[name] = load_split(data_dir, name)
        if frames[name].empty:
            raise SpamjobError(f"split {name} in {data_dir} is empty")
        bad = ~frames[name]["Label"].isin([0, 1])
        if bad.any():
            raise SpamjobError(f"{data_dir}/{name}: labels must be 0/1, found {frames[name]['Label'][bad].iloc[0]!r}")

    gpt, weights_dir = load_gpt(cfg.weights, cfg.model, n_layers=cfg.n_layers, emb_dim=cfg.emb_dim,
                                n_heads=cfg.n_heads, context_length=cfg.context_length, seed=cfg.seed,
                                cache=cfg.weights_cache)
    tok_search = [weights_dir] if weights_dir else []
    tokenizer = load_tokenizer(cfg.tokenizer, search=tok_search)
    ids = {name: encode(tokenizer, frames[name]["Text"].astype(str).tolist()) for name in SPLITS}
    longest = max(len(s) for s in ids["train"])
    max_length = cfg.max_length or longest
    if max_length > gpt.cfg.context_length:
        raise SpamjobError(
            f"max_length {max_length} (longest training message: {longest} tokens) exceeds the model's context of "
            f"{gpt.cfg.context_length}; pass --max-length <= {gpt.cfg.context_length}"
        )

    # The reference's fine-tuning setup: new head right after manual_seed(seed), then freezing.
    replace_head(gpt, 2, seed=cfg.seed)
    lora = _add_lora(gpt, cfg) if cfg.trainable == "lora" else None
    if lora is None:
        freeze(gpt, cfg.trainable)
    gpt.to(accelerator.device)

    shards = {}
    for name in SPLITS:
        rows = list(range(rank, len(ids[name]), world))
        shards[name] = Shard(
            name, [ids[name][i][:max_length] for i in rows],
            torch.tensor(frames[name]["Label"].to_numpy()[rows], dtype=torch.long),
            n_total=len(ids[name]), truncated_total=sum(len(s) > max_length for s in ids[name]),
        )
    phases = {"setup_s": time.perf_counter() - wall0}
    cache_info = _maybe_cache(gpt, shards, cfg, max_length, accelerator)
    phases["cache_s"] = cache_info["build_s"]

    t0 = time.perf_counter()
    # The plots' child process starts here: its matplotlib import overlaps the optimizer's
    # torch._dynamo import below and training (separate processes, no shared GIL).
    plots = PlotProcess() if accelerator.is_main_process else None
    try:
        classifier = SpamClassifier(gpt, cfg.pooling, pooled_only=cfg.compute == "fast")
        torch.manual_seed(cfg.seed)  # the reference seeds again right before training
        trainable = [p for p in classifier.parameters() if p.requires_grad]
        # Reference compute keeps torch's default AdamW kernel (the book's run, bit for bit);
        # fast compute the fused kernel: one call per step instead of ~5 ops per parameter tensor.
        fused = cfg.compute == "fast" and device_supports_fused(accelerator.device)
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
        classifier, optimizer = accelerator.prepare(classifier, optimizer)
        _checkpoint_trainable_only(accelerator)

        # Equal step counts on every process (DDP needs them): each trains on n_train // world rows.
        n_rows = shards["train"].n_total // world
        train_loader = make_loader(shards["train"], cfg.batch_size, cfg.padding, max_length, train=True, n_rows=n_rows)
        val_loader = make_loader(shards["validation"], cfg.batch_size, cfg.padding, max_length, train=False)
        if len(train_loader) == 0:
            raise SpamjobError(
                f"{n_rows} training rows per process is less than one batch of {cfg.batch_size}; lower --batch-size"
            )
        phases["optimizer_s"] = time.perf_counter() - t0  # torch.optim's first use imports torch._dynamo (~1 s)

        state = TrainState()
        if cfg.resume:
            last = checkpoint_dirs(out)[-1]
            accelerator.load_state(str(last), strict=False)  # checkpoints hold the trainable tensors only
            state = TrainState(**read_json(last / "trainer_state.json"))
            say(f"resuming from {last} (epoch {state.epoch} of {cfg.epochs} done)")
        elif accelerator.is_main_process:
            write_json(out / CHECKPOINTS / "options.json", cfg.to_dict())
    except BaseException:
        if plots is not None:
            plots.cancel()
        raise
    return Run(cfg, accelerator, out, data_dir, gpt, lora, weights_dir, tok_search, max_length, shards, cache_info,
               classifier, optimizer, train_loader, val_loader, state, phases, wall0, plots)


def _check_resume(cfg: TrainConfig, out: Path) -> None:
    """Resume or a fresh run; never train over an existing run silently."""
    ckpts = checkpoint_dirs(out)
    if cfg.resume and not ckpts:
        raise SpamjobError(f"--resume: no completed epoch checkpoint in {out / CHECKPOINTS}")
    if not cfg.resume and ckpts:
        raise SpamjobError(f"{out} already holds a run with checkpoints; pass --resume to continue it or choose another --out")
    if cfg.resume:
        saved = read_json(out / CHECKPOINTS / "options.json")
        diff = [k for k, v in cfg.to_dict().items() if k not in _RESUME_FREE and saved.get(k) != v]
        if diff:
            raise SpamjobError(f"--resume with options that differ from the checkpointed run: {', '.join(sorted(diff))}")


def fit(run: Run) -> None:
    """The epoch loop: the reference's evaluation schedule, a checkpoint after every epoch."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    classifier, optimizer, train_loader = run.classifier, run.optimizer, run.train_loader
    device, world = accelerator.device, accelerator.num_processes
    model = accelerator.unwrap_model(classifier)

    def eval_pair(num_batches: int) -> torch.Tensor:
        sums = torch.stack([evaluate_sums(model, ld, device, accelerator.autocast, num_batches)
                            for ld in (train_loader, run.val_loader)])
        return accelerator.reduce(sums.to(device), "sum").cpu()  # sync point: counts from every process

    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        classifier.train()
        # tqdm counts steps but never iterates the loader: every extra iterator of a shuffled
        # DataLoader draws from the global RNG and would change the reference's batch order.
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not accelerator.is_main_process, leave=False)
        running = None
        for batch in train_loader:
            labels = batch.pop("labels").to(device)
            with accelerator.accumulate(classifier):
                logits = classifier(**to_device(batch, device))
                loss = F.cross_entropy(logits.float(), labels)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            state.examples_seen += len(labels) * world
            state.global_step += 1
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
            bar.update()
            if state.global_step % cfg.eval_freq == 0:
                s = eval_pair(cfg.eval_iter)
                train_loss, val_loss = (s[:, 0] / s[:, 1]).tolist()
                state.history.append({"kind": "eval", "epoch": epoch + 1, "step": state.global_step,
                                      "examples_seen": state.examples_seen, "train_loss": train_loss,
                                      "val_loss": val_loss})
                say(f"Ep {epoch + 1} (Step {state.global_step:06d}): Train loss {train_loss:.3f}, "
                        f"Val loss {val_loss:.3f}")
        bar.close()
        s = eval_pair(cfg.eval_iter)
        train_acc, val_acc = (s[:, 3] / s[:, 4]).tolist()
        state.history.append({"kind": "epoch", "epoch": epoch + 1, "step": state.global_step,
                              "examples_seen": state.examples_seen, "train_acc": train_acc, "val_acc": val_acc})
        say(f"Training accuracy: {train_acc * 100:.2f}% | Validation accuracy: {val_acc * 100:.2f}%")
        state.epoch = epoch + 1
        state.train_time_s += time.perf_counter() - t0
        _save_checkpoint(accelerator, run.out, state)
        kill_point("SPAMJOB_KILL_AFTER_EPOCH", state.epoch)  # crash tests: resume after a real kill
    run.phases["train_s"] = state.train_time_s


def evaluate(run: Run) -> dict:
    """Accuracy and loss on the full splits: every row of every shard once, sums over processes."""
    t0 = time.perf_counter()
    accelerator = run.accelerator
    model = accelerator.unwrap_model(run.classifier)
    final = {}
    for name in SPLITS:
        shard = run.shards[name]
        # Counts and example-loss sums do not depend on batching; on cached activations the
        # pooled last block is cheap, so larger batches only save per-batch overhead.
        batch_size = run.cfg.batch_size if shard.cache is None else max(run.cfg.batch_size, 64)
        loader = make_loader(shard, batch_size, run.cfg.padding, run.max_length, train=False)
        s = accelerator.reduce(evaluate_sums(model, loader, accelerator.device, accelerator.autocast)
                               .to(accelerator.device), "sum").cpu()
        final[name] = {"accuracy": s[3].item() / s[4].item(), "loss": s[2].item() / s[4].item(),
                       "examples": int(s[4].item()), "truncated": run.shards[name].truncated_total}
    run.phases["final_eval_s"] = time.perf_counter() - t0
    return final


def main(cfg: TrainConfig) -> dict:
    """Fine-tune, evaluate on the full splits, write the classifier artifact; returns metrics."""
    run = setup(cfg)
    try:
        return _train_and_write(run)
    finally:
        if run.plots is not None:
            run.plots.cancel()  # nothing to do when the plots were written


def _train_and_write(run: Run) -> dict:
    fit(run)
    final = evaluate(run)
    accelerator, state, cfg = run.accelerator, run.state, run.cfg
    world = accelerator.num_processes
    metrics = {
        "spamjob_version": __version__,
        "num_processes": world,
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
        "prefix_cache": run.cache_info,
        "phases_s": run.phases,
    }
    if accelerator.is_main_process:
        _write_artifact(run, metrics, len(run.train_loader) * cfg.batch_size * world)
    accelerator.wait_for_everyone()
    metrics["wall_time_s"] = round(time.perf_counter() - run.wall0, 3)
    accelerator.end_training()
    return metrics


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
        tqdm.write(result.summary())
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
    need = sum(sum(w) for w in widths.values()) * gpt.cfg.emb_dim * 4 / 2**20
    if need > cfg.cache_budget_mb:
        info["reason"] = f"needs {need:.0f} MB > budget {cfg.cache_budget_mb} MB"
        say(f"prefix cache: off, it would need {need:.0f} MB per process, over --cache-budget-mb "
            f"{cfg.cache_budget_mb}; running the frozen blocks every step")
        return info
    t0 = time.perf_counter()
    for name, shard in shards.items():
        shard.cache = PrefixCache.build(gpt, shard.ids, widths[name], start, accelerator.device, accelerator.autocast)
    info.update(used=True, megabytes=round(sum(s.cache.megabytes for s in shards.values()), 1),
                build_s=round(time.perf_counter() - t0, 3))
    say(f"prefix cache: blocks 0-{start - 1} run once per example ({info['megabytes']:.1f} MB, {info['build_s']:.1f} s)")
    return info


def _add_lora(gpt: GPTModel, cfg: TrainConfig):
    """LoRA adapters (peft) on every attention and feed-forward Linear; the new head trains fully."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SpamjobError("--trainable lora needs peft: pip install 'spamjob[lora]'") from None
    for p in gpt.parameters():
        p.requires_grad = False
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                        target_modules=["W_q", "W_k", "W_v", "out_proj", "layers.0", "layers.2"],
                        modules_to_save=None)
    peft_model = get_peft_model(gpt, config)  # injects adapters into `gpt` in place
    for p in gpt.out_head.parameters():
        p.requires_grad = True
    return peft_model


def device_supports_fused(device: torch.device) -> bool:
    """Fused AdamW exists for CUDA and (torch >= 2.4) CPU float32 parameters."""
    return device.type in ("cuda", "cpu")


def _checkpoint_trainable_only(accelerator) -> None:
    """Frozen weights come back from the base weights on resume: save only what trains
    (a few MB instead of the whole model at every epoch)."""

    def hook(models, weights, output_dir):
        for model, state in zip(models, weights):
            keep = {n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
            for name in [k for k in state if k.removeprefix("module.") not in keep]:
                del state[name]

    accelerator.register_save_state_pre_hook(hook)


def _save_checkpoint(accelerator, out: Path, state: TrainState) -> None:
    """accelerate's save_state (model, optimizer, RNG of every process) + trainer_state.json,
    written under a temporary name and renamed: a killed run leaves only complete epochs."""
    root = out / CHECKPOINTS
    tmp = root / f".epoch-{state.epoch}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's files (RNG states) are in tmp before it is renamed
    if accelerator.is_main_process:
        write_json(tmp / "trainer_state.json", state.__dict__)
        final = root / f"epoch-{state.epoch}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(out)[:-1]:  # resuming needs only the newest
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _write_artifact(run: Run, metrics: dict, examples_per_epoch: int) -> None:
    """model.safetensors + config.json + tokenizer/, history.jsonl, plots, metrics.json (main process)."""
    t0 = time.perf_counter()
    from spamjob.artifact import save_classifier

    cfg, out, data_dir = run.cfg, run.out, run.data_dir
    data = {}
    for name in SPLITS:
        f = next(data_dir / f"{name}{ext}" for ext in (".csv", ".parquet") if (data_dir / f"{name}{ext}").exists())
        data[f.name] = sha256_file(f)
    prep = data_dir / "prepare.json"
    meta = {
        "max_length": run.max_length,
        "pooling": cfg.pooling,
        "padding": cfg.padding,
        "training": cfg.to_dict(),
        "base_weights": {"source": cfg.weights, "folder": str(run.weights_dir) if run.weights_dir else None},
        "data": {"folder": str(data_dir), "sha256": data,
                 "source_sha256": read_json(prep).get("source_sha256") if prep.is_file() else None},
    }
    run.plots.render(out, run.state.history, cfg.epochs, examples_per_epoch)  # drawn while the rest is written
    gpt = run.gpt if run.lora is None else run.lora.merge_and_unload()
    save_classifier(out, gpt, meta, run.tok_search)
    with atomic_path(out / "history.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in run.state.history))
    run.plots.wait()
    metrics["phases_s"]["write_s"] = time.perf_counter() - t0
    metrics["phases_s"] = {k: round(v, 3) for k, v in metrics["phases_s"].items()}
    metrics["wall_time_s"] = round(time.perf_counter() - run.wall0, 3)
    write_json(out / "metrics.json", metrics)


def summary(metrics: dict, out: str) -> str:
    """The final lines a run prints."""
    acc = " | ".join(f"{n} {metrics[n]['accuracy'] * 100:.2f}% ({metrics[n]['examples']})" for n in SPLITS)
    return (f"accuracy: {acc}\n"
            f"trained {metrics['epochs']} epochs, {metrics['examples_seen']:,} examples in {metrics['train_time_s']:.1f} s "
            f"({metrics['train_examples_per_s']} examples/s) on {metrics['num_processes']} process(es), "
            f"wall {metrics['wall_time_s']:.1f} s\n"
            f"classifier, metrics.json, history.jsonl and plots in {out}")
