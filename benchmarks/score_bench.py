"""Scoring benchmark: spamjob and its peers score the same messages with the same weights, one
script, on a machine described first (CPU, matrix units, GEMM peaks: benchmarks/machine.py).

(a) the reference-style loop: fp32, batches of 8 padded to max_length (120), the whole
    model, logits at the pooled position;
(b) Hugging Face `transformers.GPT2ForSequenceClassification` in fp32 and bf16, length-sorted,
    padded per batch, at batch sizes 8/32/256, the fastest of each reported (tiktoken ids, the
    same weights; HF's score head has no bias, so its probabilities differ slightly, its cost
    does not);
(c) spamjob end to end: `spamjob score` on a Parquet file, Parquet out (its own process;
    job time from report.json, process time including start-up and the steady-state rate
    after the first window also shown; bf16 runs: label agreement with fp32 on 20,000 rows);
(d) ONNX Runtime (`--variants onnx,onnx-int8`) and OpenVINO (`openvino-bf16,openvino-int8`, where
    installed) on the graph `spamjob export --format onnx [--quantize int8]` writes: tokenize,
    length-sorted token-budgeted batches, the session's call (export time not counted; agreement
    of labels with spamjob's fp32 shown).

Each row is compared with the fastest peer of the run (b, d); spamjob's steady state also with
the bf16 limit: the machine's bf16 GEMM peak over the model's GFLOP per message.

Messages are resampled with replacement from the SMS Spam Collection. The classifier is
a gpt2-small-sized model with random weights (or --model RUN_DIR).

    python benchmarks/score_bench.py                     # CPU: 2,000 messages
    python benchmarks/score_bench.py --n 400000 --n-reference 20000 --spamjob-args "--window-rows 65536"
    python benchmarks/score_bench.py --smoke             # tiny model, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from load import background_load
from machine import describe, lines
from peers import onnx_rows, timed, transformers_rows

REPO = Path(__file__).resolve().parents[1]
SMS = REPO.parent / "shared" / "data" / "SMSSpamCollection"


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores (torch {torch.__version__})"


def gflop_per_message(clf, texts: list[str]) -> float:
    """The model's work per message, averaged over `texts`: 2 x the blocks' weights x tokens, plus
    attention's 4 x layers x tokens^2 x width (embeddings and the head are lookups and noise)."""
    gpt = clf.model.gpt
    weights = sum(m.weight.numel() for m in gpt.transformer_blocks.modules() if isinstance(m, torch.nn.Linear))
    tokens = np.array([min(len(t), clf.max_length) for t in clf.tokenizer.encode_ordinary_batch(texts)], float)
    c = gpt.cfg
    return float(np.mean(2 * weights * tokens + 4 * c.n_layers * tokens**2 * c.emb_dim)) / 1e9


def random_classifier(out: Path, layers: int, dim: int, heads: int, sms: Path | None = None) -> Path:
    """A classifier artifact with random gpt2-small-sized weights (what the scoring cost depends on);
    with `sms`, the reference splits prepared beside it and recorded, as `spamjob train` records its
    data (the ONNX graph's checks use the test split)."""
    from spamjob.artifact import save_classifier
    from spamjob.data import prepare
    from spamjob.model import replace_head
    from spamjob.weights import load_gpt

    gpt, _ = load_gpt("random", n_layers=layers, emb_dim=dim, n_heads=heads, seed=123)
    replace_head(gpt, 2)
    data = out.parent / "data" if sms else None
    if data:
        prepare(sms, data, progress=False)
    meta = {"max_length": 120, "pooling": "last-token", "padding": "dynamic", "training": None}
    save_classifier(out, gpt, {**meta, "benchmark": "random weights", "data": {"folder": str(data) if data else None}})
    return out


def messages(n: int, seed: int = 0, sms: Path = SMS, duplicates: float = 0.0) -> list[str]:
    """n messages of the SMS Spam Collection in random order, a `duplicates` share of them repeating
    another's text, the rest distinct (spamjob scores a repeated text once: a peer does not). Past
    the corpus's 5,169 distinct texts, a text comes again with " (k)" after it."""
    import pandas as pd

    corpus = list(dict.fromkeys(pd.read_csv(sms, sep="\t", header=None, names=["Label", "Text"])["Text"]))
    rng = np.random.default_rng(seed)
    n_distinct = n - round(n * duplicates)
    order = [corpus[i] for i in rng.permutation(len(corpus))]
    distinct = [t if k < len(order) else f"{t} ({k // len(order)})" for k, t in zip(range(n_distinct), _cycle(order))]
    rows = distinct + [distinct[i] for i in rng.integers(0, max(n_distinct, 1), n - n_distinct)]
    return [rows[i] for i in rng.permutation(len(rows))]


