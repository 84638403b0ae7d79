"""spamjob.training.job: the artifact, the reference recipe, the prefix cache, two ranks, resume, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support import TWO_CPU_RANKS

from spamjob.cli import cli
from spamjob.config import GPTConfig
from spamjob.model import GPTModel, SpamClassifier, first_trainable_block, freeze, replace_head
from spamjob.scoring.runtimes.pytorch import spam_probability
from spamjob.text import pad_batch
from spamjob.training.loaders import PrefixCache

REPO = Path(__file__).resolve().parents[2]
TINY = ["--weights", "random", "--n-layers", "2", "--emb-dim", "32", "--n-heads", "2"]


def train(*args: str, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *python, "-m", "spamjob.cli", "train", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def imports_and_run_dir(data_dir, tmp_path_factory) -> tuple[set[str], Path]:
    """A one-epoch run through the CLI (a checkpoint included) and the modules it imported."""
    out = tmp_path_factory.mktemp("run") / "r"
    r = train("--data", str(data_dir), *TINY, "--epochs", "1", "--out", str(out), python=("-X", "importtime"))
    assert r.returncode == 0, r.stderr
    assert "accuracy: train" in r.stdout and f"in {out}" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return imported, out


@pytest.fixture(scope="module")
def run_dir(imports_and_run_dir) -> Path:
    return imports_and_run_dir[1]


def test_one_process_training_imports_neither_torch_dynamo_nor_dtensor(imports_and_run_dir):
    """torch.optim's wrappers and accelerate's DTensor and torch.compile checks would import them:
    ~0.9 s of a 4-layer CPU fine-tune's ~7 s (benchmarks/RESULTS.md)."""
    imported = imports_and_run_dir[0]
    assert {"torch", "accelerate", "spamjob.training.optimizer"} <= imported
    assert not imported & {"torch._dynamo", "torch.distributed.tensor", "sympy"}


def test_artifact_files(run_dir, data_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "metrics.json",
        "history.jsonl",
        "loss.png",
        "accuracy.png",
        "tokenizer",
        "checkpoints",
    } <= names
    assert not [p for p in run_dir.iterdir() if p.suffix in (".pkl", ".bin", ".pt")]  # no pickle for users
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["max_length"] == 120 and cfg["labels"] == ["ham", "spam"] and cfg["tokenizer"]["pad_id"] == 50256
    assert cfg["pooling"] == "last-token" and cfg["padding"] == "dynamic"
    assert cfg["architecture"]["n_layers"] == 2 and cfg["training"]["epochs"] == 1 and cfg["spamjob_version"]
    assert set(cfg["data"]["sha256"]) == {"train.csv", "validation.csv", "test.csv"}
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["num_processes"] == 1
    assert (m["train"]["examples"], m["validation"]["examples"], m["test"]["examples"]) == (1045, 149, 300)
    assert m["wall_time_s"] > 0 and m["train_examples_per_s"] > 0 and m["prefix_cache"]["used"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if h["kind"] == "eval"] == [0, 50, 100]
    assert history[-1]["kind"] == "epoch" and history[-1]["examples_seen"] == 1040
    for png in ("loss.png", "accuracy.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classify_cli(run_dir):
    r = CliRunner().invoke(cli, ["classify", "--model", str(run_dir), "WIN a free prize now!!", "see you at 5"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("ham", "spam") for line in lines)
    r = CliRunner().invoke(cli, ["classify", "--model", str(run_dir), "--json"], input="one\ntwo <|endoftext|>\n")
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["text"] for row in rows] == ["one", "two <|endoftext|>"]
    assert all(0.0 <= row["spam_probability"] <= 1.0 and row["truncated"] is False for row in rows)
    r = CliRunner().invoke(cli, ["classify", "--model", str(run_dir.parent), "x"])
    assert r.exit_code == 1 and "is not a trained classifier" in r.output


def test_classify_reads_stdin_as_bytes_and_flags_what_score_flags(run_dir):
    """Undecodable and empty lines are not scored (as `spamjob score` flags them); no traceback."""
    stdin = b"\xff\xfe bad \x00 prize\nwin cash now\r\n\n"
    r = CliRunner().invoke(cli, ["classify", "--model", str(run_dir), "--json"], input=stdin)
    assert r.exit_code == 0 and r.exception is None, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["text"], row["label"], row["error"]) for row in rows] == [
        ("\ufffd\ufffd bad \x00 prize", None, "invalid UTF-8 in text"),
        ("win cash now", rows[1]["label"], None),
        ("", None, "empty text"),
    ]
    assert rows[1]["label"] in ("ham", "spam") and rows[0]["spam_probability"] is None
    r = CliRunner().invoke(cli, ["classify", "--model", str(run_dir)], input=stdin)
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "-\t-\t\ufffd\ufffd bad \x00 prize"
    assert r.stderr.strip().splitlines()[-1] == (
        "2 of 3 lines not scored (invalid UTF-8 in text: 1, empty text: 1); --json gives each reason"
    )


GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "book-ch06-random-init.json").read_text())


def _fingerprint_matches(params: dict, golden: dict) -> None:
    assert set(params) == set(golden)
    for name, g in golden.items():
        p = params[name].detach().double()
        assert list(p.shape) == g["shape"], name
        assert p.sum().item() == pytest.approx(g["sum"], rel=1e-9, abs=1e-9), name
        assert (p * p).sum().item() == pytest.approx(g["sum_sq"], rel=1e-9), name


@pytest.mark.parametrize("golden", GOLDEN["runs"], ids=lambda g: f"{g['config']['n_layers']}x{g['config']['emb_dim']}")
def test_reference_preset_reproduces_the_book(golden, data_dir, tmp_path):
    """The book's chapter-6 code, run with random weights, printed these figures (tests/golden/README.md says which)."""
    from spamjob.config import TrainConfig
    from spamjob.training.job import main
    from spamjob.weights import load_gpt

    arch = {k: golden["config"][k] for k in ("n_layers", "emb_dim", "n_heads")}
    gpt, _ = load_gpt("random", seed=123, **arch)  # what `--weights random --seed 123` builds
    _fingerprint_matches(dict(gpt.named_parameters()), golden["init_fingerprint"])
    replace_head(gpt, 2, seed=123)
    _fingerprint_matches(dict(gpt.out_head.named_parameters(prefix="out_head")), golden["head_fingerprint"])
    assert (
        sum(p.numel() for p in freeze(gpt, "last-block").parameters() if p.requires_grad) == golden["trainable_params"]
    )

    out = tmp_path / "r"
    m = main(
        TrainConfig(
            data=str(data_dir), out=str(out), weights="random", epochs=golden["epochs"], preset="reference", **arch
        )
    )
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    evals = [h for h in hist if h["kind"] == "eval"]
    assert [h["step"] for h in evals] == golden["eval_steps"]
    torch.testing.assert_close([h["train_loss"] for h in evals], golden["train_losses"], atol=1e-5, rtol=0)
    torch.testing.assert_close([h["val_loss"] for h in evals], golden["val_losses"], atol=1e-5, rtol=0)
    assert [h["train_acc"] for h in hist if h["kind"] == "epoch"] == golden["epoch_train_acc_5_batches"]
    assert [h["val_acc"] for h in hist if h["kind"] == "epoch"] == golden["epoch_val_acc_5_batches"]
    # Whole splits: training accuracy over all 1,045 rows (not the book's shuffled drop_last loader).
    for ours, theirs in (("train", "train"), ("validation", "val"), ("test", "test")):
        assert m[ours]["examples"] == golden["final_rows_all_rows"][theirs]
        assert m[ours]["accuracy"] == golden["final_acc_all_rows"][theirs], ours
    assert (m["examples_seen"], m["steps"], m["max_length"]) == (
        golden["examples_seen"],
        golden["optimizer_steps"],
        golden["max_length"],
    )
    batch_size = json.loads((out / "config.json").read_text())["training"]["batch_size"]
    batches = {
        "train": m["steps"] // golden["epochs"],
        "val": -(-m["validation"]["examples"] // batch_size),
        "test": -(-m["test"]["examples"] // batch_size),
    }
    assert batches == golden["batches"]


@pytest.mark.parametrize("policy", ["head", "last-block", "last-two-blocks"])
@pytest.mark.parametrize("pooling, padding", [("last", "fixed"), ("last-token", "dynamic"), ("last-token", "fixed")])
def test_prefix_cache_gives_the_plain_logits(policy, pooling, padding):
    torch.manual_seed(0)
    gpt = freeze(replace_head(GPTModel(GPTConfig(context_length=40, emb_dim=32, n_heads=4, n_layers=4))), policy)
    start = first_trainable_block(gpt)
    ids = [torch.randint(0, 50000, (n,)).tolist() for n in (5, 17, 1, 30, 9, 12)]
    max_length = 30
    widths = [max_length if padding == "fixed" else len(s) for s in ids]
    cache = PrefixCache.build(gpt, ids, widths, start, torch.device("cpu"), contextlib.nullcontext, batch_tokens=64)
    for rows in ([0, 1, 2], [3, 4, 5], [2, 5]):
        b = pad_batch([ids[i] for i in rows], max_length, padding=padding)
        with torch.no_grad():
            plain = SpamClassifier(gpt, pooling)(b.input_ids, b.lengths)
            cached = SpamClassifier(gpt, pooling)(lengths=b.lengths, hidden=cache.gather(rows), start=start)
            reference = SpamClassifier(gpt, pooling, pooled_only=False)(b.input_ids, b.lengths)
            whole = gpt(b.input_ids)[torch.arange(len(rows)), b.lengths - 1 if pooling == "last-token" else -1]
        torch.testing.assert_close(cached, plain, atol=1e-5, rtol=0)
        torch.testing.assert_close(reference, plain, atol=1e-5, rtol=0)
        torch.testing.assert_close(whole, plain, atol=1e-5, rtol=0)


def test_cached_and_plain_runs_agree(data_dir, tmp_path):
    from spamjob.config import TrainConfig
    from spamjob.training.job import main

    base = dict(data=str(data_dir), weights="random", n_layers=3, emb_dim=32, n_heads=2, epochs=1)
    cached = main(TrainConfig(out=str(tmp_path / "c"), **base))
    plain = main(TrainConfig(out=str(tmp_path / "p"), prefix_cache="off", compute="reference", **base))
    assert cached["prefix_cache"]["used"] and cached["prefix_cache"]["start_block"] == 2
    assert not plain["prefix_cache"]["used"]
    for split in ("train", "validation", "test"):
        assert cached[split]["accuracy"] == pytest.approx(plain[split]["accuracy"], abs=1 / 300)
        assert cached[split]["loss"] == pytest.approx(plain[split]["loss"], abs=1e-3)


def _launch(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_two_cpu_ranks_count_each_example_once(data_dir, tmp_path):
    out = tmp_path / "r2"
    r = _launch(
        [
            *TWO_CPU_RANKS,
            "jobs/finetune.py",
            "--data",
            str(data_dir),
            *TINY,
            "--epochs",
            "1",
            "--out",
            str(out),
        ],
        env={"ACCELERATE_USE_CPU": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_processes"] == 2
    assert (m["train"]["examples"], m["validation"]["examples"], m["test"]["examples"]) == (1045, 149, 300)
    assert m["examples_seen"] == 2 * 8 * ((1045 // 2) // 8)  # both ranks' batches
    assert r.stdout.count("accuracy: train") == 1  # only the main process prints the summary
    assert m["prefix_cache"]["used"]


@pytest.mark.slow
def test_launcher_script_uses_real_ranks(data_dir, tmp_path):
    r = _launch(
        ["bash", "jobs/finetune.sh", "--data", str(data_dir), *TINY, "--epochs", "1", "--out", str(tmp_path / "r")],
        env={"SPAMJOB_CPU_PROCESSES": "2", "SPAMJOB_GPUS": "0"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--multi_gpu --num_processes 2" in r.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["num_processes"] == 2
    r = _launch(
        ["bash", "jobs/finetune.sh", "--out", "x"],
        env={
            "SPAMJOB_DRY_RUN": "1",
            "SPAMJOB_GPUS": "0",
            "NUM_MACHINES": "2",
            "MACHINE_RANK": "1",
            "MAIN_PROCESS_IP": "10.0.0.1",
        },
    )
    assert r.returncode == 0
    assert "--num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.1 --main_process_port 29500" in r.stderr
    assert "--multi_gpu --num_processes 2" in r.stderr


def test_resume_after_sigkill_matches_uninterrupted(data_dir, tmp_path):
    # Bit-equal results need equal thread counts (float sums in another order differ in the last
    # digits); without --threads the count follows the machine's load, which other jobs change.
    args = ["--data", str(data_dir), *TINY, "--epochs", "2", "--eval-freq", "40", "--threads", "2"]
    full = train(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = subprocess.run(
        [sys.executable, "-m", "spamjob.cli", "train", *args, "--out", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        env={**os.environ, "SPAMJOB_KILL_AFTER_EPOCH": "1"},
    )
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "k" / "checkpoints" / "epoch-1").is_dir() and not (tmp_path / "k" / "metrics.json").exists()
    again = train(*args, "--out", str(tmp_path / "k"))
    assert again.returncode == 1 and "pass --resume" in again.stderr
    resumed = train(*args, "--out", str(tmp_path / "k"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr + resumed.stdout
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "k"))
    for split in ("train", "validation", "test"):
        assert a[split] == b[split]
    assert a["examples_seen"] == b["examples_seen"] and a["steps"] == b["steps"]
    ha, hb = ((tmp_path / d / "history.jsonl").read_text() for d in ("full", "k"))
    assert ha == hb
    assert [p.name for p in (tmp_path / "k" / "checkpoints").iterdir() if p.is_dir()] == ["epoch-2"]
    changed = train(*args, "--lr", "1e-3", "--out", str(tmp_path / "k"), "--resume")
    assert changed.returncode == 1 and "differ from the checkpointed run: lr" in changed.stderr


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        ("missing-split", [], "has no validation.csv or validation.parquet"),
        ("empty-split", [], "split test in"),
        ("ok", ["--context-length", "64"], "max_length 120 (longest training message: 120 tokens) exceeds"),
        ("ok", ["--resume"], "--resume: no completed epoch checkpoint"),
        ("ok", ["--weights", "hf"], "--n-layers, --emb-dim, --n-heads only apply to --weights random"),
        ("ok", ["--batch-size", "2000"], "less than one batch of 2000"),
        ("ok", ["--threshold-rule", "precision>=1.5"], "threshold-rule must be f1 | precision>=X"),
        ("no-dir", [], "is not a folder; run `spamjob prepare"),
    ],
)
def test_bad_input(data_dir, tmp_path, setup, extra, message):
    import shutil

    d = tmp_path / "d"
    if setup != "no-dir":
        shutil.copytree(data_dir, d)
    if setup == "missing-split":
        (d / "validation.csv").unlink()
    if setup == "empty-split":
        (d / "test.csv").write_text("Label,Text\n")
    args = ["--data", str(d), *TINY, "--epochs", "1", "--out", str(tmp_path / "o"), *extra]
    if "--weights" in extra:
        args = args[:2] + extra + args[2:]  # the later --weights wins
    r = CliRunner().invoke(cli, ["train", *args])
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_lora_merges_into_a_plain_artifact(data_dir, tmp_path):
    r = train(
        "--data",
        str(data_dir),
        *TINY,
        "--epochs",
        "1",
        "--trainable",
        "lora",
        "--lora-rank",
        "4",
        "--out",
        str(tmp_path / "l"),
    )
    assert r.returncode == 0, r.stderr
    from safetensors import safe_open

    with safe_open(tmp_path / "l" / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]
        merged = {k: f.get_tensor(k) for k in f.keys()}
    # Every adapter trained, the pooled last block's key and value adapters too (a LoRA
    # adapter that got no gradient keeps B = 0 and merges to exactly the base weight).
    from spamjob.weights import load_gpt

    base, _ = load_gpt("random", None, n_layers=2, emb_dim=32, n_heads=2, seed=123)
    for name in ("W_q", "W_k", "W_v", "out_proj"):
        key = f"transformer_blocks.1.attention.{name}.weight"
        assert not torch.equal(merged[key], base.state_dict()[key]), key
    from spamjob.artifact import load_classifier

    clf = load_classifier(tmp_path / "l")
    assert clf.config["training"]["trainable"] == "lora"
    probs, _ = spam_probability(clf, ["hello", "free entry to win"])
    assert len(probs) == 2
    m = json.loads((tmp_path / "l" / "metrics.json").read_text())
    assert not m["prefix_cache"]["used"]


def test_jobs_script_runs_the_train_command_standalone(tmp_path):
    """jobs/finetune.py is `spamjob train` on its own: the same one-line errors and usage errors."""
    bad = ["--data", str(tmp_path), "--source", "x.zip", "--out", str(tmp_path / "o")]
    job = subprocess.run([sys.executable, "jobs/finetune.py", *bad], capture_output=True, text=True, cwd=REPO)
    cli_run = train(*bad)
    assert job.returncode == cli_run.returncode == 1
    assert job.stderr == cli_run.stderr == "Error: give --data or --source, not both\n"
    usage = subprocess.run(
        [sys.executable, "jobs/finetune.py", "--epochs", "zero"], capture_output=True, text=True, cwd=REPO
    )
    assert usage.returncode == 2 and "Usage: finetune.py [OPTIONS]" in usage.stderr
    assert "'zero' is not a valid integer" in usage.stderr and "Traceback" not in usage.stderr
