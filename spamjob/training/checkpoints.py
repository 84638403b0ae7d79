"""Epoch checkpoints of a fine-tuning run: trainable tensors, optimizer and RNG states (accelerate's
save_state) plus the loop's own state, renamed into place only when complete."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from spamjob.config import TrainConfig
from spamjob.console import say
from spamjob.errors import SpamjobError
from spamjob.fsutil import read_json, write_json
from spamjob.training.accelerated import unwrap

CHECKPOINTS = "checkpoints"
# Options a resumed run may change: where things are, how fast they run, how long it trains.
RESUME_FREE = {
    "resume",
    "epochs",
    "out",
    "threads",
    "cache_budget_mb",
    "prefix_cache",
    "compute",
    "weights_cache",
    "tokenizer",
    "data",
    "source",
}


@dataclass
class TrainState:
    """What a checkpoint needs besides model, optimizer and RNG states."""

    epoch: int = 0
    global_step: int = -1
    examples_seen: int = 0
    train_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def checkpoint_dirs(out: Path) -> list[Path]:
    """Completed epoch checkpoints, oldest first (names `epoch-N`; temporaries start with a dot)."""
    root = out / CHECKPOINTS
    found = [p for p in root.glob("epoch-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def check_resume(cfg: TrainConfig, out: Path) -> None:
    """Resume or a fresh run; never train over an existing run silently."""
    ckpts = checkpoint_dirs(out)
    if cfg.resume and not ckpts:
        raise SpamjobError(f"--resume: no completed epoch checkpoint in {out / CHECKPOINTS}")
    if not cfg.resume and ckpts:
        raise SpamjobError(
            f"{out} already holds a run with checkpoints; pass --resume to continue it or choose another --out"
        )
    if cfg.resume:
        saved = read_json(out / CHECKPOINTS / "options.json")
        diff = [k for k, v in cfg.to_dict().items() if k not in RESUME_FREE and saved.get(k) != v]
        if diff:
            raise SpamjobError(
                f"--resume with options that differ from the checkpointed run: {', '.join(sorted(diff))}"
            )


def start_state(cfg: TrainConfig, accelerator, out: Path) -> TrainState:
    """The last checkpoint's state (loaded into model and optimizer) with --resume; else a fresh one."""

    if not cfg.resume:
        if accelerator.is_main_process:
            write_json(out / CHECKPOINTS / "options.json", cfg.to_dict())
        return TrainState()
    last = checkpoint_dirs(out)[-1]
    accelerator.load_state(str(last), strict=False)  # checkpoints hold the trainable tensors only
    state = TrainState(**read_json(last / "trainer_state.json"))
    say(f"resuming from {last} (epoch {state.epoch} of {cfg.epochs} done)")
    return state


def save_trainable_only(accelerator) -> None:
    """Frozen weights come back from the base weights on resume: save only what trains
    (a few MB instead of the whole model at every epoch)."""

    def hook(models, weights, output_dir):
        for model, state in zip(models, weights):
            keep = {n for n, p in unwrap(model).named_parameters() if p.requires_grad}
            for name in [k for k in state if k.removeprefix("module.") not in keep]:
                del state[name]

    accelerator.register_save_state_pre_hook(hook)


def save_checkpoint(accelerator, out: Path, state: TrainState) -> None:
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
