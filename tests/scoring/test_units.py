"""spamjob.scoring.units: every unit of every input is dealt to exactly one process, whatever the
format and however many processes; a unit committed before is skipped; a byte block that fails its
check sends its file to be read whole."""

from __future__ import annotations

import gzip
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.output import open_output
from spamjob.scoring.setup import read_inputs
from spamjob.scoring.units import byte_blocks, plan_units, unit_count, units_of

BLOCK = 4096


def inputs_in(folder):
    """Four kinds of input: Parquet row groups, a CSV file in byte blocks, a gzipped CSV file read
    whole, an empty file."""
    folder.mkdir()
    texts = [f"message {i}, call now" for i in range(900)]
    pq.write_table(pa.table({"text": texts[:400]}), folder / "a.parquet", row_group_size=100)
    (folder / "b.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in texts[400:800]))
    (folder / "c.csv.gz").write_bytes(gzip.compress(("text\n" + "".join(f'"{t}"\n' for t in texts[800:])).encode()))
    (folder / "d.csv").write_text("")
    return folder


def job(folder, out, me=0, total=1):
    """What the scheduler reads of a ScoreJob: the inputs as `setup` resolves them, a real output folder."""
    csv = CsvOptions(block_bytes=BLOCK)
    cfg = ScoreConfig(inputs=(str(folder),), model="unused", out=str(out), window_rows=64)
    inputs, _ = read_inputs(cfg, csv)
    accelerator = SimpleNamespace(process_index=me, num_processes=total, is_main_process=me == 0)
    return SimpleNamespace(
        cfg=cfg, csv=csv, inputs=inputs, out=open_output(str(out)), me=me, total=total, accelerator=accelerator
    )


def dealt(folder, out, total):
    """unit name -> (process, rows) over `total` processes."""
    seen = {}
    for me in range(total):
        j = job(folder, out, me, total)
        for unit, chunks in plan_units(j, j.inputs):
            assert unit.name not in seen, f"{unit.name} dealt twice"
            seen[unit.name] = (me, sum(c.batch.num_rows for c in chunks))
    return seen


def test_every_unit_is_dealt_once_over_any_number_of_processes(tmp_path):
    folder = inputs_in(tmp_path / "in")
    j = job(folder, tmp_path / "o")
    by_name = {i.source.path.rsplit("/", 1)[1]: i for i in j.inputs}
    assert byte_blocks(j, by_name["b.csv"]) == 3 and byte_blocks(j, by_name["c.csv.gz"]) == 0
    for total in (1, 2, 3):
        seen = dealt(folder, tmp_path / f"o{total}", total)
        assert sum(rows for _, rows in seen.values()) == 900
        assert {me for me, _ in seen.values()} == set(range(total))  # every process has work
        fixed = 4 + 3 + 1  # row groups, byte blocks, the empty file's one unit (then c.csv.gz's blocks)
        assert len(seen) >= fixed + 1
    assert [unit_count(j, by_name[n]) for n in ("a.parquet", "b.csv", "d.csv")] == [4, 3, 1]
    assert [u.byte_block for u in units_of(j, by_name["b.csv"])] == [True] * 3
    assert [u.byte_block for u in units_of(j, by_name["a.parquet"])] == [False] * 4


def test_a_committed_unit_is_not_dealt_again(tmp_path):
    folder = inputs_in(tmp_path / "in")
    j = job(folder, tmp_path / "o")
    j.out.prepare({"plan": 1}, overwrite=False)
    unit, _ = next(iter(plan_units(j, j.inputs)))
    schema = pa.schema([("text", pa.string())])
    j.out.commit(unit.name, unit.where, j.out.part_writer(unit.name, "parquet"), schema, [], {"rows": 0})
    names = [u.name for u, _ in plan_units(j, j.inputs)]
    assert unit.name not in names and len(names) > 5


def test_a_block_that_fails_its_check_sends_the_file_to_be_read_whole(tmp_path):
    """Quotes no writer makes (a closing quote before a letter): a block's inferred start lies inside
    a quoted field; the file's units then come from reading it whole, each record once."""
    (tmp_path / "in").mkdir()
    record = '1,"' + "a" * 200 + '\nb"y\n'
    (tmp_path / "in" / "q.csv").write_text("id,text\n" + record * 100)
    j = job(tmp_path / "in", tmp_path / "o")
    j.out.prepare({"plan": 1}, overwrite=False)
    (q,) = j.inputs
    assert byte_blocks(j, q) > 1
    rows = sum(sum(c.batch.num_rows for c in chunks) for _, chunks in plan_units(j, j.inputs))
    assert byte_blocks(j, q) == 0 and "reason" in j.out.source_record(q.source.key)
    whole = sum(sum(c.batch.num_rows for c in chunks) for _, chunks in plan_units(j, j.inputs))
    assert whole == 100 and rows < 100  # the block that failed gave nothing, nor those after it
    assert [u.byte_block for u in units_of(j, q)] == [False] * unit_count(j, q)
