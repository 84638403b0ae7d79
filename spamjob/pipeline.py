"""`spamjob run`: fetch -> prepare -> fine-tune -> score the test split -> report, resumable by stage."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from spamjob import __version__
from spamjob.errors import SpamjobError
from spamjob.fsutil import cache_dir, write_json

STAGES = ("fetch", "prepare", "train", "score")


def bundle(dest: str | os.PathLike | None, size: str = "gpt2-small", source: str = "hf", progress: bool = True) -> Path:
    """Weights, tokenizer files and the dataset in one folder laid out as a spamjob cache.

    Copy the folder to an air-gapped machine and point SPAMJOB_CACHE (or `spamjob --cache`)
    at it: with `--offline` every lookup is answered from there.
    """
    from spamjob import assets
    from spamjob.config import OPENAI_NAMES, canonical_size
    from spamjob.fsutil import sha256_file
    from spamjob.weights import fetch_hf, fetch_openai

    root = (Path(dest) if dest is not None else cache_dir()).resolve()
    size = canonical_size(size)
    if source == "hf":
        weights = fetch_hf(size, local_dir=root / "hf" / size)
    else:
        weights = fetch_openai(size, root / "openai" / OPENAI_NAMES[size], progress=progress)
    found = assets.fetch(root, progress=progress)
    files = [p for p in (*weights.iterdir(), *found.tokenizer.iterdir(), found.dataset) if p.is_file()]
    write_json(root / "bundle.json", {
        "spamjob_version": __version__, "model": size, "weights_source": source,
        "files": {str(p.relative_to(root)): sha256_file(p) for p in sorted(files)},
    })
    return root


def _stage_options(command, args: list[str], fixed: dict[str, str]) -> dict:
    """Parse pass-through options with the stage's own click command (same names, same checks).

    `fixed` maps the options `spamjob run` sets itself (they may not be passed) to their values.
    """
    import click

    flags = {"--" + k.replace("_", "-"): k for k in fixed}
    clash = [a.split("=")[0] for a in args if a.split("=")[0] in flags]
    if clash:
        raise SpamjobError(f"`spamjob run` sets {', '.join(sorted(set(clash)))} itself; leave it out of the stage options")
    required = [x for flag, k in flags.items() for x in (flag, fixed[k])]
    try:
        ctx = command.make_context(command.name, [*required, *args])
    except click.UsageError as e:
        raise SpamjobError(f"bad {command.name} option in `spamjob run`: {e.format_message()}") from None
    return ctx.params


def run(out: str | os.PathLike, source: str | None, train_args: list[str], score_args: list[str]) -> dict:
    """The main job. Every stage that finished before is skipped; a killed training resumes."""
    from accelerate import PartialState

    from spamjob.cli import score as score_cmd, score_config, train as train_cmd
    from spamjob.config import TrainConfig
    from spamjob.data import default_source, prepare, resolve_source
    from spamjob.score import main as run_score
    from spamjob.text import load_tokenizer
    from spamjob.train import checkpoint_dirs, main as run_train
    from spamjob.weights import resolve_weights

    out = Path(out)
    state = PartialState()
    say = (lambda msg: print(msg, flush=True)) if state.is_main_process else (lambda msg: None)
    t0 = time.perf_counter()
    data_dir, model_dir, scored_dir = out / "data", out / "model", out / "scored"
    train_opts = _stage_options(train_cmd, train_args, {"data": str(data_dir), "out": str(model_dir)})
    if train_opts.get("source") is not None:
        raise SpamjobError("give the data source as `spamjob run --source`, not among the training options")
    train_opts.pop("auto_resume", None)  # `run` always resumes a killed training
    cfg = TrainConfig(**train_opts)
    score_opts = _stage_options(score_cmd, [str(data_dir / "test.csv"), *score_args],
                                {"model": str(model_dir), "out": str(scored_dir)})
    score_opts["label_column"] = score_opts.get("label_column") or "Label"

    # 1. Fetch (or find offline) everything before any work: no half-done job for want of a file,
    #    and never a silent fall-back to random weights.
    with state.main_process_first():
        weights_dir = resolve_weights(cfg.weights, cfg.model, cache=cfg.weights_cache)
        load_tokenizer(cfg.tokenizer, search=[weights_dir] if weights_dir else [])
        src = source or default_source()
        resolve_source(src, progress=state.is_main_process)
    stages = {"fetch": "done"}

    # 2. Prepare the splits.
    if (data_dir / "prepare.json").is_file():
        stages["prepare"] = "skipped (done before)"
    else:
        if state.is_main_process:
            result = prepare(src, data_dir, seed=cfg.seed)
            say(result.summary())
        state.wait_for_everyone()
        stages["prepare"] = "done"

    # 3. Fine-tune (resume a killed run).
    if (model_dir / "metrics.json").is_file():
        stages["train"] = "skipped (done before)"
    else:
        resume = bool(checkpoint_dirs(model_dir))
        from dataclasses import replace

        metrics = run_train(replace(cfg, resume=resume))
        stages["train"] = "resumed" if resume else "done"
        if state.is_main_process:
            from spamjob.train import summary

            say(summary(metrics, str(model_dir)))

    # 4. Score the test split with its labels: the test-accuracy report.
    if (scored_dir / "_SUCCESS").is_file():
        stages["score"] = "skipped (done before)"
        report = json.loads((scored_dir / "report.json").read_text())
    else:
        report = run_score(score_config(**score_opts))
        stages["score"] = "done"

    summary = {
        "spamjob_version": __version__, "stages": stages, "wall_time_s": round(time.perf_counter() - t0, 3),
        "data": str(data_dir), "model": str(model_dir), "scored": str(scored_dir),
        "report": str(scored_dir / "report.md"), "test_accuracy": report.get("accuracy"),
    }
    if state.is_main_process:
        write_json(out / "run.json", summary)
    return summary