def _cycle(texts: list[str]):
    while True:
        yield from texts


def reference_loop(clf, texts: list[str], device: torch.device) -> np.ndarray:
    """(a): batch 8, every row padded to max_length, full forward, logits at the pooled position."""
    from spamjob.text import encode, pad_batch

    model = clf.model.gpt.to(device).eval()
    probs = []
    with torch.no_grad():
        for i in range(0, len(texts), 8):
            b = pad_batch(encode(clf.tokenizer, texts[i : i + 8]), clf.max_length, padding="fixed")
            logits = model(b.input_ids.to(device))  # (B, T, 2)
            pos = (b.lengths - 1).clamp(min=0) if clf.pooling == "last-token" else torch.full_like(b.lengths, -1)
            rows = logits[torch.arange(len(pos)), pos.to(device)]
            probs.append(torch.softmax(rows, -1)[:, 1].cpu())
    return torch.cat(probs).numpy()


def host_costs(run_dir: Path, texts: list[str], tmp: Path, workers: int) -> list[tuple[str, float]]:
    """Host-side cost per message of each stage on the scoring path's critical thread, CPU seconds
    of this process: read, tokenize (the parent's share: in-thread, or collecting from `workers`
    processes), pad (GPU-sized batches), post-process (the four output columns), write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spamjob.scorer import BatchScorer
    from spamjob.text import PAD_ID

    pq.write_table(pa.table({"text": texts}), tmp / "host.parquet")
    scorer = BatchScorer(run_dir, device="cpu", tokenize_workers=workers)
    scorer.prepare(pa.array(texts[:8192]))  # workers warm
    n, costs = len(texts), []

    def cost(name: str, fn):
        t = time.process_time()
        out = fn()
        costs.append((name, (time.process_time() - t) / n * 1e6))
        return out

    column = cost("read (Parquet, text column)", lambda: pq.read_table(tmp / "host.parquet").column("text"))
    label = f"decode, flag, tokenize ({'collect from ' + str(workers) + ' processes' if workers else 'in-thread'})"
    window = cost(label, lambda: scorer.prepare(column.combine_chunks()))
    ids, clf = window.ids, scorer.classifier
    order = np.argsort(np.minimum(ids.lengths, clf.max_length), kind="stable")
    cost(
        "pad (length-sorted batches of 2,048 rows)",
        lambda: [ids.padded(order[i : i + 2048], clf.max_length, clf.padding, PAD_ID) for i in range(0, n, 2048)],
    )
    columns = cost("post-process (output columns)", lambda: scorer.output_columns(window, np.random.rand(n)))
    table = pa.table({"text": column, **columns})
    cost("write (Parquet)", lambda: pq.write_table(table, tmp / "host-out.parquet"))
    scorer.close()
    return costs


def host_only(a) -> None:
    """`--host-only`: the host's microseconds per message, against the 10 us that 100k msg/s allows."""
    texts = messages(a.n, sms=a.sms)
    with tempfile.TemporaryDirectory(prefix="score-host-") as tmp:
        tmp = Path(tmp)
        run_dir = a.model or random_classifier(tmp / "clf", 2, 32, 2)  # the model does not run here
        for workers in (0, a.host_workers):
            costs = host_costs(run_dir, texts, tmp, workers)
            print(f"host cost per message, {a.n:,} messages, tokenizer processes: {workers}")
            for name, us in costs:
                print(f"  {name:<62} {us:>7.2f} us")
            total = sum(us for _, us in costs)
            print(f"  {'total on the critical path':<62} {total:>7.2f} us  (budget for 100,000 msg/s: 10 us)")


