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
from spamjob.config import SIZE_CHOICES, TrainConfig
from spamjob.errors import SpamjobError
from spamjob.options import LocalFolder, from_fields
from spamjob.scoring.config import ScoreConfig
from spamjob.threads import start_cpu_reading

start_cpu_reading()  # the thread choice compares the CPUs' idle time from here to the job's start

SIZE = click.Choice(SIZE_CHOICES, case_sensitive=False)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Command(click.Command):
    """Turns SpamjobError (and plain OS errors) into `Error: <one line>` and exit status 1.

    On the command itself, so a command run standalone (jobs/*.py) behaves the same.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpamjobError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None


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
    type=LocalFolder(),
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
@click.option(
    "--source",
    default=None,
    metavar="URL|ZIP|FILE",
    help="UCI zip URL [default], a local zip, or an extracted labeled file (TSV label<TAB>text, "
    "or CSV/TSV with `label` and `text` header).",
)
@click.option(
    "--out",
    "out",
    type=LocalFolder(),
    default="data",
    show_default=True,
    help="Folder for train/validation/test files and prepare.json.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    default="csv",
    show_default=True,
    help="parquet writes .parquet files beside the CSVs.",
)
@click.option("--seed", type=int, default=123, show_default=True, help="Seed of balancing and shuffling.")
@click.option("--train-frac", type=float, default=0.7, show_default=True)
@click.option("--val-frac", type=float, default=0.1, show_default=True)
@click.option("--no-balance", is_flag=True, help="Keep every row instead of undersampling ham to the spam count.")
@click.option(
    "--sha256",
    default=None,
    metavar="HEX|none",
    help="Expected sha256 of the extracted file. Default: the UCI file's for zip sources, none for plain files.",
)
@click.option("--delimiter", default=None, help="Field separator [tab; comma for .csv].")
@click.option(
    "--cache-dir",
    type=LocalFolder(),
    default=None,
    help="Where downloads and extracted files are kept [$SPAMJOB_CACHE/data].",
)
def prepare(source, out, fmt, seed, train_frac, val_frac, no_balance, sha256, delimiter, cache_dir) -> None:
    """Download (or read) the SMS Spam Collection, balance it and split it as the reference does."""
    from spamjob.data import prepare as run_prepare

    result = run_prepare(
        source,
        out,
        seed=seed,
        train_frac=train_frac,
        val_frac=val_frac,
        balanced=not no_balance,
        formats=("csv", "parquet") if fmt == "parquet" else ("csv",),
        sha256=sha256,
        delimiter=delimiter,
        cache=cache_dir,
    )
    click.echo(result.summary())
    click.echo(f"wrote {len(result.files)} files + prepare.json to {out}")


@cli.command()
@click.option("--model", "size", type=SIZE, default="gpt2-small", show_default=True, help="GPT-2 size.")
@click.option(
    "--source",
    type=click.Choice(["hf", "openai"]),
    default="hf",
    show_default=True,
    help="hf: Hugging Face Hub safetensors; openai: OpenAI's TensorFlow checkpoint files.",
)
@click.option(
    "--dir",
    "dest",
    type=LocalFolder(),
    default=None,
    help="Write a self-contained folder usable as --weights DIR (default: the cache only).",
)
@click.option(
    "--cache-dir",
    type=LocalFolder(),
    default=None,
    help="Cache folder [hf: $HF_HUB_CACHE; openai: $SPAMJOB_CACHE/openai].",
)
@click.option(
    "--tokenizer",
    "tokenizer_only",
    is_flag=True,
    help="Fetch only the GPT-2 tokenizer files (encoder.json, vocab.bpe), into --dir or the cache.",
)
@click.option(
    "--data",
    "data_only",
    is_flag=True,
    help="Fetch only the UCI dataset (verified SMSSpamCollection), into --dir or the cache. With "
    "--tokenizer: both, --dir laid out as a spamjob cache (what the tests need).",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Weights, tokenizer and the UCI dataset into one folder (--dir, default the spamjob cache) "
    "laid out as a spamjob cache: copy it to an air-gapped cluster and use `spamjob --offline "
    "--cache DIR ...`.",
)
def download(size, source, dest, cache_dir, tokenizer_only, data_only, everything) -> None:
    """Prefetch GPT-2 weights (or the tokenizer, the dataset, or everything) for offline and air-gapped runs."""
    from spamjob.config import OPENAI_NAMES, canonical_size
    from spamjob.text import fetch_tokenizer
    from spamjob.weights import fetch_hf, fetch_openai

    if everything:
        from spamjob.assets import bundle

        folder = bundle(dest, size, source)
        click.echo(
            f"ready: {folder} (weights, tokenizer, data; see {folder / 'bundle.json'}); "
            f"offline: spamjob --offline --cache {folder} run --out runs/job"
        )
        return
    if tokenizer_only and data_only:
        from spamjob import assets

        found = assets.fetch(dest)
        click.echo(f"ready: {found.dataset} and {found.tokenizer}")
        return
    if data_only:
        from spamjob.data import resolve_source

        folder = resolve_source(None, cache=dest)  # default: $SPAMJOB_CACHE/data
    elif tokenizer_only:
        folder = fetch_tokenizer(dest)
    elif source == "hf":
        folder = fetch_hf(size, cache=cache_dir, local_dir=dest)
    else:
        target = dest or (os.path.join(cache_dir, OPENAI_NAMES[canonical_size(size)]) if cache_dir else None)
        folder = fetch_openai(size, target)
    click.echo(f"ready: {folder}")


@cli.command()
@click.argument("prompt")
@click.option(
    "--weights",
    default="hf",
    show_default=True,
    metavar="hf|openai|random|DIR",
    help="Pretrained source or a local folder (HF or OpenAI layout).",
)
@click.option("--model", "size", type=SIZE, default=None, help="GPT-2 size [gpt2-small; read from a folder's config].")
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=50, show_default=True)
@click.option(
    "--tokenizer",
    type=LocalFolder(),
    default=None,
    help="Folder with encoder.json + vocab.bpe [the weights folder, $SPAMJOB_TOKENIZER, cache].",
)
@click.option("--cache-dir", type=LocalFolder(), default=None, help="Weights cache folder.")
@click.option("--seed", type=int, default=123, show_default=True, help="Seed of --weights random.")
@click.option("--json", "as_json", is_flag=True, help="Print prompt, token ids and text as JSON.")
def generate(prompt, weights, size, max_new_tokens, tokenizer, cache_dir, seed, as_json) -> None:
    """Greedy continuation of PROMPT (the reference's sanity check after loading weights)."""
    import torch

    from spamjob.model import generate_greedy
    from spamjob.text import encode, load_tokenizer
    from spamjob.weights import load_gpt

    if not prompt:
        raise SpamjobError("the prompt is empty")
    model, folder = load_gpt(weights, size, seed=seed, cache=cache_dir)
    tok = load_tokenizer(tokenizer, search=[folder] if folder else [])
    ids = encode(tok, [prompt])[0]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = generate_greedy(model.to(device), torch.tensor([ids], device=device), max_new_tokens)[0].tolist()
    new = out[len(ids) :]
    text = tok.decode(new)
    if as_json:
        click.echo(json.dumps({"prompt": prompt, "prompt_ids": ids, "new_ids": new, "text": prompt + text}))
    else:
        click.echo(prompt + text)


@cli.command()
@from_fields(TrainConfig)
@click.option(
    "--auto-resume",
    is_flag=True,
    help="Resume when OUT holds checkpoints, start fresh otherwise (for requeued cluster jobs).",
)
def train(**options) -> None:
    """Fine-tune GPT-2 as a spam classifier (on all processes `accelerate launch` starts)."""
    from spamjob.train import main as run_train
    from spamjob.train import summary

    metrics = run_train(train_config(**options))
    from accelerate import PartialState

    if PartialState().is_main_process:
        click.echo(summary(metrics, options["out"]))


def train_config(auto_resume: bool = False, **options) -> TrainConfig:
    """`spamjob train` options -> TrainConfig (--auto-resume decided here, from the run folder)."""
    from spamjob.checkpoints import checkpoint_dirs

    if auto_resume:
        options["resume"] = bool(checkpoint_dirs(Path(options["out"])))
    return TrainConfig(**options)


@cli.command()
@click.argument("texts", nargs=-1)
@click.option("--model", "run_dir", required=True, type=LocalFolder(), help="Run folder of `spamjob train`.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per text.")
@click.option(
    "--batch-tokens",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Padded tokens per forward pass.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    metavar="P",
    help="Spam when P(spam) > P [the classifier's operating point; 0.5 is the argmax].",
)
def classify(texts, run_dir, as_json, batch_tokens, threshold) -> None:
    """Label TEXTS (or lines of stdin) as ham or spam with a trained classifier.

    Lines are read as bytes and judged as `spamjob score` judges a message: an empty line or
    one whose bytes are not UTF-8 is not scored (label and probability `-`, or null with
    --json, which also gives the reason in `error`)."""
    from spamjob.scorer import BatchScorer

    raw = [os.fsencode(t) for t in texts] or [line.rstrip(b"\r\n") for line in click.get_binary_stream("stdin")]
    scorer = BatchScorer(run_dir, device="cpu", batch_tokens=batch_tokens, threshold=threshold)
    try:
        rows = scorer.score_messages(raw).to_pylist()
    finally:
        scorer.close()
    for row in rows:
        text = row["text"].decode("utf-8", "replace")
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "text": text,
                        "label": row["prediction"],
                        "spam_probability": row["spam_probability"],
                        "truncated": row["truncated"],
                        "error": row["error"],
                    }
                )
            )
        elif row["error"] is None:
            click.echo(f"{row['prediction']}\t{row['spam_probability']:.4f}\t{text}")
        else:
            click.echo(f"-\t-\t{text}")
    flagged = Counter(row["error"] for row in rows if row["error"] is not None)
    if flagged and not as_json:
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
    1 on bad input or options (nothing is scored then), 2 on usage errors.
    """
    from spamjob.scoring.job import main as run_score
    from spamjob.scoring.report import summary

    report = run_score(ScoreConfig(**params))
    if report.get("rows"):
        click.echo(summary(report, params["out"]))
    elif report.get("pending"):
        click.echo(report["pending"])


@cli.command()
@click.argument("run_dir", type=LocalFolder())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hf", "onnx"]),
    default="hf",
    show_default=True,
    help="hf: a transformers GPT2ForSequenceClassification folder (from_pretrained, pipeline); onnx: "
    "model.onnx with the pooling inside (ONNX Runtime, Triton), checked with onnxruntime.",
)
@click.option("--out", required=True, type=LocalFolder(), help="Folder to write.")
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="onnx: also model.int8.onnx (dynamic int8), with its agreement with fp32 spamjob.",
)
def export(run_dir, fmt, out, quantize) -> None:
    """Write the classifier in RUN_DIR in another library's layout, loadable without spamjob."""
    if fmt == "hf":
        from spamjob.export.hf import export_hf

        if quantize:
            raise SpamjobError("--quantize is for --format onnx")
        export_hf(run_dir, out)
        click.echo(
            f"exported {run_dir} to {out} (hf): AutoModelForSequenceClassification.from_pretrained({out!r}); "
            "tokenize with truncation=True"
        )
        return
    from spamjob.export.onnx import export_onnx

    checks = export_onnx(run_dir, out, quantize)["checked_with_onnxruntime"]
    line = (
        f"exported {run_dir} to {out}/model.onnx: ONNX Runtime matches spamjob within "
        f"{checks['fp32']['max_abs_diff']:.1e} on {checks['fp32']['messages']} messages"
    )
    if "int8" in checks:
        line += f"; model.int8.onnx agrees on {checks['int8']['agreement'] * 100:.2f}% of labels"
    click.echo(line)


