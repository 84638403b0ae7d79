"""spamjob.options and spamjob.fields: a dataclass field declares an option once: its type,
choices, bounds, help and command-line spelling; values are checked the same way from the CLI
and from Python."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from spamjob.errors import SpamjobError
from spamjob.fields import field_problems, option
from spamjob.options import from_fields


@dataclass(frozen=True)
class Example:
    names: tuple[str, ...] = option(argument=True)
    """Things to name."""
    out: str = option(folder=True)
    """Where to write."""
    kind: Literal["a", "b"] = option("a", alias="--sort")
    """One of two kinds."""
    n: int = option(2, min=1)
    """How many."""
    p: float | None = option(None, min=0, below=1, metavar="P")
    """A probability below 1."""
    cols: tuple[str, ...] | None = option(None, metavar="A,B")
    """Columns."""
    progress: bool = option(True, flag="--no-progress")
    """--no-progress turns it off."""


@click.command()
@from_fields(Example)
def command(**params) -> None:
    click.echo(repr(Example(**params)))


def run(*args: str):
    return CliRunner().invoke(command, list(args))


def test_each_field_becomes_its_option_with_the_docstring_as_help():
    r = run("--help")
    assert r.exit_code == 0
    for text in ("[NAMES]...", "--out DIRECTORY", "[a|b]", "One of two kinds.", "--p P", "--cols A,B", "--no-progress"):
        assert text in r.output, text


def test_values_parse_into_the_dataclass():
    r = run("x", "y", "--out", "o", "--kind", "b", "--n", "3", "--p", "0.25", "--cols", "a, b,,c", "--no-progress")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == repr(Example(("x", "y"), "o", "b", 3, 0.25, ("a", "b", "c"), False))


def test_a_former_spelling_is_still_accepted():
    r = run("x", "--out", "o", "--sort", "b")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == repr(Example(("x",), "o", "b"))
    assert "--kind, --sort [a|b]" in run("--help").output


@pytest.mark.parametrize("args", [["--kind", "c"], ["--n", "0"], ["--p", "1"], ["--p", "-0.1"]])
def test_out_of_range_values_are_usage_errors(args):
    r = run("x", "--out", "o", *args)
    assert r.exit_code == 2 and "Invalid value" in r.output


def test_a_uri_for_a_folder_is_one_line():
    r = run("x", "--out", "s3://bucket/o")
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        "Error: --out s3://bucket/o is a URI; this option takes a local (or mounted) folder, so give a local path"
    ]


def test_the_same_checks_hold_from_python():
    assert field_problems(Example(("x",), "o")) == []
    problems = field_problems(Example(("x",), "gs://b", kind="c", n=0, p=1.0))
    assert "--out gs://b is a URI; this option takes a local (or mounted) folder, so give a local path" in problems
    assert "kind must be one of a, b, got 'c'" in problems and "n must be >= 1, got 0" in problems
    assert "p must be < 1, got 1.0" in problems


def test_commands_check_their_options_when_built():
    from spamjob.command_config import ClassifyConfig, ExportConfig

    with pytest.raises(SpamjobError, match="threshold must be < 1"):
        ClassifyConfig(texts=(), model="m", threshold=1.0)
    with pytest.raises(SpamjobError, match="--quantize is for --format onnx"):
        ExportConfig(run_dir="r", out="o", quantize="int8")
