"""The `spamjob` console script as a user runs it: help, version, generate, download, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from support import hf_greedy, spamjob, tiny_hf_model, write_hf_dir, write_openai_dir

from spamjob import __version__
from spamjob.cli import cli

COMMANDS = [name for name in cli.commands]


def test_version_and_help_of_every_command():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    assert {"prepare", "download", "generate"} <= set(COMMANDS)
    for name in COMMANDS:
        r = CliRunner().invoke(cli, [name, "--help"])
        assert r.exit_code == 0, name
        assert "Usage: " in r.output and f" {name} " in r.output and "--help" in r.output


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    model = tiny_hf_model(seed=11, n_layer=3, n_embd=48, n_head=3, n_positions=96)
    root = tmp_path_factory.mktemp("gen")
    return model, write_hf_dir(model, root / "hf"), write_openai_dir(model, root / "openai")


# The OpenAI layout reads a TensorFlow checkpoint (~10 s of TensorFlow import): the slow suite runs it.
@pytest.mark.parametrize("layout", [pytest.param(1, id="hf"), pytest.param(2, id="openai", marks=pytest.mark.slow)])
def test_generate_prints_transformers_tokens(checkpoints, tokenizer, layout):
    model, folder = checkpoints[0], checkpoints[layout]
    prompt = "Every effort moves you"
    expected = hf_greedy(model, tokenizer.encode_ordinary(prompt), 15)
    r = spamjob("generate", "--weights", str(folder), prompt, "--max-new-tokens", "15", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["new_ids"] == expected
    assert out["text"] == prompt + tokenizer.decode(expected)
    r = spamjob("generate", "--weights", str(folder), prompt, "--max-new-tokens", "15")
    assert r.stdout == prompt + tokenizer.decode(expected) + "\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--weights", "/no/such/dir", "hi"], "neither hf, openai, random nor an existing folder"),
        (["generate", "--weights", "random", "--model", "gpt5", "hi"], "Invalid value for '--model'"),
        (["generate", "--weights", "random", ""], "the prompt is empty"),
        (["generate", "--weights", "hf", "hi"], "spamjob download --model gpt2-small --source hf"),
        (["download", "--model", "gpt2-medium", "--source", "openai"], "spamjob download --model gpt2-medium"),
        (["prepare", "--source", "/no/such/file", "--out", "x"], "does not exist"),
    ],
    ids=["missing-weights", "bad-size", "empty-prompt", "hf-offline", "openai-offline", "prepare-missing"],
)
def test_errors_are_one_line_with_nonzero_exit(args, message, tmp_path):
    r = spamjob(*args, env={"HF_HUB_OFFLINE": "1", "SPAMJOB_OFFLINE": "1", "SPAMJOB_CACHE": str(tmp_path)})
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert [ln for ln in lines if ln.startswith("Error: ")] == [lines[-1]]
    assert len(lines) <= 3  # click's usage errors add a usage line and a hint


def test_generate_conflicting_model_size(checkpoints):
    r = spamjob("generate", "--weights", str(checkpoints[1]), "--model", "gpt2-medium", "hi")
    assert r.returncode == 1 and "conflicts with the checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_prepare_via_console_script(sms_path, tmp_path):
    r = spamjob("prepare", "--source", str(sms_path), "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert "splits: train 1,045 / validation 149 / test 300" in r.stdout


@pytest.mark.parametrize(
    "cls, command",
    [
        ("spamjob.config.TrainConfig", "train"),
        ("spamjob.scoring.config.ScoreConfig", "score"),
        *(
            (f"spamjob.command_config.{name.title()}Config", name)
            for name in ("prepare", "download", "generate", "classify", "export", "push", "report", "run")
        ),
    ],
)
def test_every_config_field_is_an_option_with_its_docstring_as_help(cls, command):
    import dataclasses
    import importlib

    from spamjob.options import field_docs

    module, name = cls.rsplit(".", 1)
    cls, params = getattr(importlib.import_module(module), name), {p.name: p for p in cli.commands[command].params}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert f.name in params, f"{cls.__name__}.{f.name} has no option in `spamjob {command}`"
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
        if isinstance(params[f.name], click.Option):
            assert params[f.name].help == docs[f.name]
    cli_only = set(params) - {f.name for f in dataclasses.fields(cls)}
    assert cli_only <= {"auto_resume"}, cli_only


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--weights", "random", "--out", "s3://bucket/run"],
        ["export", "m", "--out", "abfs://container/export"],
        ["prepare", "--out", "s3://bucket/data"],
        ["download", "--tokenizer", "--dir", "s3://bucket/tok"],
        ["run", "--out", "s3://bucket/job"],
    ],
)
def test_a_uri_for_a_folder_is_one_line_naming_the_option(args, tmp_path):
    """Where an option takes local folders only: never a local folder named `s3:`."""
    r = subprocess.run(
        [sys.executable, "-m", "spamjob.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    option = next((a for a in args if a.startswith("--") and "://" in args[args.index(a) + 1]), "FOLDER")
    assert r.returncode == 1 and r.stderr.startswith(f"Error: {option} ") and "is a URI" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_a_uri_for_a_folder_is_refused_by_the_configs_too():
    from spamjob.config import TrainConfig
    from spamjob.errors import SpamjobError
    from spamjob.scoring.config import ScoreConfig

    with pytest.raises(SpamjobError, match="unsupported scheme ftp://"):
        ScoreConfig(inputs=("a.csv",), model="m", out="ftp://b/x")
    with pytest.raises(SpamjobError, match=r"--model s3://\*\*\*@b/m: credentials and options in a URI are refused"):
        ScoreConfig(inputs=("a.csv",), model="s3://AKIA:secret@b/m", out="o")
    with pytest.raises(SpamjobError, match="--out gs://b/r is a URI"):
        TrainConfig(out="gs://b/r")


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # with a '/', as AWS secret keys have


@pytest.mark.parametrize(
    "args",
    [
        ["score", f"s3://AKIAEXAMPLE:{SECRET}@bucket/in", "--model", "m", "--out", "o"],
        ["score", f"s3://AKIAEXAMPLE:{SECRET}@bucket/in/*.csv", "--model", "m", "--out", "o"],
        ["score", "in.csv", "--model", f"gs://user:{SECRET}@bucket/m", "--out", "o"],
        ["score", "in.csv", "--model", "m", "--out", f"abfs://container:{SECRET}@account/o"],
        ["score", f"s3://bucket/in.csv?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}", "--model", "m", "--out", "o"],
        ["score", "in.csv", "--model", "m", "--out", "o", "--threshold", f"s3://a:{SECRET}@b"],
        ["report", f"s3://AKIAEXAMPLE:{SECRET}@bucket/out"],
        ["prepare", "--source", f"http://user:{SECRET}@127.0.0.1:9/smsspamcollection.zip", "--out", "data"],
    ],
    ids=["input", "glob", "model", "out", "presigned", "usage-error", "report", "download"],
)
def test_no_credential_in_a_uri_is_echoed(args, tmp_path, monkeypatch):
    """A URI carrying credentials is refused (or fails) in one line that shows it redacted and says
    where credentials belong; neither that line nor any file written shows the secret."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code in (1, 2) and r.output.startswith(("Error: ", "Usage: ")), r.output
    assert SECRET not in r.output and SECRET.split("/")[1] not in r.output, r.output
    assert "***" in r.output, r.output
    if "refused" in r.output:
        assert "credentials belong in the environment" in r.output
    written = [p for root in (tmp_path, Path(os.environ["SPAMJOB_CACHE"])) if root.exists() for p in root.rglob("*")]
    assert not [p for p in written if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.slow  # a process of its own: the stderr a scheduler's log keeps
def test_a_secret_in_an_input_uri_never_reaches_stderr(tmp_path):
    r = spamjob("score", f"s3://AKIAEXAMPLE:{SECRET}@bucket/in", "--model", "m", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: INPUTS s3://***@bucket/in: credentials and options in a URI are refused")
    assert SECRET not in r.stderr + r.stdout and list(tmp_path.iterdir()) == []
