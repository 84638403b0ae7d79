"""Test helpers: a local HTTP server and tiny GPT-2 checkpoints written in the upstream layouts.

Run as a script to write fresh checkpoints for a manual check:
    python tests/support.py OUT_DIR [--seed N]   # writes OUT_DIR/hf and OUT_DIR/openai
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from click.testing import CliRunner

from spamjob import assets as spamjob_assets
from spamjob.cli import cli
from spamjob.errors import SpamjobError
from spamjob.fsutil import cache_dir

REPO = Path(__file__).resolve().parents[1]
DATA_ROUTE = "/static/public/228/sms+spam+collection.zip"  # the UCI path, on a stand-in server
TOKENIZER_ROUTE = "/enc"


# --------------------------------------------------------------------------- HTTP


class Server:
    """Threaded HTTP server on 127.0.0.1 serving in-memory files.

    `routes` maps a URL path to bytes. Supports HEAD and `Range: bytes=N-` (416 past the end).
    `truncate[path] = k` makes the next k GETs of `path` announce the full length
    but close the connection halfway; `slow[path] = s` sends it in 64 KB pieces s seconds
    apart. `hits[path]` counts GETs, `starts[path]` lists the byte each GET started at.
    """

    def __init__(self, routes: dict[str, bytes] | None = None, headers: Callable[[str], dict] | None = None):
        self.routes: dict[str, bytes] = dict(routes or {})
        self.truncate: dict[str, int] = {}
        self.slow: dict[str, float] = {}
        self.hits: dict[str, int] = {}
        self.starts: dict[str, list[int]] = {}
        self.extra_headers = headers or (lambda path: {})
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _head(self, send_body: bool) -> None:
                path = self.path.split("?")[0]
                body = server.routes.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if send_body:
                    server.hits[path] = server.hits.get(path, 0) + 1
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                if send_body:
                    server.starts.setdefault(path, []).append(start)
                if rng and start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if rng and rng.startswith("bytes="):
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                for k, v in server.extra_headers(path).items():
                    self.send_header(k, v)
                self.end_headers()
                if not send_body:
                    return
                if server.truncate.get(path, 0) > 0:
                    server.truncate[path] -= 1
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if server.slow.get(path):
                    for k in range(0, len(part), 1 << 16):
                        self.wfile.write(part[k : k + (1 << 16)])
                        self.wfile.flush()
                        time.sleep(server.slow[path])
                    return
                self.wfile.write(part)

            def do_GET(self):
                self._head(send_body=True)

            def do_HEAD(self):
                self._head(send_body=False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sms_zip(sms: bytes) -> bytes:
    """A zip laid out like UCI's: SMSSpamCollection plus a readme."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SMSSpamCollection", sms)
        zf.writestr("readme", b"UCI SMS Spam Collection")
    return buf.getvalue()


def tokenizer_bytes(assets: dict) -> dict[str, bytes]:
    """OpenAI's encoder.json and vocab.bpe, read from the located test assets."""
    return {n: (Path(assets["SPAMJOB_TOKENIZER"]) / n).read_bytes() for n in ("encoder.json", "vocab.bpe")}


def asset_routes(assets: dict) -> dict[str, bytes]:
    """Routes of a server standing in for UCI (the zip) and OpenAI's blob store (the tokenizer files)."""
    routes = {f"{TOKENIZER_ROUTE}/{n}": b for n, b in tokenizer_bytes(assets).items()}
    routes[DATA_ROUTE] = sms_zip(Path(assets["SMS"]).read_bytes())
    return routes


def asset_urls(server: Server) -> dict[str, str]:
    """Environment that points spamjob's dataset and tokenizer downloads at `server`."""
    return {"SPAMJOB_DATA_URL": server.url + DATA_ROUTE, "SPAMJOB_TOKENIZER_URL": server.url + TOKENIZER_ROUTE}


def hub_headers(path: str, routes: dict[str, bytes]) -> dict:
    """Headers the Hugging Face Hub sends on a resolve URL (commit and etag)."""
    body = routes.get(path, b"")
    return {"X-Repo-Commit": "a" * 40, "ETag": '"' + hashlib.sha256(body).hexdigest() + '"'}


# --------------------------------------------------------------------------- checkpoints


def tiny_hf_model(seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_head: int = 4, n_positions: int = 64):
    """A random transformers GPT2LMHeadModel with GPT-2's vocabulary and a small context."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=50257,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg).eval()
    # Larger weights than GPT-2's 0.02 init (whose greedy output is one token repeated) and
    # non-trivial LayerNorm and bias values, so a mapping mistake cannot hide behind 1s and 0s.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
            elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    return model


def write_hf_dir(model, folder: Path) -> Path:
    """`save_pretrained` layout: transformer.-prefixed keys, tied lm_head left out."""
    model.save_pretrained(folder)
    return folder


def write_hub_dir(model, folder: Path) -> Path:
    """The Hub's openai-community/gpt2 layout: unprefixed keys plus h.N.attn.bias mask buffers."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    n_ctx = model.config.n_positions
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in model.transformer.state_dict().items()}
    mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.uint8)).view(1, 1, n_ctx, n_ctx)
    for i in range(model.config.n_layer):
        state[f"h.{i}.attn.bias"] = mask.clone()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    return folder


