"""spamjob.scoring.stages and the scoring loop built on them: stages overlap instead of adding up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spamjob.scoring.stages import SerialWorker, prefetch


def test_prefetch_runs_ahead_keeps_order_and_reraises():
    seen = []

    def items():
        for i in range(5):
            seen.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert seen == [0, 1, 2, 3]  # one handed out, two queued, one waiting to be queued
    assert list(it) == [1, 2, 3, 4]

    def failing():
        yield 1
        raise ValueError("bad block")

    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad block"):
        next(it)


def test_prefetch_thread_stops_when_the_consumer_does():
    before = threading.active_count()
    it = prefetch(iter(range(1000)), depth=1)
    assert next(it) == 0
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_writer_runs_calls_in_order_and_hands_back_the_first_error():
    done = []
    with SerialWorker(depth=1) as w:
        for i in range(5):
            w.submit(done.append, i)
        w.join()
        assert done == [0, 1, 2, 3, 4]

    def fail():
        raise OSError("disk full")

    w = SerialWorker()
    w.submit(fail)
    w.submit(done.append, "dropped")  # may be queued before the failure is seen
    with pytest.raises(OSError, match="disk full"):
        w.join()
    with pytest.raises(OSError, match="disk full"):
        w.submit(done.append, "refused")
    w.close()
    assert "dropped" not in done and "refused" not in done


WINDOWS, UNITS, SLEEP = 32, 4, 0.05  # 4 row groups of 8 windows of 10 rows; each stage sleeps per window


def stand_in_stages(monkeypatch, job, slow: dict[str, float]) -> None:
    """Reading, tokenizing, the model (a one-at-a-time device, like a GPU) and writing, each sleeping
    `slow.get(stage, SLEEP)` per window around the real work."""
    from spamjob.scoring.formats.parquet_files import ParquetFormat
    from spamjob.scoring.parts import PartWriter

    real_read, real_write = ParquetFormat.read_unit, PartWriter.write
    real_prepare, real_launch = job.scorer.prepare, job.scorer.launch
    device = ThreadPoolExecutor(1)

    def read(*args, **kwargs):
        for chunk in real_read(*args, **kwargs):
            time.sleep(slow.get("read", SLEEP))
            yield chunk

    def prepare(texts):
        time.sleep(slow.get("tokenize", SLEEP))
        return real_prepare(texts)

    def launch(window):
        return device.submit(lambda: time.sleep(slow.get("model", SLEEP)) or real_launch(window).result())

    def write(self, table):
        time.sleep(slow.get("write", SLEEP))
        real_write(self, table)

    monkeypatch.setattr(ParquetFormat, "read_unit", read)
    monkeypatch.setattr(job.scorer, "prepare", prepare)
    monkeypatch.setattr(job.scorer, "launch", launch)
    monkeypatch.setattr(PartWriter, "write", write)


def run_with_stand_ins(monkeypatch, classifier_dir, tmp_path, slow: dict[str, float]) -> float:
    from spamjob.scoring.config import ScoreConfig
    from spamjob.scoring.job import finish
    from spamjob.scoring.loop import score_all
    from spamjob.scoring.setup import setup

    texts = [f"message number {i}, win a prize" if i % 3 else f"see you at {i}" for i in range(WINDOWS * 10)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet", row_group_size=WINDOWS * 10 // UNITS)
    job = setup(
        ScoreConfig(
            inputs=(str(tmp_path / "in.parquet"),),
            model=str(classifier_dir),
            out=str(tmp_path / "out"),
            window_rows=10,
            progress=False,
            threads=1,
        )
    )
    stand_in_stages(monkeypatch, job, slow)
    t0 = time.perf_counter()
    score_all(job)
    wall = time.perf_counter() - t0
    job.bar.close()
    report = finish(job, t0)
    assert report["rows"]["scored"] == WINDOWS * 10 and report["output"]["parts"] == UNITS
    return wall


def test_stages_overlap_within_a_quarter_of_the_slowest(monkeypatch, classifier_dir, tmp_path):
    """Four stages of 0.05 s per window: 32 windows take ~1.6 s overlapped, 6.4 s one after another."""
    wall = run_with_stand_ins(monkeypatch, classifier_dir, tmp_path, {})
    assert wall <= 1.25 * WINDOWS * SLEEP, f"{wall:.2f} s for stages of {WINDOWS * SLEEP:.2f} s each"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["read", "tokenize", "model", "write"])
def test_the_slowest_stage_sets_the_pace(monkeypatch, classifier_dir, tmp_path, stage):
    wall = run_with_stand_ins(monkeypatch, classifier_dir, tmp_path, {stage: 2 * SLEEP})
    assert wall <= 1.25 * WINDOWS * 2 * SLEEP, f"{wall:.2f} s; {stage} alone takes {WINDOWS * 2 * SLEEP:.2f} s"
