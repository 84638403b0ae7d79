"""What one scoring process reads of a large CSV file: its own byte blocks (`--csv-blocks auto`)
against the whole file parsed to keep its blocks (`--csv-blocks off`), side by side in one run.

The file is made of real SMS messages as pandas writes them (every third one spanning two lines,
so quoted newlines cross block boundaries). For each number of processes P, process 0's share
is read both ways (every process's share costs about the same); printed: seconds, MB read from
the file and rows kept (Arrow's streaming blocks and byte blocks end at nearby records, not the
same ones). Before timing, every process's blocks are read once and checked to give
exactly the records of reading the file whole.

    python benchmarks/csv_read_bench.py                   # 512 MB, 16 MB blocks, P = 1, 4, 16, 64
    python benchmarks/csv_read_bench.py --mb 32 --block-mb 1 --processes 1,4   # a quick look
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from score_bench import SMS, messages  # noqa: E402

from spamjob.scoring import csv_reader as csvsplit  # noqa: E402
from spamjob.scoring.csv_reader import CsvOptions, iter_csv_blocks  # noqa: E402
from spamjob.scoring.inputs import discover, schema_of  # noqa: E402


class Counted(io.FileIO):
    """A file whose reads are counted (bytes)."""

    total = 0

    def read(self, n=-1):
        data = super().read(n)
        Counted.total += len(data)
        return data

    def readinto(self, b):
        n = super().readinto(b)
        Counted.total += n or 0
        return n


def make_file(path: Path, mb: int, sms: Path) -> None:
    texts = messages(20_000, 1, sms)
    texts = [t.replace(" ", "\n", 1) if i % 3 == 0 else t for i, t in enumerate(texts)]
    chunk = pd.DataFrame({"id": range(len(texts)), "text": texts, "label": ["ham", "spam"] * (len(texts) // 2)})
    with open(path, "w") as f:
        f.write("id,text,label\n")
        while f.tell() < mb << 20:
            chunk.to_csv(f, index=False, header=False)


def whole(src, opt, types, me: int, p: int) -> int:
    """--csv-blocks off: the file parsed from its start, this process's blocks kept."""
    return sum(c.batch.num_rows for k, c in iter_csv_blocks(src, opt, types) if k % p == me)


def in_blocks(src, opt, names, types, me: int, p: int) -> int:
    """--csv-blocks auto: only this process's byte blocks."""
    return sum(
        csvsplit.read_block(src, opt, names, types, k).batch.num_rows
        for k in range(csvsplit.block_count(src, opt))
        if k % p == me
    )


def measure(fn, *args) -> tuple[float, float, int]:
    Counted.total = 0
    t0 = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - t0, Counted.total / 2**20, rows


def check(src, opt, names, types) -> int:
    """Every block's records, in order, are the whole file's."""
    off = CsvOptions(block_bytes=opt.block_bytes, in_blocks=False)
    expect = [r for _, c in iter_csv_blocks(src, off, types) for r in c.batch.column("id").to_pylist()]
    got = [
        r
        for k in range(csvsplit.block_count(src, opt))
        for r in csvsplit.read_block(src, opt, names, types, k).batch.column("id").to_pylist()
    ]
    assert got == expect, "byte blocks differ from the whole file"
    return len(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=512, help="size of the CSV file")
    ap.add_argument("--block-mb", type=int, default=16)
    ap.add_argument("--processes", default="1,4,16,64")
    ap.add_argument("--sms", type=Path, default=SMS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "messages.csv"
        make_file(path, args.mb, args.sms)
        src = discover([str(path)])[0]
        opt_auto = CsvOptions(block_bytes=args.block_mb << 20)
        opt_off = CsvOptions(block_bytes=args.block_mb << 20, in_blocks=False)
        names = schema_of(src, opt_auto).names
        types = {n: pa.binary() for n in names}
        rows = check(src, opt_auto, names, types)
        print(
            f"{src.size / 2**20:,.0f} MB, {rows:,} rows, {csvsplit.block_count(src, opt_auto)} blocks of "
            f"{args.block_mb} MB; blocks checked equal to the whole file's records"
        )
        csvsplit.open = lambda p, mode: Counted(p, "r")  # count what a block reads
        sio = csvsplit
        stream = sio._open_stream
        sio._open_stream = lambda s: pa.PythonFile(Counted(s.path, "r"), mode="r")
        try:
            print(
                f"{'processes':>9} | {'off: s':>7} {'MB read':>8} {'rows':>10} | "
                f"{'auto: s':>7} {'MB read':>8} {'rows':>10}"
            )
            for p in map(int, args.processes.split(",")):
                t_off, mb_off, r_off = measure(whole, src, opt_off, types, 0, p)
                t_auto, mb_auto, r_auto = measure(in_blocks, src, opt_auto, names, types, 0, p)
                print(
                    f"{p:>9} | {t_off:>7.2f} {mb_off:>8,.0f} {r_off:>10,} | "
                    f"{t_auto:>7.2f} {mb_auto:>8,.0f} {r_auto:>10,}"
                )
        finally:
            sio._open_stream = stream
            del csvsplit.open


if __name__ == "__main__":
    main()
