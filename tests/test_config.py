"""spamjob.config (and ScoreConfig): validation reports every problem in one line, presets, sizes."""

from __future__ import annotations

import pytest

from spamjob.config import PRESETS, GPTConfig, TrainConfig, canonical_size, config_for, matches_size
from spamjob.errors import SpamjobError
from spamjob.scoring.config import ScoreConfig


def test_gpt_config_round_trip_and_every_problem_at_once():
    cfg = GPTConfig(emb_dim=64, n_heads=4, n_layers=2, context_length=128)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg and cfg.shape() == "64 dims, 2 layers, 4 heads"
    with pytest.raises(SpamjobError) as e:
        GPTConfig(emb_dim=0, n_layers=-1, drop_rate=1.0)
    msg = str(e.value)
    assert "emb_dim must be a positive integer, got 0" in msg and "n_layers must be a positive integer, got -1" in msg
    assert "drop_rate must be in [0, 1), got 1.0" in msg and "\n" not in msg
    with pytest.raises(SpamjobError, match="emb_dim 10 is not divisible by n_heads 3"):
        GPTConfig(emb_dim=10, n_heads=3)
    with pytest.raises(SpamjobError, match=r"unknown model config keys \['n_embd'\]"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_embd": 64})


def test_sizes_and_aliases():
    assert canonical_size(" 355M ") == "gpt2-medium" and canonical_size("GPT2-XL") == "gpt2-xl"
    with pytest.raises(SpamjobError, match="unknown model size 'gpt3'; choose one of gpt2-small"):
        canonical_size("gpt3")
    small = config_for("124M", n_layers=2, emb_dim=None)
    assert (small.emb_dim, small.n_layers, small.n_heads) == (768, 2, 12)
    assert matches_size(config_for("gpt2-large"), "774M") and not matches_size(small, "gpt2-small")


def test_train_config_presets_fill_only_what_is_left_open():
    ref = TrainConfig(preset="reference", pooling="last-token").resolved()
    assert ref.pooling == "last-token"  # given explicitly: kept
    assert {k: getattr(ref, k) for k in PRESETS["reference"] if k != "pooling"} == {
        k: v for k, v in PRESETS["reference"].items() if k != "pooling"
    }
    default = TrainConfig().resolved()
    assert (default.pooling, default.padding, default.prefix_cache, default.compute) == (
        "last-token",
        "dynamic",
        "auto",
        "fast",
    )
    assert TrainConfig().pooling is None  # resolved() returns a copy


def test_train_config_reports_every_problem_in_one_line():
    with pytest.raises(SpamjobError) as e:
        TrainConfig(
            preset="book", trainable="everything", epochs=0, lr=0, max_length=0, n_layers=2, data="d", source="s"
        )
    msg = str(e.value)
    for part in (
        "preset must be one of reference, default, got 'book'",
        "trainable must be one of head, last-block, last-two-blocks, all, lora, got 'everything'",
        "epochs must be >= 1, got 0",
        "max-length must be >= 1, got 0",
        "lr must be > 0",
        "--n-layers only apply to --weights random",
        "give --data or --source, not both",
    ):
        assert part in msg, part
    assert "\n" not in msg
    assert TrainConfig(weights="random", n_layers=2).n_layers == 2


def test_score_config_validation():
    ok = ScoreConfig(inputs=("a.csv",), model="m", out="o", shard="1/3")
    assert ok.plan_options() == {
        "format": "parquet",
        "text_column": None,
        "id_column": None,
        "label_column": None,
        "keep_columns": None,
        "delimiter": None,
        "encoding": "utf-8",
        "block_mb": 16,
        "csv_blocks": "auto",
    }
    with pytest.raises(SpamjobError) as e:
        ScoreConfig(inputs=(), model="m", out="o", format="xlsx", mixed_precision="fp8", quantize="int4", window_rows=0)
    msg = str(e.value)
    for part in (
        "format must be one of parquet, csv, got 'xlsx'",
        "mixed-precision must be one of auto, no, bf16, fp16, got 'fp8'",
        "quantize must be one of int8, got 'int4'",
        "window-rows must be >= 1, got 0",
        "give at least one input file, folder or glob",
    ):
        assert part in msg, part
    for shard in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(SpamjobError, match="shard must be K/N with 0 <= K < N"):
            ScoreConfig(inputs=("a",), model="m", out="o", shard=shard)
    with pytest.raises(SpamjobError, match="--overwrite cannot be combined with --shard"):
        ScoreConfig(inputs=("a",), model="m", out="o", shard="0/2", overwrite=True)
    assert ScoreConfig(inputs=("a",), model="m", out="o", keep_columns=("x", "y")).plan_options()["keep_columns"] == [
        "x",
        "y",
    ]
