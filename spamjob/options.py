"""click options generated from the config dataclasses: each option is declared once, as a field,
and the docstring under the field is its help."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import get_origin

import click

from spamjob.config import SIZE_CHOICES
from spamjob.fields import choices, field_types, optional_type, uri_problem


def from_fields(cls, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator: one click option (or argument) per field of dataclass `cls`, in field order."""
    docs, hints = field_docs(cls), field_types(cls)
    params = [_param(f, optional_type(hints[f.name]), docs.get(f.name)) for f in fields(cls) if f.name not in exclude]

    def decorate(command: Callable) -> Callable:
        for param in reversed(params):
            command = param(command)
        return command

    return decorate


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field, from the class's source (as litgpt's CLI reads them)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        a.target.id: " ".join(b.value.value.split())
        for a, b in zip(body, body[1:])
        if isinstance(a, ast.AnnAssign)
        and isinstance(b, ast.Expr)
        and isinstance(b.value, ast.Constant)
        and isinstance(b.value.value, str)
    }


class Folder(click.Path):
    """A folder path; a URI (s3://...) is a one-line error naming the option, never a local `s3:`,
    unless the option takes an object store's URI too (`store`: its URI checked, passed as it is)."""

    def __init__(self, store: bool = False):
        super().__init__(file_okay=False)
        self.store = store

    def convert(self, value, param, ctx):
        option = param.opts[0] if param is not None and param.opts else "a folder"
        if (
            problem := uri_problem(option if option.startswith("-") else option.upper(), value, self.store)
        ) is not None:
            raise click.ClickException(problem)
        if self.store and "://" in str(value):
            return value
        return super().convert(value, param, ctx)


class CommaList(click.ParamType):
    """`a,b,c` -> ("a", "b", "c"); empty items dropped; an empty value is None."""

    name = "list"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        return tuple(c.strip() for c in value.split(",") if c.strip()) if value else None


def _param(f: Field, hint, help: str | None) -> Callable:
    meta = f.metadata
    if meta.get("argument"):
        many = get_origin(hint) is tuple
        return click.argument(f.name, nargs=-1 if many else 1, type=None if many else _type(hint, meta))
    name = meta.get("flag", "--" + f.name.replace("_", "-"))
    required = f.default is MISSING
    default = None if required else f.default
    if hint is bool:  # a `--no-X` flag sets the field False
        return click.option(
            name, f.name, is_flag=True, flag_value=not name.startswith("--no-"), default=default, help=help
        )
    names = [name, meta["alias"]] if "alias" in meta else [name]
    return click.option(
        *names,
        f.name,
        type=_type(hint, meta),
        default=default,
        required=required,
        help=help,
        show_default=default is not None,
        metavar=meta.get("metavar"),
    )


def _type(hint, meta) -> click.ParamType:
    if choices(hint):
        return click.Choice(choices(hint))
    if meta.get("sizes"):
        return click.Choice(SIZE_CHOICES, case_sensitive=False)
    if meta.get("folder"):
        return Folder(store=meta.get("store", False))
    if get_origin(hint) is tuple:
        return CommaList()
    low, high = meta.get("min"), meta.get("below")
    if hint is int:
        return click.INT if low is None else click.IntRange(min=low)
    if hint is float:
        return click.FLOAT if low is high is None else click.FloatRange(min=low, max=high, max_open=high is not None)
    return click.STRING
