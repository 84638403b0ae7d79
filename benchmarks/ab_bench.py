"""Before/after: the same `spamjob train` and `spamjob score` runs with two checkouts of spamjob,
alternating on one machine, so that a refactor's speed is compared with what it replaced under
the same load (machine-to-machine and day-to-day differences cancel out).

    git worktree add /tmp/before <commit>
    python benchmarks/ab_bench.py --before /tmp/before --after . --rounds 2

Fine-tuning: 4 layers x 256 dims, default recipe, 5 epochs, seed 123 (accuracies must be equal).
Scoring: a random gpt2-small-dims classifier (its prepared splits recorded, as a trained one
has them) on --n messages from the SMS Spam Collection, fp32, or as --score-args say; --warmup
first runs each checkout's scoring once, untimed (caches, such as ONNX Runtime's graphs).

    python benchmarks/ab_bench.py --before /tmp/before --no-train --warmup --n 1500 \
        --score-args "--runtime onnxruntime --quantize int8"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from score_bench import SMS, messages, random_classifier  # noqa: E402


def spamjob(root: Path, args: list[str]) -> float:
    """Run `python -m spamjob.cli ARGS` with spamjob imported from `root`; returns process seconds."""
    env = {**os.environ, "PYTHONPATH": str(root.resolve())}
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "spamjob.cli", *args], env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True
    )
    if r.returncode:
        sys.exit(f"ab_bench: spamjob from {root} failed: {r.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the earlier commit")
    ap.add_argument("--after", type=Path, default=HERE.parent, help="checkout to compare [this one]")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n", type=int, default=2000, help="messages scored")
    ap.add_argument("--sms", type=Path, default=SMS)
    ap.add_argument("--score-args", default="", help="extra `spamjob score` options, the same for both")
    ap.add_argument("--no-train", action="store_true", help="scoring runs only")
    ap.add_argument("--warmup", action="store_true", help="one untimed scoring run per checkout first")
    a = ap.parse_args()
    extra = shlex.split(a.score_args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ab-bench-") as tmp:
        tmp = Path(tmp)
        clf = random_classifier(tmp / "clf", 12, 768, 12, sms=a.sms)  # and the reference splits in tmp/data
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": messages(a.n, sms=a.sms)}), tmp / "in.parquet", row_group_size=a.n // 8)
        score = ["score", str(tmp / "in.parquet"), "--model", str(clf), "--no-progress", *extra]
        for name, root in (("before", a.before), ("after", a.after)) if a.warmup else ():
            spamjob(root, [*score, "--out", str(tmp / f"warmup-{name}")])
        for rnd in range(a.rounds):
            for name, root in (("before", a.before), ("after", a.after)):
                if not a.no_train:
                    rows.append(train_row(root, tmp, name, rnd))
                out = tmp / f"score-{name}-{rnd}"
                proc = spamjob(root, [*score, "--out", str(out)])
                r = json.loads((out / "report.json").read_text())
                what = f"score {a.score_args or 'fp32'}"
                rows.append((name, rnd, what, proc, r["wall_time_s"], f"{r['rows_per_s']:.1f} msg/s"))
    print(f"before: {a.before}  after: {a.after}")
    print(f"{'checkout':9}{'round':>6}  {'run':12}{'process s':>10}{'job s':>8}  result")
    for name, rnd, what, proc, job, result in rows:
        print(f"{name:9}{rnd:>6}  {what:12}{proc:>10.1f}{job:>8.1f}  {result}")


def train_row(root: Path, tmp: Path, name: str, rnd: int) -> tuple:
    """The default recipe at 4 layers x 256 dims, 5 epochs, from `root`."""
    run = tmp / f"train-{name}-{rnd}"
    dims = ["--weights", "random", "--n-layers", "4", "--emb-dim", "256", "--n-heads", "4", "--epochs", "5"]
    proc = spamjob(root, ["train", "--data", str(tmp / "data"), "--out", str(run), *dims])
    m = json.loads((run / "metrics.json").read_text())
    return (name, rnd, "train 4x256", proc, m["wall_time_s"], f"test acc {m['test']['accuracy']:.2%}")


if __name__ == "__main__":
    main()
