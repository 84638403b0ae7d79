"""Fine-tuning on an Accelerator: main() builds the run in named steps -> fit() -> evaluate() ->
the classifier artifact.

One code path for the CPU, one GPU and many processes. Each process owns a fixed rank_slice
of every split (rank r takes rows r, r+W, ...), so the frozen-prefix cache of a process
covers exactly its rank_slice, and every reported accuracy is an integer count summed over
processes: each example is counted once whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from spamjob import __version__, extras
from spamjob.artifact import load_classifier, save_classifier
from spamjob.config import TrainConfig, precision_choice
from spamjob.console import say
from spamjob.data import SPLITS
from spamjob.export.card import write_card
from spamjob.faults import kill_point
from spamjob.fsutil import atomic_path, read_json, sha256_file, write_json
from spamjob.hardware import cpu
from spamjob.model import count_params
from spamjob.text import encode
from spamjob.threads import apply_threads, choose_threads
from spamjob.training import tracking
from spamjob.training.checkpoints import TrainState, check_resume, save_checkpoint, start_state
from spamjob.training.evaluate import eval_pair, evaluate
from spamjob.training.loaders import to_device
from spamjob.training.plots import PlotProcess, plot_process
from spamjob.training.profile import write_profile
from spamjob.training.setup import (
    Run,
    accelerator_for,
    build_model,
    build_optimizer,
    data_dir_for,
    load_splits,
    make_loaders,
    make_slices,
    max_length_for,
    prefix_cache_for,
)


def main(cfg: TrainConfig, plots: PlotProcess | None = None) -> dict:
    """Fine-tune, evaluate on the full splits, write the classifier artifact; returns metrics.
    `plots`: a plotting child started earlier (spamjob.training.plots.early_plot_process)."""
    wall0 = time.perf_counter()
    cfg = cfg.resolved()
    tracking.check(cfg.report_to)  # a tracker that is not installed: before any work
    accelerator = accelerator_for(cfg)
    threads = apply_threads(cfg.threads)
    out = Path(cfg.out)
    check_resume(cfg, out)
    if cfg.scoring_graphs:
        extras.require("onnx", "--scoring-graphs")  # before any work
    data_dir = data_dir_for(cfg, accelerator)
    frames = load_splits(data_dir)
    model = build_model(cfg, accelerator.device)
    ids = {name: encode(model.tokenizer, frames[name]["Text"].astype(str).tolist()) for name in SPLITS}
    max_length = max_length_for(cfg, ids["train"], model.gpt.cfg.context_length)
    slices = make_slices(frames, ids, max_length, accelerator.process_index, accelerator.num_processes)
    phases = {"setup_s": time.perf_counter() - wall0}
    cache_info = prefix_cache_for(model.gpt, slices, cfg, max_length, accelerator)
    phases["cache_s"] = cache_info["build_s"]

    # Without one started earlier, the plots' child process starts here: its matplotlib import
    # overlaps training (separate processes, no shared GIL).
    with plot_process(accelerator.is_main_process, started=plots) as plots:
        t0 = time.perf_counter()
        classifier, optimizer = build_optimizer(model.gpt, cfg, accelerator)
        train_loader, val_loader = make_loaders(slices, cfg, max_length, accelerator.num_processes)
        phases["optimizer_s"] = time.perf_counter() - t0
        run = Run(
            cfg, accelerator, out, data_dir, model, max_length, slices, classifier, optimizer, train_loader, val_loader
        )
        tracking.start(accelerator, cfg)
        state = fit(run, start_state(cfg, accelerator, out))
        phases["train_s"] = state.train_time_s
        t0 = time.perf_counter()
        final = evaluate(run)
        phases["final_eval_s"] = time.perf_counter() - t0
        metrics = {**_metrics(run, state, final, cache_info, phases), "threads": threads}
        tracking.log_final(accelerator, metrics, state.global_step)
        if accelerator.is_main_process:
            _write_artifact(run, state.history, metrics, plots)
            tracking.log_artifact(accelerator, out)
            if cfg.scoring_graphs:
                metrics["scoring_graphs"] = _scoring_graphs(out)
            metrics["wall_time_s"] = round(time.perf_counter() - wall0, 3)
            write_json(out / "metrics.json", metrics)
            write_card(out, read_json(out / "config.json"), metrics)
    accelerator.wait_for_everyone()
    metrics["wall_time_s"] = round(time.perf_counter() - wall0, 3)
    accelerator.end_training()
    return metrics


def fit(run: Run, state: TrainState) -> TrainState:
    """The epoch loop from `state` on: the reference's evaluation schedule (its lines printed), a
    checkpoint after every epoch. Returns the final state, whose `history` holds every evaluation."""
    cfg, accelerator = run.cfg, run.accelerator
    state = dataclasses.replace(state, history=list(state.history))
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        _train_epoch(run, state, epoch)
        train_acc, val_acc = eval_pair(run, cfg.eval_iter, "accuracy")
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
        tracking.log_record(accelerator, state.history[-1])
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
            train_loss, val_loss = eval_pair(run, cfg.eval_iter, "loss")
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
            tracking.log_record(accelerator, state.history[-1])
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


def _metrics(run: Run, state: TrainState, final: dict, cache_info: dict, phases: dict) -> dict:
    """metrics.json: accuracies, counts, speed, the real world size, time per phase."""
    accelerator, cfg = run.accelerator, run.cfg
    return {
        "spamjob_version": __version__,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "precision_choice": precision_choice(cfg.mixed_precision, accelerator.device.type == "cuda", cfg.width)[1],
        "cpu": cpu().record(),
        "preset": cfg.preset,
        **final,
        "epochs": cfg.epochs,
        "steps": state.global_step + 1,
        "examples_seen": state.examples_seen,
        "train_time_s": round(state.train_time_s, 3),
        "train_examples_per_s": round(state.examples_seen / state.train_time_s, 2) if state.train_time_s else None,
        "wall_time_s": None,
        "max_length": run.max_length,
        "parameters": {"total": count_params(run.model.gpt), "trainable": count_params(run.model.gpt, True)},
        "prefix_cache": cache_info,
        "phases_s": phases,
    }


def _scoring_graphs(out: Path) -> dict:
    """The classifier's ONNX Runtime graphs made into the cache now, as its first scoring job would;
    where `spamjob score`'s defaults would run OpenVINO here, its compiled model and bf16 check too."""
    from spamjob.scoring import runtimes
    from spamjob.scoring.runtimes.ort import scoring_graph

    t0 = time.perf_counter()
    graphs = {name: str(scoring_graph(out, quantize)) for name, quantize in (("fp32", None), ("int8", "int8"))}
    precision, _ = runtimes.precision("auto", gpu=False)
    request = runtimes.Request("cpu", precision, workers=choose_threads(independent=True)["threads"])
    if runtimes.resolve("auto", request) == "openvino":
        runtimes.get("openvino").load(load_classifier(out, weights=False), out, request).predictor.close()
        graphs["openvino"] = f"compiled for {request.workers} model workers, {precision} checked"
    say(f"scoring graphs made into the cache ({time.perf_counter() - t0:.1f} s): {', '.join(graphs)}")
    return {**graphs, "seconds": round(time.perf_counter() - t0, 3)}


