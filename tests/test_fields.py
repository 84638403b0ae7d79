"""spamjob.fields: options declared once on a dataclass field; `field_problems` checks choices,
bounds and URIs (spamjob.options, tested in test_options.py, builds the CLI from the same fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from spamjob.fields import choices, field_problems, option, optional_type, uri_problem


@dataclass
class Opts:
    size: Literal["small", "large"] | None = option(None)
    rate: float = option(0.5, min=0.0, below=1.0)
    out: str = option(".", folder=True)
    inputs: tuple[str, ...] = option((), store=True, argument=True)


def test_choices_and_optional_types():
    assert choices(Literal["a", "b"]) == ("a", "b") and choices(int) == ()
    assert optional_type(int | None) is int and optional_type(int | str) == int | str


def test_every_problem_is_one_line_in_the_option_spelling():
    assert field_problems(Opts()) == []
    problems = field_problems(Opts(size="huge", rate=1.0, out="s3://b/x", inputs=("a.csv", "ftp://h/x")))
    assert problems == [
        "size must be one of small, large, got 'huge'",
        "rate must be < 1.0, got 1.0",
        "--out s3://b/x is a URI; this option takes a local (or mounted) folder, so give a local path",
        "INPUTS ftp://h/x: unsupported scheme ftp://; use s3://, gs:// or abfs:// (or a local path)",
    ]
    assert field_problems(Opts(rate=-0.1)) == ["rate must be >= 0.0, got -0.1"]


@pytest.mark.parametrize(
    "value, problem",
    [
        ("s3://bucket/prefix", None),
        ("gs://bucket/x", None),
        ("abfs://container@account.dfs.core.windows.net/x", None),  # an Azure account is not a credential
        ("file:///tmp/x", None),
        ("local/path", None),
        ("s3://", "no bucket named"),
        ("s3://KEY:hunter2@bucket/x", "credentials and options in a URI are refused"),
        ("gs://bucket/x?token=abc", "credentials and options in a URI are refused"),
        ("hdfs://namenode/x", "unsupported scheme hdfs://"),
    ],
)
def test_store_uris(value, problem):
    got = uri_problem("--out", value, store=True)
    assert (got is None) if problem is None else (problem in got)
    if got:
        assert "hunter2" not in got and "abc" not in got  # never echoed