def bf16_agreement(clf, out: Path, texts: list[str], device: torch.device) -> dict:
    """Labels of a bf16 run's first rows against fp32 on the same device (the classifier's threshold)."""
    import pyarrow.parquet as pq

    from spamjob.scoring.runtimes.pytorch import TorchPredictor as Predictor
    from spamjob.text import encode

    got = pq.read_table(out / "predictions").column("spam_probability").to_numpy()[: len(texts)]
    want = Predictor(clf, device, "no", 65536 if device.type == "cuda" else 512)(encode(clf.tokenizer, texts))
    t = clf.threshold
    return {"same_prediction": float(((got > t) == (want > t)).mean()), "rows": len(texts)}


SCORE = [sys.executable, "-m", "spamjob.cli", "score"]
# (c) variants: `spamjob score` options. default (auto precision) and int8 take the default runtime.
VARIANTS = {
    "default": [],
    "fp32": ["--mixed-precision", "no"],
    "bf16": ["--mixed-precision", "bf16"],
    "int8": ["--quantize", "int8"],
    "torch": ["--runtime", "torch"],
    "torch-bf16": ["--runtime", "torch", "--mixed-precision", "bf16"],
    "torch-int8": ["--runtime", "torch", "--quantize", "int8"],
    "ort": ["--runtime", "onnxruntime"],
    "ort-int8": ["--runtime", "onnxruntime", "--quantize", "int8"],
    "openvino": ["--runtime", "openvino"],
    "compile": ["--runtime", "torch", "--compile"],
    "no-dedup": ["--no-dedup"],
}
# A variant's fp32 counterpart (run first: every message's label is compared with it)
FP32_OF = {  # (no-dedup: against the default run, which scores repeated texts once)
    "default": "fp32",
    "no-dedup": "default",
    "bf16": "fp32",
    "torch-bf16": "fp32",
    "int8": "fp32",
    "torch-int8": "torch",
    "ort-int8": "ort",
}


def label_agreement(out: Path, fp32_out: Path) -> float:
    """The share of rows whose label is the same in two finished outputs of the same input."""
    import pandas as pd

    key = ["text"]
    a = pd.read_parquet(out / "predictions").sort_values(key, kind="stable")["prediction"].to_numpy()
    b = pd.read_parquet(fp32_out / "predictions").sort_values(key, kind="stable")["prediction"].to_numpy()
    return float((a == b).mean())


