"""What a fine-tuning run builds before its first step: the process group, the data splits and
each process's slices, the model (pretrained or random, LoRA adapters), the frozen-prefix cache,
the optimizer and the loaders (spamjob.training.job runs them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from spamjob import extras, processes
from spamjob.config import TrainConfig, resolve_mixed_precision
from spamjob.console import say
from spamjob.data import SPLITS, load_split, prepare
from spamjob.errors import SpamjobError
from spamjob.model import GPTModel, SpamClassifier, first_trainable_block, freeze, replace_head
from spamjob.text import load_tokenizer
from spamjob.training import accelerated, tracking
from spamjob.training.checkpoints import save_trainable_only
from spamjob.training.loaders import PrefixCache, RankSlice, make_loader
from spamjob.training.optimizer import AdamW
from spamjob.weights import load_gpt


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
    slices: dict[str, RankSlice]
    classifier: torch.nn.Module  # prepared (DDP-wrapped with several processes)
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader


def accelerator_for(cfg: TrainConfig):
    gpu = torch.cuda.is_available()
    return processes.accelerator(
        cpu=not gpu,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision, gpu, cfg.width),
        gradient_accumulation_steps=cfg.grad_accum,
        **tracking.accelerator_options(cfg),
    )


def load_splits(data_dir: Path) -> dict[str, pd.DataFrame]:
    """train / validation / test as written by `spamjob prepare`, checked: not empty, labels 0/1."""

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


def max_length_for(cfg: TrainConfig, train_ids: list[list[int]], context_length: int) -> int:
    """--max-length, else the longest training message (the reference); at most the model's context."""
    longest = max(len(s) for s in train_ids)
    max_length = cfg.max_length or longest
    if max_length > context_length:
        raise SpamjobError(
            f"max_length {max_length} (longest training message: {longest} tokens) exceeds the model's context of "
            f"{context_length}; pass --max-length <= {context_length}"
        )
    return max_length


def make_slices(
    frames: dict[str, pd.DataFrame], ids: dict[str, list[list[int]]], max_length: int, rank: int, world: int
) -> dict[str, RankSlice]:
    """This process's rows of every split (rows rank, rank + world, ...), truncated to max_length."""
    slices = {}
    for name in SPLITS:
        rows = list(range(rank, len(ids[name]), world))
        slices[name] = RankSlice(
            name,
            [ids[name][i][:max_length] for i in rows],
            torch.tensor(frames[name]["Label"].to_numpy()[rows], dtype=torch.long),
            n_total=len(ids[name]),
            truncated_total=sum(len(s) > max_length for s in ids[name]),
        )
    return slices


def build_optimizer(gpt: GPTModel, cfg: TrainConfig, accelerator) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The classifier module and AdamW over what trains, prepared by accelerate (DDP with several processes)."""
    classifier = SpamClassifier(gpt, cfg.pooling, pooled_only=cfg.compute == "fast")
    torch.manual_seed(cfg.seed)  # the reference seeds again right before training
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    # Reference compute keeps torch's default AdamW kernel (the book's run, bit for bit);
    # fast compute the fused kernel: one call per step instead of ~5 ops per parameter tensor.
    fused = cfg.compute == "fast" and device_supports_fused(accelerator.device)
    optimizer = AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    classifier, optimizer = accelerated.prepare(accelerator, classifier, optimizer)
    save_trainable_only(accelerator)
    return classifier, optimizer


def make_loaders(
    slices: dict[str, RankSlice], cfg: TrainConfig, max_length: int, world: int
) -> tuple[DataLoader, DataLoader]:
    """The training loader (shuffled, drop_last) and the validation loader of the evaluation schedule."""
    # Equal step counts on every process (DDP needs them): each trains on n_train // world rows.
    n_rows = slices["train"].n_total // world
    train_loader = make_loader(slices["train"], cfg.batch_size, cfg.padding, max_length, train=True, n_rows=n_rows)
    if len(train_loader) == 0:
        raise SpamjobError(
            f"{n_rows} training rows per process is less than one batch of {cfg.batch_size}; lower --batch-size"
        )
    return train_loader, make_loader(slices["validation"], cfg.batch_size, cfg.padding, max_length, train=False)


def data_dir_for(cfg: TrainConfig, accelerator) -> Path:
    """--data as given, or `prepare` into OUT/data on the main process while the others wait."""
    if cfg.data is not None:
        d = Path(cfg.data)
        if not d.is_dir():
            raise SpamjobError(f"--data {d} is not a folder; run `spamjob prepare --out {d}` first")
        return d

    d = Path(cfg.out) / "data"
    if accelerator.is_main_process and not (d / "prepare.json").is_file():
        result = prepare(cfg.source, d, seed=cfg.seed)
        say(result.summary())
    accelerator.wait_for_everyone()
    return d


def prefix_cache_for(gpt: GPTModel, slices: dict, cfg: TrainConfig, max_length: int, accelerator) -> dict:
    """Build the frozen-prefix cache of every slice when it is exact and fits the budget."""
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
    widths = {n: [max_length if cfg.padding == "fixed" else max(len(s), 1) for s in sh.ids] for n, sh in slices.items()}
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
    for name, rank_slice in slices.items():
        rank_slice.cache = PrefixCache.build(
            gpt, rank_slice.ids, widths[name], start, accelerator.device, accelerator.autocast, dtype=dtype
        )
    info.update(
        used=True,
        dtype=str(dtype).removeprefix("torch."),
        megabytes=round(sum(s.cache.megabytes for s in slices.values()), 1),
        build_s=round(time.perf_counter() - t0, 3),
    )
    say(
        f"prefix cache: blocks 0-{start - 1} run once per example ({info['megabytes']:.1f} MB, {info['build_s']:.1f} s)"
    )
    return info


def _add_lora(gpt: GPTModel, cfg: TrainConfig):
    """LoRA adapters (peft) on every attention and feed-forward Linear; the new head trains fully."""
    extras.require("lora", "--trainable lora")
    from peft import LoraConfig, get_peft_model

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
    """Fused AdamW exists for CUDA and, from torch 2.4 on, for the CPU (pyproject allows 2.2)."""
    release = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and release >= (2, 4))
