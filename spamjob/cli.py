"""`spamjob` command line: thin click commands that parse, call the library, and print."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

import click

from spamjob import __version__
from spamjob.command_config import (
    ClassifyConfig,
    DownloadConfig,
    ExportConfig,
    GenerateConfig,
    PrepareConfig,
    PushConfig,
    ReportConfig,
    RunConfig,
)
from spamjob.config import TrainConfig
from spamjob.errors import SpamjobError, redact
from spamjob.options import Folder, from_fields
from spamjob.scoring.config import ScoreConfig
from spamjob.threads import start_cpu_reading

start_cpu_reading()  # the thread choice compares the CPUs' idle time from here to the job's start

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Command(click.Command):
    """Turns SpamjobError (and plain OS errors) into `Error: <one line>` and exit status 1.

    On the command itself, so a command run standalone (jobs/*.py) behaves the same.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kwargs)

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as e:  # a usage error quotes the value it refuses
            e.message = redact(e.message)
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpamjobError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            raise click.ClickException(redact(f"{e.strerror or e}{where}")) from None


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="spamjob")
@click.option(
    "--offline",
    is_flag=True,
    envvar="SPAMJOB_OFFLINE",
    help="Never use the network: read weights, tokenizer and data from the caches only (also SPAMJOB_OFFLINE=1).",
)
@click.option(
    "--cache",
    type=Folder(),
    default=None,
    envvar="SPAMJOB_CACHE",
    help="spamjob's cache folder, e.g. a bundle made by `spamjob download --all` [$SPAMJOB_CACHE, ~/.cache/spamjob].",
)
def cli(offline: bool, cache: str | None) -> None:
    """Fine-tune GPT-2 as a spam classifier and score message files with it."""
    if offline:
        os.environ["SPAMJOB_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    if cache:
        os.environ["SPAMJOB_CACHE"] = str(Path(cache).resolve())


@cli.command()
@from_fields(PrepareConfig)
def prepare(**params) -> None:
    """Download (or read) the SMS Spam Collection, balance it and split it as the reference does."""
    from spamjob.data import prepare_from

    result = prepare_from(PrepareConfig(**params))
    click.echo(result.summary())
    click.echo(f"wrote {len(result.files)} files + prepare.json to {params['out']}")


@cli.command()
@from_fields(DownloadConfig)
def download(**params) -> None:
    """Prefetch GPT-2 weights (or the tokenizer, the dataset, or everything) for offline and air-gapped runs."""
    from spamjob.assets import download as fetch_what

    click.echo(fetch_what(DownloadConfig(**params)))


@cli.command()
@from_fields(GenerateConfig)
def generate(**params) -> None:
    """Greedy continuation of PROMPT (the reference's sanity check after loading weights)."""
    from spamjob.weights import generate as continue_prompt

    cfg = GenerateConfig(**params)
    done = continue_prompt(cfg)
    click.echo(json.dumps(done) if cfg.json else done["text"])


@cli.command()
@from_fields(TrainConfig)
@click.option(
    "--auto-resume",
    is_flag=True,
    help="Resume when OUT holds checkpoints, start fresh otherwise (for requeued cluster jobs).",
)
def train(**options) -> None:
    """Fine-tune GPT-2 as a spam classifier (on all processes `accelerate launch` starts)."""
    from spamjob.training.plots import early_plot_process

    with early_plot_process() as plots:
        from spamjob.training.job import main as run_train
        from spamjob.training.job import trained_line

        metrics = run_train(train_config(**options), plots)
    from accelerate import PartialState

    if PartialState().is_main_process:
        click.echo(trained_line(metrics, options["out"]))


def train_config(auto_resume: bool = False, **options) -> TrainConfig:
    """`spamjob train` options -> TrainConfig (--auto-resume decided here, from the run folder)."""
    from spamjob.training.checkpoints import checkpoint_dirs

    if auto_resume:
        options["resume"] = bool(checkpoint_dirs(Path(options["out"])))
    return TrainConfig(**options)


@cli.command()
@from_fields(ClassifyConfig)
def classify(**params) -> None:
    """Label TEXTS (or lines of stdin) as ham or spam with a trained classifier.

    Lines are read as bytes and judged as `spamjob score` judges a message: an empty line or
    one whose bytes are not UTF-8 is not scored (label and probability `-`, or null with
    --json, which also gives the reason in `error`)."""
    from spamjob.scorer import BatchScorer

    cfg = ClassifyConfig(**params)
    raw = [os.fsencode(t) for t in cfg.texts] or [line.rstrip(b"\r\n") for line in click.get_binary_stream("stdin")]
    scorer = BatchScorer(
        cfg.model, device="cpu", batch_tokens=cfg.batch_tokens, threshold=cfg.threshold, runtime=cfg.runtime
    )
    try:
        rows = scorer.score_messages(raw).to_pylist()
    finally:
        scorer.close()
    for row in rows:
        text = row["text"].decode("utf-8", "replace")
        if cfg.json:
            fields = {"label": row["prediction"], **{k: row[k] for k in ("spam_probability", "truncated", "error")}}
            click.echo(json.dumps({"text": text, **fields}))
        elif row["error"] is None:
            click.echo(f"{row['prediction']}\t{row['spam_probability']:.4f}\t{text}")
        else:
            click.echo(f"-\t-\t{text}")
    flagged = Counter(row["error"] for row in rows if row["error"] is not None)
    if flagged and not cfg.json:
        why = ", ".join(f"{reason}: {n}" for reason, n in flagged.items())
        click.echo(
            f"{sum(flagged.values())} of {len(rows)} lines not scored ({why}); --json gives each reason", err=True
        )


@cli.command()
@from_fields(ScoreConfig)
def score(**params) -> None:
    """Score INPUTS (Parquet/CSV/TSV files, folders, globs; .gz too) with a trained classifier.

    Every input row appears once in the output: scored, or flagged in `error` (null,
    empty or undecodable text); CSV lines that cannot be parsed go to rejects/. Rerun the
    same command after a crash to finish; exit status 0 when every input was processed,
    1 on bad input or options (nothing is scored then), 2 on usage errors, 3 when
    --fail-on-drift's PSI was exceeded (the output committed all the same).
    """
    from spamjob.engines import run as run_score
    from spamjob.scoring.drift import DRIFT_EXIT, drifted
    from spamjob.scoring.report import scored_line

    cfg = ScoreConfig(**params)
    report = run_score(cfg)
    if report.get("dry_run"):
        from spamjob.scoring.dry_run import lines

        click.echo("\n".join(lines(report)))
    elif report.get("rows"):
        click.echo(scored_line(report, params["out"]))
    elif report.get("pending"):
        click.echo(report["pending"])
    if (why := drifted(report, cfg.fail_on_drift)) is not None:
        click.echo(why, err=True)
        sys.exit(DRIFT_EXIT)


@cli.command()
@from_fields(ExportConfig)
def export(**params) -> None:
    """Write the classifier in RUN_DIR in another library's layout, loadable without spamjob."""
    cfg = ExportConfig(**params)
    if cfg.format == "hf":
        from spamjob.export.hf import export_hf

        export_hf(cfg.run_dir, cfg.out)
        click.echo(
            f"exported {cfg.run_dir} to {cfg.out} (hf): AutoModelForSequenceClassification.from_pretrained("
            f"{cfg.out!r}); tokenize with truncation=True"
        )
        return
    from spamjob.export.onnx import export_onnx

    checks = export_onnx(cfg.run_dir, cfg.out, cfg.quantize)["checked_with_onnxruntime"]
    line = (
        f"exported {cfg.run_dir} to {cfg.out}/model.onnx: ONNX Runtime matches spamjob within "
        f"{checks['fp32']['max_abs_diff']:.1e} on {checks['fp32']['messages']} messages"
    )
    if "int8" in checks:
        line += f"; model.int8.onnx agrees on {checks['int8']['agreement'] * 100:.2f}% of labels"
    click.echo(line)


@cli.command()
@from_fields(PushConfig)
def push(**params) -> None:
    """Upload the classifier in RUN_DIR to the Hugging Face Hub as REPO_ID (OWNER/NAME): its
    transformers export and model card, one commit. Token: $HF_TOKEN or `hf auth login`."""
    from spamjob.export.hub import push as upload

    cfg = PushConfig(**params)
    done = upload(cfg.run_dir, cfg.repo_id, cfg.private)
    click.echo(
        f"pushed {cfg.run_dir} to {done.repo_url} ({len(done.files)} files: {', '.join(done.files)}); "
        f"commit {done.commit_url}"
    )


@cli.command("report")
@from_fields(ReportConfig)
def report_cmd(**params) -> None:
    """Recount FOLDER/predictions/ (written by `spamjob score`, `--engine ray` or Spark) into
    FOLDER/report.json, report.md and report.png, with the counts `spamjob score` reports."""
    from spamjob.scoring.recount import recount
    from spamjob.scoring.report import scored_line

    cfg = ReportConfig(**params)
    click.echo(scored_line(recount(cfg.folder, cfg.label_column), cfg.folder, recounted=True))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option(
    "--model", type=click.Path(exists=True, file_okay=False), help="A classifier folder: are its ONNX graphs ready?"
)
def env(as_json: bool, model: str | None) -> None:
    """What this machine is to spamjob, and what `train` and `score` would pick on it (device, runtime,
    precision, threads, workers) and why: paste it into a bug report."""
    from spamjob import environment

    facts = environment.facts(model)
    click.echo(json.dumps(facts, indent=2) if as_json else environment.text(facts))


@cli.command()
@from_fields(RunConfig)
def run(**params) -> None:
    """The main job: fetch, prepare, fine-tune, score the test split, report.

    Defaults: the UCI dataset, gpt2-small pretrained weights from the Hub, the default
    recipe. Stages finished before are skipped (a killed training resumes), so rerunning
    the same command finishes the job. With no network and nothing cached it stops before
    any work, naming what is missing and how to fetch it.
    """
    from spamjob.pipeline import JobPaths
    from spamjob.pipeline import run as run_job

    cfg = RunConfig(**params)
    paths = JobPaths(Path(cfg.out))
    train_opts = _stage_options(train, shlex.split(cfg.train_args), {"data": paths.data, "out": paths.model})
    if train_opts["source"] is not None:
        raise SpamjobError("give the data source as `spamjob run --source`, not among the training options")
    train_opts.pop("auto_resume")  # `run` always resumes a killed training
    score_opts = _stage_options(
        score, [str(paths.test_split), *shlex.split(cfg.score_args)], {"model": paths.model, "out": paths.scored}
    )
    summary = run_job(cfg.out, cfg.source, TrainConfig(**train_opts), ScoreConfig(**score_opts))
    from accelerate import PartialState

    if PartialState().is_main_process:
        acc = summary["test_accuracy"]
        stages = ", ".join(f"{k}: {v}" for k, v in summary["stages"].items())
        at = "" if summary.get("threshold") is None else f" at threshold {summary['threshold']:.4g}"
        click.echo(
            f"job done in {summary['wall_time_s']:.1f} s ({stages}); test accuracy "
            f"{'n/a' if acc is None else f'{acc * 100:.2f}%'}{at}; report: {summary['report']}"
        )


def _stage_options(command: click.Command, args: list[str], fixed: dict[str, Path]) -> dict:
    """Parse `spamjob run`'s pass-through options with the stage's own command (same names, same checks).

    `fixed` maps the options `spamjob run` sets itself (they may not be passed) to their values.
    """
    flags = {"--" + k.replace("_", "-"): k for k in fixed}
    clash = [a.split("=")[0] for a in args if a.split("=")[0] in flags]
    if clash:
        raise SpamjobError(
            f"`spamjob run` sets {', '.join(sorted(set(clash)))} itself; leave it out of the stage options"
        )
    required = [x for flag, k in flags.items() for x in (flag, str(fixed[k]))]
    try:
        return command.make_context(command.name, [*required, *args]).params
    except click.UsageError as e:
        raise SpamjobError(f"bad {command.name} option in `spamjob run`: {e.format_message()}") from None


def main() -> None:
    """Console-script entry point."""
    run_standalone(cli, "spamjob")


def run_standalone(command: click.Command, prog_name: str) -> None:
    """Run a command as its own process. An error exit (status 1 or 2, its line already printed)
    flushes and leaves without the interpreter's teardown: Arrow can still be releasing a CSV
    reader on one of its I/O threads, and that reader holds a Python callback whose release
    during teardown aborts the process (exit 134 after the error line; seen under CPU load)."""
    try:
        command.main(prog_name=prog_name)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise


if __name__ == "__main__":
    main()
