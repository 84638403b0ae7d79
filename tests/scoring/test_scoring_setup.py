"""spamjob.scoring.setup: what a job resolves before scoring. Each input with its schema and
columns (`read_inputs`), and one output schema for every part (`output_schema`): the kept
columns' union in order of first appearance, Parquet's types kept and narrowed by the footers,
CSV's as text, then the four columns scoring adds."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from spamjob.scoring.columns import OUTPUT_COLUMNS
from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.csv_reader import CsvOptions
from spamjob.scoring.setup import output_schema, read_inputs


def inputs(tmp_path, **options):
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"id": pa.array([1, 2], pa.int64()), "text": ["a", "b"], "when": pa.array([3, 4], pa.int32())}),
        tmp_path / "in" / "a.parquet",
    )
    (tmp_path / "in" / "b.csv").write_text("text,id,channel\nhello,7,sms\n")
    (tmp_path / "in" / "c.csv").write_text("")
    cfg = ScoreConfig(inputs=(str(tmp_path / "in"),), model="unused", out=str(tmp_path / "o"), **options)
    return read_inputs(cfg, CsvOptions())[0]


def test_each_input_has_its_schema_and_columns(tmp_path):
    a, b, c = inputs(tmp_path)
    assert a.columns.text == b.columns.text == "text" and c.schema is None and c.columns is None
    assert a.columns.keep == ("id", "text", "when") and b.columns.keep == ("text", "id", "channel")
    assert [f.type for f in a.kept_fields({})] == [pa.int64(), pa.string(), pa.int32()]
    assert {f.type for f in b.kept_fields({})} == {pa.large_string()}  # CSV: every value as text


def test_one_output_schema_for_every_part(tmp_path):
    found = inputs(tmp_path)
    schema = output_schema(found, "parquet", {})
    assert schema.names == ["id", "text", "when", "channel", *OUTPUT_COLUMNS]
    # id: int64 from Parquet, digits as text from CSV: one type that holds both exactly
    assert schema.field("id").type == pa.large_string() and schema.field("when").type == pa.int32()
    as_csv = output_schema(found, "csv", {})
    assert as_csv.names == schema.names


def test_a_kept_column_named_as_an_output_column_is_renamed(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": ["a"], "prediction": ["spam"]}), tmp_path / "in" / "a.parquet")
    cfg = ScoreConfig(inputs=(str(tmp_path / "in"),), model="unused", out=str(tmp_path / "o"))
    (a,) = read_inputs(cfg, CsvOptions())[0]
    schema = output_schema([a], "parquet", {"prediction": "input_prediction"})
    assert schema.names[:2] == ["text", "input_prediction"] and schema.names.count("prediction") == 1
