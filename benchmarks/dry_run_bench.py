"""Dry-run benchmark: `spamjob score --dry-run` predicts a job's time; the same job then runs, in
one script, on a machine described first (benchmarks/machine.py).

The input is one Parquet file of --n distinct SMS messages (the corpus's texts, past its 5,169
with " (k)" after them), the classifier random weights at --layers x --dim (4 x 256 by default:
a 200,000-row job takes minutes here, not an hour). Both commands run as a user runs them, each
in its own process: the dry run's wall time (its calibration included), its prediction, the
job's whole-process wall time, and their ratio; the dry run must leave --out unwritten.

    python benchmarks/dry_run_bench.py                  # 200,000 rows
    python benchmarks/dry_run_bench.py --smoke          # 3,000 rows, a tiny model (CI)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe, lines
from score_bench import SMS, messages, random_classifier

REPO = Path(__file__).resolve().parents[1]


def seconds_of(text: str) -> float:
    """`1 h 2 min`, `3 min 4 s`, `5 s` (the dry run's durations) in seconds."""
    units = {"h": 3600, "min": 60, "s": 1}
    return float(sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+) (h|min|s)\b", text)))


def timed_cli(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "spamjob.cli", *args], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"spamjob {' '.join(args[:1])} failed:\n{r.stderr[-3000:]}")
    return wall, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--sms", type=Path, default=SMS)
    ap.add_argument("--smoke", action="store_true", help="3,000 rows, a 1 x 32 model")
    a = ap.parse_args()
    if a.smoke:
        a.n, a.layers, a.dim, a.heads = 3000, 1, 32, 2
    print("\n".join(lines(describe())))
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="spamjob-dry-run-") as tmp:
        tmp = Path(tmp)
        model = random_classifier(tmp / "model", a.layers, a.dim, a.heads)
        texts = messages(a.n, sms=a.sms)
        pq.write_table(pa.table({"id": range(a.n), "text": texts}), tmp / "in.parquet", row_group_size=16384)
        job = [str(tmp / "in.parquet"), "--model", str(model), "--out", str(tmp / "out"), "--no-progress"]
        dry_wall, said = timed_cli(["score", *job, "--dry-run"])
        if (tmp / "out").exists():
            sys.exit("the dry run wrote into --out")
        predicted = seconds_of(
            next(line for line in said.splitlines() if line.startswith("expected:")).split(" on ")[0]
        )
        job_wall, _ = timed_cli(["score", *job])
    print(f"{a.n:,} distinct messages, one Parquet file; classifier {a.layers} x {a.dim}, random weights")
    print("\n".join(said.splitlines()[-4:]))
    print("| | seconds |")
    print("|---|---|")
    print(f"| `--dry-run` itself (calibration included) | {dry_wall:.1f} |")
    print(f"| predicted job time | {predicted:.1f} |")
    print(f"| measured job time (whole process) | {job_wall:.1f} |")
    ratio = job_wall / predicted if predicted else float("inf")
    verdict = "within" if 1 / 1.5 <= ratio <= 1.5 else "outside"
    print(f"measured / predicted: {ratio:.2f} ({verdict} a factor of 1.5)")


if __name__ == "__main__":
    main()