def write_openai_dir(model, folder: Path) -> Path:
    """OpenAI's TF checkpoint layout (model/h0/attn/c_attn/w shaped [1, d, 3d], hparams.json)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k.removeprefix("transformer."): v.detach().numpy() for k, v in model.transformer.state_dict().items()}
    tensors = {
        "model/wte": sd["wte.weight"],
        "model/wpe": sd["wpe.weight"],
        "model/ln_f/g": sd["ln_f.weight"],
        "model/ln_f/b": sd["ln_f.bias"],
    }
    for i in range(model.config.n_layer):
        for part in ("ln_1", "ln_2"):
            tensors[f"model/h{i}/{part}/g"] = sd[f"h.{i}.{part}.weight"]
            tensors[f"model/h{i}/{part}/b"] = sd[f"h.{i}.{part}.bias"]
        for part in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            key = f"h.{i}.{part.replace('/', '.')}"
            tensors[f"model/h{i}/{part}/w"] = sd[key + ".weight"][None]  # [1, in, out] as conv1d
            tensors[f"model/h{i}/{part}/b"] = sd[key + ".bias"]
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=k) for k, v in tensors.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / "model.ckpt"))
    c = model.config
    (folder / "hparams.json").write_text(
        json.dumps(
            {
                "n_vocab": c.vocab_size,
                "n_ctx": c.n_positions,
                "n_embd": c.n_embd,
                "n_head": c.n_head,
                "n_layer": c.n_layer,
            }
        )
    )
    # Relative path, as in OpenAI's files, so the folder can be moved.
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    return folder


def hf_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own greedy generate (no early stop at <|endoftext|>)."""
    model.generation_config.eos_token_id = None
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=50256,
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
    )
    return out[0, len(ids) :].tolist()


def locate_assets(
    folders: Iterable[str | os.PathLike | None], cache: str | os.PathLike | None = None, *, progress: bool = True
) -> spamjob_assets.Assets:
    """The tests' assets (conftest.py): the first of `folders`, then `cache` (default: the spamjob
    cache), that holds them; when none does, they are fetched once into `cache` by spamjob's own
    download code. Raises one line naming the fetch command when that fails (no network, offline)."""
    cache = Path(cache) if cache is not None else cache_dir()
    searched = [Path(f) for f in folders if f] + [cache]
    for folder in searched:
        if (found := spamjob_assets.find(folder)) is not None:
            return found
    try:
        return spamjob_assets.fetch(cache, progress=progress)
    except SpamjobError as e:
        raise SpamjobError(
            f"the SMS dataset and GPT-2 tokenizer files are in none of {', '.join(map(str, searched))} "
            f"and could not be fetched ({e}); run `{spamjob_assets.FETCH_COMMAND}` where there is network"
        ) from None


# spamjob score, as the scoring tests run it
TIMING = (
    "wall_time_s",
    "rows_per_s",
    "steady_rows_per_s",
    "num_processes",
    "peak_rss_mb",
    "threads",
)  # what the run and machine decide


def score(*args: str):
    return CliRunner().invoke(cli, ["score", *args, "--no-progress"])


def scored(inputs: Path, model: Path, out: Path, *args: str) -> Path:
    """`out`, where `spamjob score` of `inputs` with `model` (and `args`) succeeded."""
    r = score(str(inputs), "--model", str(model), "--out", str(out), *args)
    assert r.exit_code == 0, r.output
    return out


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions")


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def metric_values(text: str) -> dict[str, dict[tuple, float]]:
    """A metrics file read by prometheus_client's own parser: name -> label values -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        family.name: {tuple(s.labels.values()): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def without_timing(r: dict) -> dict:
    r = {k: v for k, v in r.items() if k not in TIMING}
    r["output"] = {k: v for k, v in r["output"].items() if k != "folder"}
    return r


def sms_messages(sms_path: Path, n: int, seed: int = 0) -> list[str]:
    """n real messages drawn with replacement from the SMS Spam Collection."""
    texts = pd.read_csv(sms_path, sep="\t", header=None, names=["Label", "Text"])["Text"].tolist()
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.integers(0, len(texts), n)]


def run_in_repo(args: list[str], env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=600, env={**os.environ, **(env or {})})


def spamjob(*args: str, env: dict | None = None, drop: tuple = ()) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, as a user runs it (`drop`: environment variables left out)."""
    full = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "-m", "spamjob.cli", *args],
        capture_output=True,
        text=True,
        env={**full, **(env or {})},
        timeout=600,
    )


