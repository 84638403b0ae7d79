"""What this machine's CPU can do for a model, read once from what the kernel reports
(/proc/cpuinfo's flags: x86's AMX, AVX-512 BF16/VNNI, AVX2; Arm's bf16 and i8mm), never measured
at start: the matrix units that make bf16 (and int8) matrix products several times faster than
fp32, which `--mixed-precision auto` follows (spamjob.config.resolve_mixed_precision).

`SPAMJOB_CPU_FEATURES` replaces what is read ("" or "none": no such unit; else a comma list of
flags), so that tests and benchmarks can take the path of another CPU on this one.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

ENV = "SPAMJOB_CPU_FEATURES"
CPUINFO = Path("/proc/cpuinfo")
# The flags that decide a precision, as Linux names them (x86 `flags`, Arm `Features`).
KNOWN = (
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "avx512f",
    "avx2",
    "bf16",
    "i8mm",
)
BF16_UNITS = ("amx_bf16", "avx512_bf16", "bf16")  # bf16 dot products in hardware (AMX tiles, AVX-512, Arm)
INT8_UNITS = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm")


@dataclass(frozen=True)
class Cpu:
    """The CPU's model name and matrix features, and where they were read."""

    model: str
    features: tuple[str, ...]
    source: str  # /proc/cpuinfo, SPAMJOB_CPU_FEATURES, or "none found" (another OS: no unit assumed)

    @property
    def bf16_unit(self) -> str | None:
        """The unit that does bf16 matrix products natively, if any (AMX first)."""
        return next((f for f in BF16_UNITS if f in self.features), None)

    @property
    def int8_unit(self) -> str | None:
        return next((f for f in INT8_UNITS if f in self.features), None)

    def record(self) -> dict:
        """As report.json and metrics.json record it."""
        return {
            "model": self.model,
            "features": list(self.features),
            "bf16_unit": self.bf16_unit,
            "int8_unit": self.int8_unit,
            "read_from": self.source,
        }


def parse_cpuinfo(text: str) -> Cpu:
    """The first processor's model name and known features from /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor is enough: they are alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Model") or fields.get("CPU part") or platform.processor()
    return Cpu(model or "unknown", tuple(f for f in KNOWN if f in flags), str(CPUINFO))


def parse_override(value: str) -> tuple[str, ...]:
    given = {f.strip().lower() for f in value.split(",")} - {"", "none"}
    return tuple(f for f in KNOWN if f in given) + tuple(sorted(given - set(KNOWN)))


@functools.cache
def cpu() -> Cpu:
    """This machine's CPU, read once per process."""
    found = parse_cpuinfo(CPUINFO.read_text(errors="replace")) if CPUINFO.is_file() else None
    model = found.model if found else (platform.processor() or platform.machine() or "unknown")
    if ENV in os.environ:
        return Cpu(model, parse_override(os.environ[ENV]), ENV)
    return found or Cpu(model, (), "none found")
