"""One scoring core on three engines: the same messages and model through `spamjob score`,
`spamjob score --engine ray` (a local Ray cluster) and `jobs/spark_score.py` (a local Spark),
each in its own process, one after another, in one run.

Printed per engine: wall seconds of the whole command (start-up included), busy CPU-seconds
of the machine while it ran (from /proc/stat: run it on a quiet machine), messages per
second, the peak of the machine's used memory above what it used before, and agreement with
`spamjob score` (same label, largest |difference| in spam_probability, joined on an id).

    python benchmarks/engines_bench.py                  # 200,000 messages, 2 layers x 64 dims
    python benchmarks/engines_bench.py --n 2000 --engines spamjob,ray   # a quick look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from score_bench import SMS, messages, random_classifier  # noqa: E402

REPO = HERE.parent


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (user..steal, all CPUs) since boot."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def used_memory_mb() -> float:
    info = dict(line.split(":") for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def measured(cmd: list[str], env: dict) -> dict:
    """Run `cmd`; wall, machine CPU and peak extra memory while it ran."""
    base, peak, done = used_memory_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], used_memory_mb() - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, t0 = busy_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, busy_cpu_seconds() - cpu0
    done.set()
    sampler.join()
    if proc.returncode:
        sys.exit(f"engines_bench: {' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak[0]}


def agreement(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float]:
    """(share of rows with the same label, largest |difference| in spam_probability), joined on id."""
    m = a.merge(b, on="id", suffixes=("_a", "_b"))
    assert len(m) == len(a) == len(b), (len(m), len(a), len(b))
    same = (m["prediction_a"].fillna("-") == m["prediction_b"].fillna("-")).mean()
    diff = np.nanmax(np.abs(m["spam_probability_a"].to_numpy(float) - m["spam_probability_b"].to_numpy(float)))
    return float(same), float(diff)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="messages")
    ap.add_argument("--dims", default="2,64,2", help="layers,emb_dim,heads of the random-weight classifier")
    ap.add_argument("--sms", type=Path, default=SMS)
    ap.add_argument("--engines", default="spamjob,ray,spark")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "PYSPARK_PYTHON": sys.executable}
    with tempfile.TemporaryDirectory(prefix="engines-bench-") as tmp:
        tmp = Path(tmp)
        model = random_classifier(tmp / "clf", *map(int, a.dims.split(",")))
        texts = messages(a.n, sms=a.sms)
        src = tmp / "in.parquet"
        pq.write_table(pa.table({"id": np.arange(a.n), "text": texts}), src, row_group_size=max(a.n // 16, 1))
        commands = {
            "spamjob": [sys.executable, "-m", "spamjob.cli", "score", str(src), "--model", str(model), "--no-progress"],
            "ray": [
                sys.executable,
                "-m",
                "spamjob.cli",
                "score",
                str(src),
                "--model",
                str(model),
                "--no-progress",
                "--engine",
                "ray",
            ],
            "spark": [sys.executable, str(REPO / "jobs" / "spark_score.py"), str(src), "--model", str(model)],
        }
        rows = []
        for name in a.engines.split(","):
            out = tmp / f"out-{name}"
            r = measured([*commands[name], "--out", str(out)], env)
            r["name"], r["predictions"] = (
                name,
                pd.read_parquet(out / "predictions", columns=["id", "prediction", "spam_probability"]),
            )
            rows.append(r)
        print(
            f"machine: {os.cpu_count()} CPUs; {a.n:,} messages; classifier {a.dims} (layers,dims,heads), random weights"
        )
        print(f"{'engine':<10} {'wall s':>8} {'CPU s':>8} {'msg/s':>10} {'peak MB':>9}  agreement with spamjob score")
        for r in rows:
            same, diff = agreement(r["predictions"], rows[0]["predictions"])
            print(
                f"{r['name']:<10} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {a.n / r['wall_s']:>10,.0f} "
                f"{r['peak_mb']:>9,.0f}  same label {same * 100:.2f}%, max |diff| {diff:.1e}"
            )


if __name__ == "__main__":
    main()