# A fine-tune of a tiny random model for one epoch: `spamjob train` options (a few seconds on a CPU)
TINY_RUN = ["--weights", "random", "--n-layers", "2", "--emb-dim", "32", "--n-heads", "2", "--epochs", "1"]

# Two ranks on the CPU (with ACCELERATE_USE_CPU=1), from the repository root
TWO_CPU_RANKS = [
    "accelerate",
    "launch",
    "--config_file",
    "accelerate_config.yaml",
    "--multi_gpu",
    "--num_processes",
    "2",
]


def spark_frames(n: int = 4, rows: int = 25) -> list[pd.DataFrame]:
    return [
        pd.DataFrame({"id": range(k * rows, (k + 1) * rows), "text": [f"msg {k}.{i}" for i in range(rows)]})
        for k in range(n)
    ]


def large_csvs(sms_path: Path, folder: Path) -> tuple[Path, Path]:
    """CSV files over one 1 MB block: split.csv as pandas writes it (quoted newlines, commas, doubled
    quotes); odd.csv the same for its first block and more, then records whose quotes no writer
    makes ("...\nb"y), so that its second block fails its check after its first passed."""
    pairs = sms_messages(sms_path, 14000, 4)
    texts = [f"{a}\n{b}" if i % 3 == 0 else f"{a} {b}" for i, (a, b) in enumerate(zip(pairs[::2], pairs[1::2]))]
    folder.mkdir()
    split, odd = folder / "split.csv", folder / "odd.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts, "label": ["ham", "spam"] * 3500}).to_csv(split, index=False)
    good = pd.DataFrame({"id": range(6500), "text": texts[:6500], "label": "ham"}).to_csv(index=False)
    bad = "".join(
        f'{6500 + i},"{t[:150].replace(chr(34), "")} {"a" * 60}\nb"y,ham\n' for i, t in enumerate(texts[:6000])
    )
    odd.write_text(good + bad)
    assert split.stat().st_size > 1 << 20 and len(good) > 1 << 20 and odd.stat().st_size > 2 << 20
    return split, odd


def write_parquet(path: Path, texts: list, row_group_size: int = 1000, **extra) -> Path:
    pq.write_table(pa.table({"text": texts, **extra}), path, row_group_size=row_group_size)
    return path


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--dim", type=int, default=48)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--context", type=int, default=96)
    ap.add_argument("--prompt", default="Every effort moves you")
    ap.add_argument("--max-new-tokens", type=int, default=15)
    a = ap.parse_args()
    m = tiny_hf_model(a.seed, a.layers, a.dim, a.heads, a.context)
    write_hf_dir(m, a.out / "hf")
    write_openai_dir(m, a.out / "openai")
    import tiktoken

    ids = tiktoken.get_encoding("gpt2").encode(a.prompt)
    new = hf_greedy(m, ids, a.max_new_tokens)
    print(json.dumps({"transformers_new_ids": new, "text": a.prompt + tiktoken.get_encoding("gpt2").decode(new)}))


# --------------------------------------------------------------------------- other writers' folders


def spark_failed_output(folder: Path, frames: list) -> dict[str, list[str]]:
    """A folder as Spark's FileOutputCommitter (and Databricks' transactional commit) leaves it after
    a failed job: committed parts (one in a hive `day=` partition) beside `.crc` checksums, `_SUCCESS`,
    `_started_*`/`_committed_*` markers and a `_temporary/0/` tree holding a finished task's part and
    a half-written attempt's. `frames`: the four parts' rows (pandas). Returns the relative paths of
    the parts that hold committed rows ("committed") and of every bookkeeping file ("hidden")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uid = "c000-4f1e-9a2b-5d6e7f809a1b"
    committed = [f"part-00000-{uid}.snappy.parquet", f"day=2026-12-05/part-00001-{uid}.snappy.parquet"]
    attempt = "_temporary/0/_temporary/attempt_202612060000_0001_m_000003_7"
    task = f"_temporary/0/task_202612060000_0001_m_000002/part-00002-{uid}.snappy.parquet"
    for name, frame in zip([*committed, task, f"{attempt}/part-00003-{uid}.snappy.parquet"], frames):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / name)
    half = folder / f"{attempt}/part-00003-{uid}.snappy.parquet"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])  # the attempt died mid-write
    crc = [
        f"{head}{'/' if head else ''}.{tail}.crc" for head, _, tail in (n.rpartition("/") for n in [*committed, task])
    ]
    markers = ["_SUCCESS", "_started_5180938127245913", "_committed_5180938127245913", "day=2026-12-05/_SUCCESS"]
    for name in crc + markers:
        (folder / name).write_bytes(b"crc\x00" if name.endswith(".crc") else b'{"added":[]}')
    hidden = sorted([*crc, *markers, task, half.relative_to(folder).as_posix()])
    return {"committed": committed, "hidden": hidden}


def flip_byte(path: Path, at: float = 0.5) -> None:
    """Damage a file as a bad disk or restore does: one byte changed, the size kept (a symlink's target)."""
    path = Path(path).resolve()
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))
