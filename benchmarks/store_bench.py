"""The same `spamjob score` job from local disk and from an S3 endpoint, side by side in one run.

Inputs: a Parquet file (row groups of --group-rows) and a CSV file read in 1 MB byte blocks,
real SMS messages. Both ways, whole `spamjob score` processes, alternating, --repeats times:
local files into a local --out, and the same files in a bucket into an --out in the bucket. The
S3 endpoint is moto's server on 127.0.0.1 (tests/store_servers.py), behind a proxy that counts the
requests; printed: rows/s (the report's), process wall seconds, and requests per work unit
(every request of the run: listing, plan, footers, ranged reads, parts, sidecars, report).
A local endpoint has no network latency: the figures show spamjob's own cost of a store
(requests, uploads, per-unit bookkeeping), not a region's round trips.

    python benchmarks/store_bench.py                  # 20,000 messages, 4 layers x 256
    python benchmarks/store_bench.py --smoke          # tiny, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE), str(REPO / "tests")]
from score_bench import SMS, machine, messages, random_classifier  # noqa: E402
from store_servers import FaultProxy, MotoS3, put_folder, use  # noqa: E402


def make_inputs(folder: Path, n: int, group_rows: int, sms: Path) -> int:
    """in.parquet (n messages) and in.csv (n messages, every third over two lines); returns rows."""
    folder.mkdir(parents=True)
    texts = messages(n, 7, sms)
    labels = ["ham", "spam"] * (n // 2) + ["ham"] * (n % 2)
    pq.write_table(pa.table({"id": range(n), "text": texts, "label": labels}), folder / "in.parquet", group_rows)
    wrapped = [t.replace(" ", "\n", 1) if i % 3 == 0 else t for i, t in enumerate(texts)]
    pd.DataFrame({"id": range(n), "text": wrapped, "label": labels}).to_csv(folder / "in.csv", index=False)
    return 2 * n


def run(inputs: list[str], model: str, out: str, env: dict) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "spamjob.cli", "score", *inputs, "--model", model, "--out", out]
    t0 = time.perf_counter()
    r = subprocess.run(
        [*cmd, "--block-mb", "1", "--label-column", "label", "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"spamjob score failed:\n{r.stderr[-3000:]}")
    return r, wall


def report_of(out: str) -> dict:
    from spamjob import stores

    data = stores.read_bytes(stores.join(out, "report.json")) if "://" in out else Path(out, "report.json").read_bytes()
    return json.loads(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="messages per input file (two files)")
    ap.add_argument("--group-rows", type=int, default=2_000, help="Parquet row-group size (a unit each)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="2 layers x 32 dims, 2,000 messages, one repeat")
    ap.add_argument("--sms", type=Path, default=SMS)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.smoke:
        a.n, a.group_rows, a.layers, a.dim, a.repeats = 2_000, 500, 2, 32, 1
    server = MotoS3()
    proxy = FaultProxy(server.endpoint, lambda method, path, n: None)  # counts, never fails
    env = server.env(proxy.endpoint)
    use(env)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        tmp = Path(tmp)
        rows = make_inputs(tmp / "in", a.n, a.group_rows, a.sms)
        model = random_classifier(tmp / "model", a.layers, a.dim, max(a.dim // 64, 2))
        bucket = server.bucket("bench")
        put_folder(tmp / "in", f"{bucket}/in")
        put_folder(model, f"{bucket}/model")
        local_in = [str(tmp / "in" / "in.parquet"), str(tmp / "in" / "in.csv")]
        s3_in = [f"{bucket}/in/in.parquet", f"{bucket}/in/in.csv"]
        results = {"local disk": [], "S3 endpoint": []}
        for k in range(a.repeats):
            for name in ("local disk", "S3 endpoint") if k % 2 == 0 else ("S3 endpoint", "local disk"):
                s3 = name == "S3 endpoint"
                out = f"{bucket}/out-{k}" if s3 else str(tmp / f"out-{k}")
                before = len(proxy.seen)
                _, wall = run(s3_in if s3 else local_in, f"{bucket}/model" if s3 else str(model), out, env)
                rep = report_of(out)
                units = rep["output"]["parts"]
                requests = len(proxy.seen) - before if s3 else None
                if s3 and k == 0:
                    kinds = breakdown(proxy.seen[before:])
                results[name].append(
                    {"rows_per_s": rep["rows_per_s"], "wall_s": round(wall, 2), "units": units, "requests": requests}
                )
                assert rep["rows"]["read"] == rows, rep["rows"]
    proxy.stop()
    server.stop()
    print_table(a, rows, results)
    print("requests of the first S3 run, by method and what they touched:", json.dumps(kinds))
    if a.json:
        a.json.write_text(json.dumps({"machine": machine(), "rows": rows, "results": results}, indent=2))


def breakdown(seen: list[tuple[str, str, int]]) -> dict[str, int]:
    """Requests by method and the object's kind (the first folder under the output, or the input)."""
    counts: dict[str, int] = {}
    for method, path, _ in seen:
        parts = path.split("?")[0].strip("/").split("/")
        what = parts[2] if len(parts) > 2 and parts[1].startswith("out") else "/".join(parts[1:2]) or "bucket"
        what = what if not what.endswith((".json", ".md", ".png")) or "/" in what else what
        key = f"{method} {what}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def print_table(a, rows: int, results: dict) -> None:
    print(f"# store_bench: {rows:,} rows (Parquet + CSV in 1 MB blocks), {a.layers} layers x {a.dim}; {machine()}")
    print("| where | rows/s (report) | process wall s | units | requests per unit |")
    print("|---|---|---|---|---|")
    best = {}
    for name, runs in results.items():
        rate = max(r["rows_per_s"] for r in runs)
        best[name] = rate
        wall = min(r["wall_s"] for r in runs)
        per_unit = f"{runs[0]['requests'] / runs[0]['units']:.1f}" if runs[0]["requests"] is not None else "-"
        print(f"| {name} | {rate:,.1f} | {wall:.2f} | {runs[0]['units']} | {per_unit} |")
    print(f"S3 endpoint / local disk, rows/s: {best['S3 endpoint'] / best['local disk']:.2f}x (best of {a.repeats})")


if __name__ == "__main__":
    main()