def warm_graphs(run_dir: Path, variants: list[str], tmp: Path, spamjob_args: list[str]) -> None:
    """What a runtime caches made before any timed run, as a scheduled job finds it from its second
    run on (the first pays it once): ONNX Runtime's graphs, OpenVINO's compiled model and its bf16
    check. A 64-message job per variant that runs on either."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spamjob.scoring import runtimes

    def on_graph(variant: str) -> bool:
        args = VARIANTS[variant]
        runtime = args[args.index("--runtime") + 1] if "--runtime" in args else "auto"
        quantize = "int8" if "int8" in variant else None
        gpu = torch.cuda.is_available()
        asked = args[args.index("--mixed-precision") + 1] if "--mixed-precision" in args else "auto"
        precision, _ = runtimes.precision(asked, gpu, quantize, runtime)
        request = runtimes.Request("cuda" if gpu else "cpu", precision, quantize)
        return runtimes.resolve(runtime, request) in ("onnxruntime", "openvino")

    pq.write_table(pa.table({"text": messages(64, seed=7)}), tmp / "warm.parquet")
    for variant in (v for v in variants if v in VARIANTS and on_graph(v)):
        cmd = [*SCORE, str(tmp / "warm.parquet"), "--model", str(run_dir), "--out", str(tmp / f"warm-{variant}")]
        proc = subprocess.run(
            [*cmd, "--no-progress", *VARIANTS[variant], *spamjob_args], capture_output=True, text=True
        )
        if proc.returncode:
            sys.exit(f"(c) {variant}'s warm-up failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="messages for (b) and (c) [2,000; --host-only: 50,000]")
    ap.add_argument("--n-spamjob", type=int, default=None, help="messages for (c) only [--n]")
    ap.add_argument("--n-reference", type=int, default=400, help="messages for the slow loop (a)")
    ap.add_argument("--model", type=Path, help="a trained run folder instead of random gpt2-small weights")
    ap.add_argument("--spamjob-args", default="", help="extra `spamjob score` options for (c)")
    ap.add_argument(
        "--variants",
        default="fp32,default",
        help="comma list of variants: (c) default (auto precision), fp32, bf16, int8 (CPU) on the default "
        "runtime, torch, torch-bf16, torch-int8, ort, ort-int8, openvino, compile; (d) onnx, onnx-int8 "
        "(bare ONNX Runtime loops), openvino-bf16, openvino-int8 (bare OpenVINO loops)",
    )
    ap.add_argument("--hf-dtypes", default="fp32,bf16", help="(b) transformers' dtypes [fp32,bf16; '' for none]")
    ap.add_argument(
        "--duplicates", type=float, default=0.0, help="share of (c)'s rows that repeat another's text [0: all distinct]"
    )
    ap.add_argument("--corpus", action="store_true", help="(c) scores the SMS Spam Collection as it is (7%% repeats)")
    ap.add_argument("--hf-batches", default="8,32,256", help="(b) batch sizes tried, the fastest reported")
    ap.add_argument("--onnx-batch-tokens", type=int, default=512, help="padded tokens per ONNX Runtime call")
    ap.add_argument("--smoke", action="store_true", help="2-layer 32-dim model, 200 messages")
    ap.add_argument("--sms", type=Path, default=SMS, help="the SMS Spam Collection file messages are drawn from")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--background-load",
        type=int,
        default=0,
        metavar="N",
        help="N CPU-burning processes beside every measured run (a shared, busy machine)",
    )
    ap.add_argument(
        "--host-only",
        action="store_true",
        help="only the host-side cost per message of each stage (no model runs): read, tokenize, pad, "
        "post-process, write",
    )
    ap.add_argument("--host-workers", type=int, default=2, help="--host-only: tokenizer processes for the second pass")
    a = ap.parse_args()
    if a.host_only:
        a.n = a.n or 50000
        return host_only(a)
    a.n = a.n or 2000
    dims = (2, 32, 2) if a.smoke else (12, 768, 12)
    if a.smoke:
        a.n, a.n_reference = 200, 40

    from spamjob.artifact import load_classifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    facts = describe(peaks=device.type == "cpu")  # measured first, on a quiet machine
    results = []
    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["SPAMJOB_CACHE"] = str(tmp / "cache")  # ONNX graphs made by this run (warm_graphs), for it
        run_dir = a.model or random_classifier(tmp / "clf", *dims, sms=a.sms)
        clf = load_classifier(run_dir)
        texts = messages(a.n, sms=a.sms)
        import pyarrow as pa
        import pyarrow.parquet as pq

        n_c = a.n_spamjob or a.n
        texts_c = texts if n_c == a.n and not a.duplicates else messages(n_c, 1, a.sms, a.duplicates)
        if a.corpus:
            import pandas as pd

            texts_c = pd.read_csv(a.sms, sep="\t", header=None, names=["Label", "Text"])["Text"].tolist()
            n_c = len(texts_c)
        # 8 row groups (units) for several processes, but none smaller than a default window (16,384
        # rows): a group of a few hundred rows would cut every window, and its length sort, to its size.
        groups = max(n_c // 8, min(n_c, 16384))
        pq.write_table(pa.table({"text": texts_c}), tmp / "in.parquet", row_group_size=groups)

        with background_load(a.background_load):  # every pipeline runs beside the same competing processes
            if a.n_reference:
                t, _ = timed(reference_loop, clf, texts[: a.n_reference], device)
                row = {"name": "(a) reference loop, fp32, batch 8, padded to 120", "n": a.n_reference, "s": t}
                results.append(row)
            batches = [int(b) for b in a.hf_batches.split(",")]
            results += transformers_rows(clf, texts, device, [d for d in a.hf_dtypes.split(",") if d], batches)
            variants = a.variants.split(",")
            results += onnx_rows(run_dir, clf, texts, variants, tmp, a.onnx_batch_tokens)
            warm_graphs(run_dir, variants, tmp, shlex.split(a.spamjob_args))
            for variant in (v for v in variants if v in VARIANTS):
                extra = VARIANTS[variant]
                out = tmp / f"out-{variant}"
                cmd = [
                    *SCORE,
                    str(tmp / "in.parquet"),
                    "--model",
                    str(run_dir),
                    "--out",
                    str(out),
                    "--no-progress",
                    *extra,
                    *shlex.split(a.spamjob_args),
                ]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                process_s = time.perf_counter() - t0
                if proc.returncode:
                    sys.exit(f"(c) {variant} failed:\n{proc.stderr[-3000:]}")
                rep = json.loads((out / "report.json").read_text())
                label = "bf16" if rep["mixed_precision"] == "bf16" else ("int8" if "int8" in variant else "fp32")
                runtime = rep["runtime"]["name"] + (" + compile" if variant == "compile" else "")
                default = {"default": " (defaults)", "int8": " (default runtime)"}.get(variant, "")
                row = {
                    "name": f"(c) spamjob score{default}, {runtime}, {label}"
                    + (" --no-dedup" if variant == "no-dedup" else ""),
                    "n": rep["rows"]["read"],
                    "s": rep["wall_time_s"],
                    "process_s": process_s,
                }
                if "agreement_with_fp32" in rep:
                    row["agreement"] = rep["agreement_with_fp32"]
                elif label == "bf16":
                    row["agreement"] = bf16_agreement(clf, out, texts_c[:20000], device)
                row["threads"], row["steady"] = rep.get("threads"), rep.get("steady_rows_per_s")
                row["peak_gpu_mb"] = rep.get("peak_gpu_mb")
                fp32 = tmp / f"out-{FP32_OF.get(variant)}"
                if fp32.is_dir():  # its fp32 run came first: every message's label against that run's
                    row["agreement_all"] = label_agreement(out, fp32)
                    row["compared_with"] = FP32_OF[variant]
                results.append(row)

    for r in results:
        r["msg_per_s"] = r["n"] / r["s"]
    peers = [r for r in results if r.get("peer")] or results[:1]  # none measured: against the first row
    best = max(peers, key=lambda r: r["msg_per_s"])
    base = best["msg_per_s"]
    gflop = gflop_per_message(clf, texts)
    limit = facts["gemm_gflops"]["bf16"] / gflop if device.type == "cpu" else None
    print("\n".join(lines(facts)))
    print(
        f"machine: {machine()}; model: {dims[0]} layers x {dims[1]} dims "
        f"({'random weights' if not a.model else a.model}), {gflop:.2f} GFLOP per message"
        + (f", bf16 limit {limit:,.0f} msg/s" if limit else "")
        + f"; background load: {a.background_load} busy process(es); torch threads in this process: "
        f"{torch.get_num_threads()}"
    )
    print(f"best peer: {best['name']} ({base:,.1f} msg/s)")
    print(f"{'pipeline':<104} {'messages':>9} {'seconds':>9} {'msg/s':>10} {'vs best peer':>12}")
    for r in results:
        extra = f"  (process incl. start-up: {r['n'] / r['process_s']:,.1f} msg/s)" if "process_s" in r else ""
        if r.get("threads"):
            t = r["threads"]
            extra += f"  model workers: {t['workers']} x 1 thread" if t.get("workers") else f"  threads: {t['threads']}"
            extra += f" (free CPUs {t['free_cpus']})" if t.get("free_cpus") is not None else ""
        if r.get("steady"):
            extra += f"  steady state: {r['steady']:,.1f} msg/s"
            extra += f" ({r['steady'] / limit * 100:.0f}% of the bf16 limit)" if limit else ""
        if "agreement" in r:
            extra += f"  agreement with fp32: {r['agreement']['same_prediction'] * 100:.2f}%"
        if "agreement_all" in r and r["compared_with"] in ("fp32", "torch", "ort"):
            extra += f" (on all {r['n']:,} messages: {r['agreement_all'] * 100:.2f}%)"
        elif "agreement_all" in r:
            extra += (
                f"; labels equal to the {r['compared_with']} run's on all {r['n']:,}: {r['agreement_all'] * 100:.2f}%"
            )
        print(
            f"{r['name']:<104} {r['n']:>9,} {r['s']:>9.2f} {r['msg_per_s']:>10,.1f} "
            f"{r['msg_per_s'] / base:>11.2f}x{extra}"
        )
    if a.json:
        summary = {"machine": machine(), "facts": facts, "gflop_per_message": gflop, "bf16_limit_msg_per_s": limit}
        a.json.write_text(json.dumps({**summary, "best_peer": best["name"], "results": results}, indent=2))


if __name__ == "__main__":
    main()
