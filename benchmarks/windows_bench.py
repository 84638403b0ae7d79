"""Small work units: the same messages scored as one window and as N windows, in one process.

A Parquet row group (or CSV block) is a work unit, and a unit is scored in its own windows:
its rows are length-sorted and cut into token-budgeted batches on their own. This prints, for
one window and for N, the padded tokens the batches hold and the model workers' seconds
(N windows launched back to back, as `spamjob score` does), on a random gpt2-small-sized
classifier (torch, fp32, CPU, one worker per usable CPU).

    python benchmarks/windows_bench.py --n 1500 --windows 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_bench import SMS, machine, messages, random_classifier  # noqa: E402


def padded_tokens(ids, clf, batch_tokens: int) -> int:
    from spamjob.scoring.runtimes.launch import sorted_batches
    from spamjob.tokens import TokenIds

    tokens = TokenIds.from_lists(ids)
    _, batches = sorted_batches(tokens, clf.max_length, clf.padding, batch_tokens)
    kept = tokens.lengths.clip(1, clf.max_length)
    return sum(len(rows) * int(kept[rows].max()) for rows in batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--batch-tokens", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--sms", type=Path, default=SMS, help="the SMS Spam Collection file")
    a = ap.parse_args()

    from spamjob.artifact import load_classifier
    from spamjob.scoring.runtimes.pytorch import TorchPredictor as Predictor
    from spamjob.text import encode
    from spamjob.threads import usable_cpus

    with tempfile.TemporaryDirectory() as tmp:
        clf = load_classifier(random_classifier(Path(tmp) / "clf", a.layers, a.dim, a.heads))
    ids = encode(clf.tokenizer, messages(a.n, sms=a.sms))
    size = -(-a.n // a.windows)
    layouts = {"1 window": [ids], f"{a.windows} windows": [ids[i : i + size] for i in range(0, a.n, size)]}
    torch.set_num_threads(1)
    workers = usable_cpus()
    predictor = Predictor(clf, torch.device("cpu"), "no", a.batch_tokens, workers)
    predictor(ids[:64])  # warm-up
    print(f"machine: {machine()}; {a.n} messages, {a.layers} layers x {a.dim} dims, {workers} workers")
    print(f"{'layout':<12} {'padded tokens':>14} {'seconds':>8}  vs 1 window")
    base = None
    for name, windows in layouts.items():
        t = time.perf_counter()
        for launched in [predictor.launch(w) for w in windows]:
            launched.result()
        seconds = time.perf_counter() - t
        tokens = sum(padded_tokens(w, clf, a.batch_tokens) for w in windows)
        base = base or (tokens, seconds)
        ratios = f"tokens {tokens / base[0]:.3f}x, time {seconds / base[1]:.3f}x"
        print(f"{name:<12} {tokens:>14,} {seconds:>8.2f}  {ratios}")
    predictor.close()


if __name__ == "__main__":
    main()
