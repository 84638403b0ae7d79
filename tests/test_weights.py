"""spamjob.weights: the same function as transformers' GPT-2 for checkpoints in every upstream layout."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import (
    TWO_CPU_RANKS,
    Server,
    flip_byte,
    hf_greedy,
    hub_headers,
    tiny_hf_model,
    tokenizer_bytes,
    write_hf_dir,
    write_hub_dir,
    write_openai_dir,
)

from spamjob.errors import SpamjobError
from spamjob.fsutil import sha256_file
from spamjob.model import generate_greedy
from spamjob.weights import detect_layout, fetch_hf, fetch_openai, load_folder, load_gpt, read_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_model(seed=3, n_layer=2, n_embd=32, n_head=4, n_positions=64)


@pytest.fixture(scope="module")
def layouts(hf_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "save_pretrained": write_hf_dir(hf_model, root / "hf"),
        "hub": write_hub_dir(hf_model, root / "hub"),
        "openai": write_openai_dir(hf_model, root / "openai"),
    }


def test_layouts_are_what_upstream_writes(layouts):
    from safetensors import safe_open

    with safe_open(layouts["save_pretrained"] / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "transformer.h.0.attn.c_attn.weight" in keys and "lm_head.weight" not in keys
    with safe_open(layouts["hub"] / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "h.0.attn.c_attn.weight" in keys and "h.1.attn.bias" in keys and "wte.weight" in keys
    assert detect_layout(layouts["save_pretrained"]) == detect_layout(layouts["hub"]) == "hf"
    assert detect_layout(layouts["openai"]) == "openai"


@pytest.mark.parametrize("layout", ["save_pretrained", "hub", "openai"])
def test_logits_equal_transformers(hf_model, layouts, layout):
    model = load_folder(layouts[layout]).eval()
    cfg = model.cfg
    assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads, cfg.context_length, cfg.vocab_size) == (32, 2, 4, 64, 50257)
    torch.manual_seed(0)
    for shape in ((1, 1), (2, 17), (3, 64)):
        ids = torch.randint(0, 50257, shape)
        with torch.no_grad():
            ours, theirs = model(ids), hf_model(ids).logits
        assert ours.abs().max() > 1  # not a degenerate comparison
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["save_pretrained", "openai"])
def test_greedy_continuation_equals_transformers_generate(hf_model, layouts, layout, tokenizer):
    ids = tokenizer.encode_ordinary("Every effort moves you")
    expected = hf_greedy(hf_model, ids, 15)
    assert len(set(expected)) > 3  # a varied continuation, not one token repeated
    model = load_folder(layouts[layout])
    out = generate_greedy(model, torch.tensor([ids]), 15)[0, len(ids) :].tolist()
    assert out == expected


def test_config_is_read_from_the_checkpoint(layouts):
    for folder in layouts.values():
        assert read_config(folder).shape() == "32 dims, 2 layers, 4 heads"


def test_size_conflict_and_custom_dims_are_errors(layouts):
    with pytest.raises(SpamjobError, match=r"--model gpt2-small \(768 dims, 12 layers, 12 heads\) conflicts"):
        load_gpt(str(layouts["hub"]), "gpt2-small")
    with pytest.raises(SpamjobError, match="--n-layers only apply to --weights random"):
        load_gpt(str(layouts["hub"]), n_layers=2)
    with pytest.raises(SpamjobError, match="neither hf, openai, random nor an existing folder"):
        load_gpt("/no/such/folder")


def test_random_weights_are_seeded_and_custom():
    a, folder = load_gpt("random", n_layers=2, emb_dim=64, n_heads=2, context_length=128, seed=5)
    b, _ = load_gpt("random", n_layers=2, emb_dim=64, n_heads=2, context_length=128, seed=5)
    assert folder is None and a.cfg.shape() == "64 dims, 2 layers, 2 heads" and a.cfg.context_length == 128
    torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)


def test_broken_checkpoints(layouts, tmp_path):
    with pytest.raises(SpamjobError, match="neither a Hugging Face folder"):
        detect_layout(tmp_path)
    bad = shutil.copytree(layouts["save_pretrained"], tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(SpamjobError, match="checkpoint lacks tensor 'h.2.attn.c_attn.weight'"):
        load_folder(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    with pytest.raises(SpamjobError, match="do not fit|lacks|split"):
        load_folder(bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpamjobError, match="cannot read"):
        load_folder(bad)


def test_openai_checkpoint_without_tensorflow_is_a_clear_error(layouts, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises ImportError
    with pytest.raises(SpamjobError, match=r"needs TensorFlow: pip install 'spamjob\[tf\]'"):
        load_folder(layouts["openai"])


def _hub_routes(folder: Path, repo: str, tok: dict[str, bytes]) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    files["vocab.json"] = tok["encoder.json"]
    files["merges.txt"] = tok["vocab.bpe"]
    return {f"/{repo}/resolve/main/{name}": data for name, data in files.items()}


def test_hf_download_cache_and_offline(assets, layouts, hf_model, tmp_path, monkeypatch):
    routes = _hub_routes(layouts["hub"], "openai-community/gpt2", tokenizer_bytes(assets))
    cache = tmp_path / "hub-cache"
    with Server(routes, headers=lambda p: hub_headers(p, routes)) as srv:
        folder = fetch_hf("gpt2-small", cache=cache, endpoint=srv.url)
        local = fetch_hf("124M", local_dir=tmp_path / "plain", endpoint=srv.url)
    assert (cache / "models--openai-community--gpt2").is_dir()  # HF cache layout
    assert sorted(p.name for p in local.iterdir() if p.is_file()) == [
        "config.json",
        "merges.txt",
        "model.safetensors",
        "vocab.json",
    ]
    torch.testing.assert_close(load_folder(folder).state_dict(), load_folder(local).state_dict())
    # Offline: the cache answers; an empty cache is a one-line error naming the fix.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_hf("gpt2-small", cache=cache) == folder
    with pytest.raises(SpamjobError) as e:
        fetch_hf("gpt2-medium", cache=cache)
    assert "spamjob download --model gpt2-medium --source hf" in str(e.value) and "\n" not in str(e.value)


def test_openai_download_from_local_server(assets, layouts, tmp_path, monkeypatch):
    files = {p.name: p.read_bytes() for p in layouts["openai"].iterdir()}
    files.update(tokenizer_bytes(assets))
    routes = {f"/models/124M/{n}": b for n, b in files.items()}
    with Server(routes) as srv:
        monkeypatch.setenv("SPAMJOB_OPENAI_URL", srv.url + "/models")
        folder = fetch_openai("gpt2-small", tmp_path / "124M", progress=False)
        fetch_openai("gpt2-small", tmp_path / "124M", progress=False)  # present: nothing fetched again
        assert all(n == 1 for n in srv.hits.values()) and len(srv.hits) == 7
    assert load_folder(folder).cfg.shape() == "32 dims, 2 layers, 4 heads"
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    with pytest.raises(SpamjobError, match="spamjob download --model gpt2-medium --source openai"):
        fetch_openai("gpt2-medium", tmp_path / "355M")


def _launch_two_ranks(args: list[str], env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *TWO_CPU_RANKS,
            "jobs/finetune.py",
            *args,
        ],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
        **popen,
    )


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once (torch's launcher starts its ranks in
    sessions of their own, out of reach of a process-group kill)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _fetching_run(tmp_path: Path, srv: Server, weights: str, data_dir: Path) -> tuple[list[str], dict]:
    """`spamjob train --weights WEIGHTS` on two CPU ranks with empty caches, fetching from `srv`."""
    env = {
        "ACCELERATE_USE_CPU": "1",
        "SPAMJOB_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "SPAMJOB_OPENAI_URL": srv.url + "/models",
        "HF_ENDPOINT": srv.url,
    }
    args = [
        "--data",
        str(data_dir),
        "--weights",
        weights,
        "--max-length",
        "60",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    return args, env


@pytest.mark.slow
def test_two_ranks_fetch_each_openai_file_once_and_resume_after_a_kill(assets, layouts, data_dir, tmp_path):
    """Both ranks build the model; the first to take each file's lock downloads it, the other waits
    and checks it. A SIGKILL mid-file leaves its .part, which the rerun continues (Range) and checks."""
    files = {**{p.name: p.read_bytes() for p in layouts["openai"].iterdir()}, **tokenizer_bytes(assets)}
    routes = {f"/models/124M/{n}": b for n, b in files.items()}
    data = "/models/124M/model.ckpt.data-00000-of-00001"
    part = tmp_path / "cache" / "openai" / "124M" / "model.ckpt.data-00000-of-00001.part"
    with Server(routes) as srv:
        args, env = _fetching_run(tmp_path, srv, "openai", data_dir)
        srv.slow[data] = 0.05
        killed = _launch_two_ranks(args, env)
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size >= 1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        _kill_tree(killed.pid)
        _, err = killed.communicate(timeout=60)
        assert part.exists(), err[-3000:]
        had = part.stat().st_size
        assert 0 < had < len(files[data.rsplit("/", 1)[1]])
        srv.slow.clear()
        again = _launch_two_ranks(args, env)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-3000:]
        assert srv.starts[data] == [0, had]  # once whole (killed), then only the rest
        assert all(n == 1 for path, n in srv.hits.items() if path != data) and len(srv.hits) == len(routes)
    folder = tmp_path / "cache" / "openai" / "124M"
    assert {n: (folder / n).read_bytes() for n in files} == files  # every file whole
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["num_processes"] == 2


@pytest.mark.slow
def test_two_ranks_fetch_each_hub_file_once(assets, layouts, data_dir, tmp_path):
    routes = _hub_routes(layouts["hub"], "openai-community/gpt2", tokenizer_bytes(assets))
    with Server(routes, headers=lambda p: hub_headers(p, routes)) as srv:
        args, env = _fetching_run(tmp_path, srv, "hf", data_dir)
        run = _launch_two_ranks(args, env)
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        assert srv.hits == {path: 1 for path in routes}


def test_a_damaged_hub_cache_file_is_fetched_again_and_offline_is_one_line(
    assets, layouts, tmp_path, capsys, monkeypatch
):
    """A file of the Hugging Face cache is checked against the digest its blob is named after (the
    sha256 of model.safetensors, git's sha1 of config.json) before it is used."""
    routes = _hub_routes(layouts["hub"], "openai-community/gpt2", tokenizer_bytes(assets))
    cache = tmp_path / "hub-cache"
    with Server(routes, headers=lambda p: hub_headers(p, routes)) as srv:
        folder = fetch_hf("gpt2-small", cache=cache, endpoint=srv.url)
        want = load_folder(folder).state_dict()
        flip_byte(folder / "model.safetensors")
        capsys.readouterr()
        assert fetch_hf("gpt2-small", cache=cache, endpoint=srv.url) == folder
        assert "note: openai-community/gpt2/model.safetensors in the cache is damaged" in capsys.readouterr().out
        torch.testing.assert_close(load_folder(folder).state_dict(), want)
    flip_byte(folder / "config.json", at=0.1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpamjobError, match=r"^offline .* and .*config.json does not match the digest") as e:
        fetch_hf("gpt2-small", cache=cache)
    assert "\n" not in str(e.value)


def test_a_damaged_bundle_is_fetched_again_and_offline_is_one_line(assets, layouts, tmp_path, capsys, monkeypatch):
    """`spamjob download --all`'s weights are checked against the sha256 bundle.json recorded."""
    import huggingface_hub.constants

    from spamjob.weights import resolve_weights

    routes = _hub_routes(layouts["hub"], "openai-community/gpt2", tokenizer_bytes(assets))
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "bundle"))
    with Server(routes, headers=lambda p: hub_headers(p, routes)) as srv:
        template = srv.url + "/{repo_id}/resolve/{revision}/{filename}"  # as HF_ENDPOINT=srv.url at import
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        folder = fetch_hf("gpt2-small", local_dir=tmp_path / "bundle" / "hf" / "gpt2-small")
        files = {f"hf/gpt2-small/{p.name}": sha256_file(p) for p in folder.iterdir() if p.is_file()}
        (tmp_path / "bundle" / "bundle.json").write_text(json.dumps({"files": files}))
        assert resolve_weights("hf") == folder
        flip_byte(folder / "model.safetensors")
        capsys.readouterr()
        assert (
            resolve_weights("hf") == folder
            and sha256_file(folder / "model.safetensors") == files["hf/gpt2-small/model.safetensors"]
        )
        assert "(hf/gpt2-small/model.safetensors differs from bundle.json); fetching" in capsys.readouterr().out
    flip_byte(folder / "config.json")
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    with pytest.raises(SpamjobError, match=r"hf/gpt2-small/config.json differs from bundle.json: copy the bundle"):
        resolve_weights("hf")
