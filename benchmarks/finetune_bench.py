"""Fine-tuning benchmark: the reference recipe vs spamjob's default, one script, one machine
(described first: CPU, matrix units, GEMM peaks; benchmarks/machine.py).

Every run uses the same architecture, the same random weights (seed 123), the same data
and 5 epochs; each runs in its own process through the real CLI, and the wall time
includes start-up. The runs (--runs): `reference` (--preset reference, fp32, as the book),
`reference-bf16` (the same recipe under bf16 autocast: the strongest form of the baseline on a
CPU with a bf16 unit), `reference-fast` (the same recipe on spamjob's fast path: `--compute fast
--prefix-cache auto`), `default-fp32` (spamjob's default recipe in fp32: its default before
`auto` followed the CPU) and `default` (every default, `--mixed-precision auto` included).
Prints wall time, examples/s and test accuracy of each, and each run's speed-up over the others.

    python benchmarks/finetune_bench.py --data data                  # gpt2-small dims
    python benchmarks/finetune_bench.py --data data --n-layers 4 --emb-dim 256 --n-heads 4
    python benchmarks/finetune_bench.py --smoke                      # tiny, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load import background_load
from machine import describe
from machine import lines as machine_lines

RUNS = {
    "reference": ["--preset", "reference"],
    "reference-bf16": ["--preset", "reference", "--mixed-precision", "bf16"],
    # The reference recipe on spamjob's fast path (its batches, epochs and trainable part kept)
    "reference-fast": ["--preset", "reference", "--compute", "fast", "--prefix-cache", "auto"],
    "default-fp32": ["--mixed-precision", "no"],
    "default": [],
}


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (torch {torch.__version__})"
    except ImportError:
        return platform.platform()


def run(name: str, data: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "spamjob.cli", "train", "--data", str(data), "--out", str(out), *extra]
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"[{name}] failed:\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    # job_s: the job itself (metrics.json wall_time_s, from the start of train.main to the
    # last file written); process_s adds interpreter start and imports (~3-4 s here).
    return {
        "name": name,
        "job_s": m["wall_time_s"],
        "process_s": wall,
        "train_s": m["train_time_s"],
        "examples_per_s": m["examples_seen"] / m["wall_time_s"],
        "test_acc": m["test"]["accuracy"],
        "val_acc": m["validation"]["accuracy"],
        "cache": m["prefix_cache"]["used"],
        "device": m["device"],
        "precision": m["mixed_precision"],
        "processes": m["num_processes"],
        "phases_s": m["phases_s"],
        "threads": m.get("threads"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="prepared splits (default: prepare ../shared's copy or the UCI zip)")
    ap.add_argument("--model", default="gpt2-small")
    ap.add_argument("--n-layers", type=int)
    ap.add_argument("--emb-dim", type=int)
    ap.add_argument("--n-heads", type=int)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument(
        "--seeds",
        default="123",
        help="comma-separated seeds (weights, head, shuffling); accuracies are also averaged over them",
    )
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--smoke", action="store_true", help="2 layers, 32 dims, 1 epoch: checks the script runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--background-load",
        type=int,
        default=0,
        metavar="N",
        help="N CPU-burning processes beside every measured run (a shared, busy machine)",
    )
    a = ap.parse_args()
    if a.smoke:
        a.n_layers, a.emb_dim, a.n_heads, a.epochs = 2, 32, 2, 1
    facts = describe()  # measured first, on a quiet machine
    names = a.runs.split(",")

    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        tmp = Path(tmp)
        data = a.data
        if data is None:
            data = tmp / "data"
            shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "SMSSpamCollection"
            src = [str(shared)] if shared.exists() else []
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "spamjob.cli",
                    "prepare",
                    "--out",
                    str(data),
                    *(["--source", *src] if src else []),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        arch = ["--weights", "random", "--model", a.model, "--epochs", str(a.epochs)]
        for flag, v in (("--n-layers", a.n_layers), ("--emb-dim", a.emb_dim), ("--n-heads", a.n_heads)):
            if v is not None:
                arch += [flag, str(v)]
        results = []
        with background_load(a.background_load):
            for seed in [int(x) for x in a.seeds.split(",")]:
                seeded = [*arch, "--seed", str(seed)]
                for name in names:
                    r = run(name, data, tmp / f"{name}-{seed}", [*seeded, *RUNS[name]])
                    results.append({**r, "seed": seed})

    dims = f"{a.model}" if a.n_layers is None else f"{a.n_layers} layers x {a.emb_dim} dims x {a.n_heads} heads"
    lines = [
        *machine_lines(facts),
        f"machine: {machine()}; model: {dims}, random weights; {a.epochs} epochs; "
        f"background load: {a.background_load} busy process(es)",
        f"{'run':<14} {'seed':>5} {'job wall s':>10} {'process s':>10} {'train s':>8} {'examples/s':>11} "
        f"{'test acc':>9} {'val acc':>8}  cache  device/precision  threads",
    ]
    for r in results:
        lines.append(
            f"{r['name']:<14} {r['seed']:>5} {r['job_s']:>10.1f} {r['process_s']:>10.1f} {r['train_s']:>8.1f} "
            f"{r['examples_per_s']:>11.1f} {r['test_acc'] * 100:>8.2f}% {r['val_acc'] * 100:>7.2f}%  "
            f"{'yes' if r['cache'] else 'no':<5}  {r['device'] + '/' + r['precision']:<16}  "
            f"{r['threads']['threads']} (free CPUs {r['threads'].get('free_cpus')})"
        )

    def mean(name: str, key: str) -> float:
        values = [r[key] for r in results if r["name"] == name]
        return sum(values) / len(values)

    n = len(results) // len(names)
    seeds = f"mean of {n} seeds" if n > 1 else "seed " + a.seeds
    for fast in names:
        for slow in names[: names.index(fast)]:
            ratio = mean(slow, "job_s") / mean(fast, "job_s")
            lines.append(
                f"speed-up of {fast} over {slow} (job wall, {seeds}): {ratio:.1f}x "
                f"(process wall: {mean(slow, 'process_s') / mean(fast, 'process_s'):.1f}x)"
            )
    lines.append(
        f"test accuracy, {seeds}: " + ", ".join(f"{name} {mean(name, 'test_acc') * 100:.2f}%" for name in names)
    )
    print("\n".join(lines))
    if a.json:
        a.json.write_text(json.dumps({"runs": results, "machine": machine(), "facts": facts}, indent=2))


if __name__ == "__main__":
    main()
