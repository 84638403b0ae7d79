"""The machine a benchmark ran on, measured in the same run: the CPU (model, matrix units as
spamjob.hardware reads them), torch's threads, and its GEMM peaks at gpt2-small's shape
(512x768 @ 768x3072) in fp32, bf16 and int8 (`torch._int_mm`), best of a few timed runs.

    python benchmarks/machine.py            # prints the lines every benchmark prints first
    python benchmarks/machine.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from spamjob import hardware

M, K, N = 512, 768, 3072  # a batch of 512 tokens through gpt2-small's first MLP matmul


def gemm_peak(dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Best GFLOP/s (GOP/s for int8) of M x K @ K x N in `dtype` over ~`seconds`."""
    if dtype is torch.int8:
        a = torch.randint(-128, 127, (M, K), dtype=torch.int8)
        b = torch.randint(-128, 127, (K, N), dtype=torch.int8)

        def op():
            return torch._int_mm(a, b)
    else:
        a, b = torch.randn(M, K).to(dtype), torch.randn(K, N).to(dtype)

        def op():
            return a @ b

    for _ in range(3):
        op()  # oneDNN picks and caches its kernel
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(5):
            op()
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * M * K * N / best / 1e9


def describe(peaks: bool = True) -> dict:
    """The CPU, torch's threads and (with `peaks`) the GEMM peaks."""
    cpu = hardware.cpu()
    facts = {
        "cpu": cpu.record(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    if peaks:
        facts["gemm_gflops"] = {
            "fp32": round(gemm_peak(torch.float32), 1),
            "bf16": round(gemm_peak(torch.bfloat16), 1),
            "int8": round(gemm_peak(torch.int8), 1) if hasattr(torch, "_int_mm") else None,
        }
    return facts


def lines(facts: dict) -> list[str]:
    cpu = facts["cpu"]
    out = [
        f"CPU: {cpu['model']} ({facts['machine']}); matrix features: {' '.join(cpu['features']) or 'none'} "
        f"(bf16 unit: {cpu['bf16_unit']}, int8 unit: {cpu['int8_unit']}; read from {cpu['read_from']})",
        f"torch {facts['torch']}, kernels {facts['torch_cpu_capability']}, {facts['threads']} threads",
    ]
    if "gemm_gflops" in facts:
        g = facts["gemm_gflops"]
        out.append(
            f"GEMM {M}x{K}x{N}: fp32 {g['fp32']:,.0f} GFLOP/s, bf16 {g['bf16']:,.0f} GFLOP/s "
            f"({g['bf16'] / g['fp32']:.2f}x), int8 {g['int8'] or 0:,.0f} GOP/s"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    facts = describe()
    print("\n".join(lines(facts)))
    if a.json:
        a.json.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