@cli.command()
@click.argument("run_dir", type=LocalFolder())
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repository private (an existing one keeps its visibility).")
def push(run_dir, repo_id, private) -> None:
    """Upload the classifier in RUN_DIR to the Hugging Face Hub as REPO_ID (OWNER/NAME): its
    transformers export and model card, one commit. Token: $HF_TOKEN or `hf auth login`."""
    from spamjob.export.hub import push as upload

    done = upload(run_dir, repo_id, private)
    click.echo(
        f"pushed {run_dir} to {done.repo_url} ({len(done.files)} files: {', '.join(done.files)}); "
        f"commit {done.commit_url}"
    )


@cli.command("report")
@click.argument("folder", type=LocalFolder())
@click.option(
    "--label-column", default=None, help="Column of ham/spam or 0/1 labels: adds accuracy, precision, recall, F1."
)
def report_cmd(folder, label_column) -> None:
    """Recount FOLDER/predictions/ (written by `spamjob score`, `--engine ray` or Spark) into
    FOLDER/report.json, report.md and report.png, with the counts `spamjob score` reports."""
    from spamjob.scoring.recount import recount
    from spamjob.scoring.report import summary

    click.echo(summary(recount(folder, label_column), folder, recounted=True))


@cli.command()
@click.option(
    "--out",
    required=True,
    type=LocalFolder(),
    help="Job folder: data/, model/, scored/ (predictions and report), run.json.",
)
@click.option("--source", default=None, metavar="URL|ZIP|FILE", help="Dataset [the UCI zip].")
@click.option(
    "--train-args",
    default="",
    metavar="'OPTIONS'",
    help="`spamjob train` options, quoted (e.g. '--epochs 3 --weights random').",
)
@click.option(
    "--score-args", default="", metavar="'OPTIONS'", help="`spamjob score` options, quoted (e.g. '--quantize int8')."
)
def run(out, source, train_args, score_args) -> None:
    """The main job: fetch, prepare, fine-tune, score the test split, report.

    Defaults: the UCI dataset, gpt2-small pretrained weights from the Hub, the default
    recipe. Stages finished before are skipped (a killed training resumes), so rerunning
    the same command finishes the job. With no network and nothing cached it stops before
    any work, naming what is missing and how to fetch it.
    """
    from spamjob.pipeline import JobPaths
    from spamjob.pipeline import run as run_job

    paths = JobPaths(Path(out))
    train_opts = _stage_options(train, shlex.split(train_args), {"data": paths.data, "out": paths.model})
    if train_opts["source"] is not None:
        raise SpamjobError("give the data source as `spamjob run --source`, not among the training options")
    train_opts.pop("auto_resume")  # `run` always resumes a killed training
    score_opts = _stage_options(
        score, [str(paths.test_split), *shlex.split(score_args)], {"model": paths.model, "out": paths.scored}
    )
    summary = run_job(out, source, TrainConfig(**train_opts), ScoreConfig(**score_opts))
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
