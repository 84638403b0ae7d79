"""`spamjob run` and air-gapped bundles: the main job end to end, resume, fail fast offline."""

from __future__ import annotations

import json
import signal

import pytest
from support import Server, asset_routes, asset_urls, hub_headers, spamjob, tiny_hf_model, tokenizer_bytes, write_hf_dir

TINY_TRAIN = "--weights random --n-layers 2 --emb-dim 32 --n-heads 2"


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_run_end_to_end_then_resume_after_kill(sms_path, tmp_path):
    out = tmp_path / "job"
    args = [
        "--offline",
        "run",
        "--out",
        str(out),
        "--source",
        str(sms_path),
        "--train-args",
        f"{TINY_TRAIN} --epochs 2",
        "--score-args",
        "--format csv",
    ]
    killed = spamjob(*args, env={"SPAMJOB_KILL_AFTER_EPOCH": "1"})
    assert killed.returncode == -signal.SIGKILL
    assert (out / "data" / "prepare.json").is_file() and not (out / "model" / "metrics.json").exists()
    r = spamjob(*args)
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["stages"] == {"fetch": "done", "prepare": "skipped (done before)", "train": "resumed", "score": "done"}
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    report = json.loads((out / "scored" / "report.json").read_text())
    op = metrics["operating_point"]
    assert report["accuracy"] == op["test"]["accuracy"] == run["test_accuracy"]
    assert report["labels"]["at_0.5"]["accuracy"] == metrics["test"]["accuracy"]
    assert run["threshold"] == op["threshold"] == report["threshold"]["value"]
    assert report["rows"]["read"] == 300 and list((out / "scored" / "predictions").glob("*.csv"))
    assert "test accuracy" in r.stdout and str(out / "scored" / "report.md") in r.stdout
    again = spamjob(*args)
    assert again.returncode == 0 and "train: skipped (done before)" in again.stdout


def test_run_with_nothing_cached_offline_fails_before_any_work(tmp_path):
    out = tmp_path / "job"
    r = spamjob(
        "--offline",
        "--cache",
        str(tmp_path / "empty"),
        "run",
        "--out",
        str(out),
        env={"HF_HOME": str(tmp_path / "hf")},
        drop=("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR"),
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "gpt2-small weights" in lines[0] and "spamjob download" in lines[0]
    assert not out.exists()  # stopped before any work; never fell back to random weights


def test_run_rejects_options_it_sets_itself(tmp_path):
    r = spamjob("run", "--out", str(tmp_path / "j"), "--train-args", "--out elsewhere")
    assert r.returncode == 1 and "sets --out itself" in r.stderr
    r = spamjob("run", "--out", str(tmp_path / "j"), "--train-args", "--epochs zero")
    assert r.returncode == 1 and "bad train option" in r.stderr


@pytest.mark.slow  # an end-to-end check: the slow suite keeps the default one under 5 minutes
def test_air_gapped_round_trip(assets, tmp_path):
    # Where there is network (here: local servers standing in for the Hub, OpenAI and UCI).
    ckpt = write_hf_dir(tiny_hf_model(seed=9, n_layer=2, n_embd=32, n_head=2, n_positions=256), tmp_path / "ckpt")
    hub = {f"/openai-community/gpt2/resolve/main/{p.name}": p.read_bytes() for p in ckpt.iterdir()}
    tok = tokenizer_bytes(assets)
    hub["/openai-community/gpt2/resolve/main/vocab.json"] = tok["encoder.json"]
    hub["/openai-community/gpt2/resolve/main/merges.txt"] = tok["vocab.bpe"]
    routes = {**hub, **asset_routes(assets)}
    bundle = tmp_path / "bundle"
    no_local = ("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR")
    with Server(routes, headers=lambda p: hub_headers(p, routes) if p.startswith("/openai") else {}) as srv:
        r = spamjob(
            "download",
            "--all",
            "--dir",
            str(bundle),
            drop=no_local,
            env={"HF_ENDPOINT": srv.url, "HF_HOME": str(tmp_path / "hf1"), **asset_urls(srv)},
        )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert {"hf/gpt2-small/model.safetensors", "gpt2-tokenizer/vocab.bpe", "data/SMSSpamCollection"} <= set(
        manifest["files"]
    )

    # On the cluster: no network, nothing but the bundle.
    out = tmp_path / "job"
    r = spamjob(
        "--offline",
        "--cache",
        str(bundle),
        "run",
        "--out",
        str(out),
        "--train-args",
        "--epochs 1",
        drop=no_local,
        env={"HF_HOME": str(tmp_path / "hf2"), "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["base_weights"] == {"source": "hf", "folder": str(bundle / "hf" / "gpt2-small")}
    assert json.loads((out / "run.json").read_text())["test_accuracy"] is not None