def _write_artifact(run: Run, history: list[dict], metrics: dict, plots: PlotProcess) -> None:
    """model.safetensors + config.json + tokenizer/, history.jsonl, plots (main process); the time
    it takes goes into metrics' phases."""

    t0 = time.perf_counter()
    cfg, out, data_dir, model = run.cfg, run.out, run.data_dir, run.model
    examples_per_epoch = len(run.train_loader) * cfg.batch_size * run.accelerator.num_processes
    plots.render(
        out, history, cfg.epochs, examples_per_epoch, metrics["calibration"]
    )  # drawn while the rest is written
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
        "calibration": {k: metrics["calibration"][k] for k in ("method", "temperature")} | {"fit_on": "validation"},
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
    metrics["drift_profile"] = write_profile(out, data_dir, run.accelerator.device)
    with atomic_path(out / "history.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    plots.wait()
    metrics["phases_s"]["write_s"] = time.perf_counter() - t0
    metrics["phases_s"] = {k: round(v, 3) for k, v in metrics["phases_s"].items()}


def calibrated_line(c: dict) -> str:
    """How the run's probabilities were calibrated, and what it changed on validation."""
    if c["method"] == "none":
        return f"probabilities not calibrated (--calibration none): validation ECE {c['validation']['ece_before']}"
    v = c["validation"]
    return (
        f"calibrated: temperature {c['temperature']:.4g} (fitted on validation): ECE {v['ece_before']} -> "
        f"{v['ece_after']}, Brier {v['brier_before']} -> {v['brier_after']}"
    )


def trained_line(metrics: dict, out: str) -> str:
    """The final lines a run prints."""
    acc = " | ".join(f"{n} {metrics[n]['accuracy'] * 100:.2f}% ({metrics[n]['examples']})" for n in SPLITS)
    op = metrics["operating_point"]
    at = op["test"]
    return (
        f"accuracy: {acc}\n"
        f"operating point ({op['rule']}, on validation): spam when P(spam) > {op['threshold']:.4g}; test precision "
        f"{at['precision'] * 100:.2f}%, recall {at['recall'] * 100:.2f}%, accuracy {at['accuracy'] * 100:.2f}%\n"
        f"{calibrated_line(metrics['calibration'])}\n"
        f"trained {metrics['epochs']} epochs, {metrics['examples_seen']:,} examples in {metrics['train_time_s']:.1f} s "
        f"({metrics['train_examples_per_s']} examples/s) on {metrics['num_processes']} process(es), "
        f"wall {metrics['wall_time_s']:.1f} s\n"
        f"classifier, metrics.json, history.jsonl and plots in {out}"
    )
