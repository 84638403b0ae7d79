"""The choices spamjob makes for ONNX Runtime (`spamjob score --runtime onnxruntime`), measured side
by side in one run on the same graph and messages:

(1) int8 recipes: ONNX Runtime's dynamic quantization as it comes, and with the options spamjob
    may pass (only MatMuls whose weights are constants, per-channel weight scales): label
    agreement with the fp32 graph at the classifier's threshold, and msg/s;
(2) thread layouts, fp32 and int8, quiet and beside --background-load busy processes:
    workers: one session, W threads each running their own batches on one intra-op thread,
             no spinning (W = the CPUs this process may use);
    pool:    one caller, one session with W intra-op threads, spinning (ONNX Runtime's default);
    pool, no spinning: the same with spinning off;
(3) with --exporters, instead: the graphs of the TorchScript exporter (deprecated) and of the
    dynamo one (spamjob's), each exported in a fresh process as a job's first run does
    (export, check against spamjob, int8): seconds, largest difference, fp32 and int8 msg/s.

Every pass tokenizes, length-sorts and batches as `spamjob score` does (OrtPredictor, 512 padded
tokens per batch). The classifier is gpt2-small-sized with random weights (--model RUN_DIR for
a trained one), messages resampled from the SMS Spam Collection.

    python benchmarks/ort_bench.py                    # 2,000 messages, gpt2-small dims
    python benchmarks/ort_bench.py --exporters        # the exporters compared
    python benchmarks/ort_bench.py --smoke            # tiny, for CI
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
from load import background_load  # noqa: E402
from score_bench import SMS, machine, messages, random_classifier  # noqa: E402

RECIPES = {
    "as it comes": {},
    "constant weights only": {"extra_options": {"MatMulConstBOnly": True}},
    "per-channel": {"per_channel": True},
    "constant weights only, per-channel": {"per_channel": True, "extra_options": {"MatMulConstBOnly": True}},
}


def quantize(src: Path, dest: Path, options: dict) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, **options)
    return dest


def layouts(cpus: int) -> dict[str, tuple[dict, int]]:
    """name -> (session settings, worker threads)."""
    return {
        "workers": ({"workers": cpus, "intra_op_threads": 1, "spinning": False}, cpus),
        "pool": ({"workers": 1, "intra_op_threads": cpus, "spinning": True}, 1),
        "pool, no spinning": ({"workers": 1, "intra_op_threads": cpus, "spinning": False}, 1),
    }


def timed_pass(clf, graph: Path, settings: dict, workers: int, ids) -> tuple[float, np.ndarray]:
    from spamjob.scoring.runtimes.ort_session import OrtPredictor, open_session

    predictor = OrtPredictor(clf, open_session(graph, settings), 512, workers)
    predictor(ids[:64])  # warm-up: the session's first run allocates
    t = time.perf_counter()
    probs = predictor(ids)
    seconds = time.perf_counter() - t
    predictor.close()
    return seconds, probs


EXPORT = """
import sys, time
from spamjob.export import onnx
from spamjob.scoring.runtimes import ort_graph
ort_graph.exporter = lambda: sys.argv[1]
t = time.perf_counter()
meta = onnx.export_onnx(sys.argv[2], sys.argv[3], "int8", test_messages=int(sys.argv[4]))
print(time.perf_counter() - t, meta["checked_with_onnxruntime"]["fp32"]["max_abs_diff"])
"""


def exporters(run_dir: Path, clf, ids, tmp: Path, cpus: int, checked: int) -> list[dict]:
    """Each exporter in a fresh process (imports included), then its graphs' speed in this one."""
    rows = []
    for how in ("torchscript", "dynamo"):
        out = tmp / how
        args = [sys.executable, "-c", EXPORT, how, str(run_dir), str(out), str(checked)]
        seconds, diff = map(float, subprocess.run(args, check=True, capture_output=True, text=True).stdout.split())
        settings, workers = layouts(cpus)["workers"]
        fp32, _ = timed_pass(clf, out / "model.onnx", settings, workers, ids)
        int8, _ = timed_pass(clf, out / "model.int8.onnx", settings, workers, ids)
        rows.append(
            {"part": "exporter", "name": how, "export_s": seconds, "max_abs_diff": diff, "fp32_s": fp32, "int8_s": int8}
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="messages per pass")
    ap.add_argument("--model", type=Path, help="a trained run folder instead of random gpt2-small weights")
    ap.add_argument("--background-load", type=int, default=1, metavar="N", help="busy processes for the loaded runs")
    ap.add_argument("--smoke", action="store_true", help="2-layer 32-dim model, 200 messages")
    ap.add_argument("--exporters", action="store_true", help="compare the exporters' graphs (part 3) only")
    ap.add_argument("--sms", type=Path, default=SMS)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    dims = (2, 32, 2) if a.smoke else (12, 768, 12)
    n = 200 if a.smoke else a.n

    from spamjob.artifact import load_classifier
    from spamjob.export.onnx import export_onnx
    from spamjob.scoring.runtimes.ort_graph import INT8_OPTIONS
    from spamjob.text import encode
    from spamjob.threads import usable_cpus

    cpus = usable_cpus()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ort-bench-") as tmp:
        tmp = Path(tmp)
        run_dir = a.model or random_classifier(tmp / "clf", *dims)
        clf = load_classifier(run_dir)
        texts = messages(n, seed=5, sms=a.sms)
        ids = encode(clf.tokenizer, texts)
        if a.exporters:
            print_exporters(exporters(run_dir, clf, ids, tmp, cpus, 32), n, dims, cpus)
            return
        export_onnx(run_dir, tmp / "onnx", texts=texts[:32])
        fp32 = tmp / "onnx" / "model.onnx"
        settings, workers = layouts(cpus)["workers"]
        seconds, want = timed_pass(clf, fp32, settings, workers, ids)
        rows.append({"part": "int8", "name": "fp32 (the reference)", "s": seconds, "agreement": 1.0})
        t = clf.threshold
        for k, (name, options) in enumerate(RECIPES.items()):
            seconds, got = timed_pass(clf, quantize(fp32, tmp / f"int8-{k}.onnx", options), settings, workers, ids)
            same = float(((got > t) == (want > t)).mean())
            mine = " (spamjob's)" if options == INT8_OPTIONS else ""
            rows.append({"part": "int8", "name": name + mine, "s": seconds, "agreement": same})
        graphs = {"fp32": fp32, "int8": quantize(fp32, tmp / "int8.onnx", INT8_OPTIONS)}
        for load in (0, a.background_load):
            with background_load(load):
                for precision, graph in graphs.items():
                    for name, (settings, workers) in layouts(cpus).items():
                        seconds, _ = timed_pass(clf, graph, settings, workers, ids)
                        rows.append({"part": "layout", "name": f"{precision}, {name}", "load": load, "s": seconds})
    for r in rows:
        r["msg_per_s"] = n / r["s"]
    print(f"# ort_bench: {n:,} messages, {dims[0]} layers x {dims[1]} dims; {machine()}; usable CPUs: {cpus}")
    print("| int8 recipe | msg/s | label agreement with fp32 |\n|---|---|---|")
    for r in (r for r in rows if r["part"] == "int8"):
        print(f"| {r['name']} | {r['msg_per_s']:,.1f} | {r['agreement'] * 100:.2f}% |")
    print("| layout | busy processes | msg/s | vs workers |\n|---|---|---|---|")
    for r in (r for r in rows if r["part"] == "layout"):
        base = next(
            x for x in rows if x.get("load") == r["load"] and x["name"] == r["name"].split(",")[0] + ", workers"
        )
        print(f"| {r['name']} | {r['load']} | {r['msg_per_s']:,.1f} | {r['msg_per_s'] / base['msg_per_s']:.2f}x |")
    if a.json:
        a.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


def print_exporters(rows: list[dict], n: int, dims: tuple, cpus: int) -> None:
    print(
        f"# ort_bench --exporters: {n:,} messages, {dims[0]} layers x {dims[1]} dims; {machine()}; usable CPUs: {cpus}"
    )
    print("| exporter | export + check + int8, fresh process (s) | max abs diff vs spamjob | fp32 msg/s | int8 msg/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        speeds = f"{n / r['fp32_s']:,.1f} | {n / r['int8_s']:,.1f}"
        print(f"| {r['name']} | {r['export_s']:.1f} | {r['max_abs_diff']:.1e} | {speeds} |")


if __name__ == "__main__":
    main()
