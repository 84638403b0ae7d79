"""Options declared once: a dataclass field carries its type (a Literal is its choices), its
default, its help (the docstring under it) and how it appears on the command line (`option`);
`field_problems` checks a value against all of it, and spamjob.options builds the CLI from it."""

from __future__ import annotations

import functools
import re
from dataclasses import MISSING, field, fields
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from spamjob.errors import redact


def choices(hint) -> tuple[str, ...]:
    """The values a Literal type allows (empty for other types)."""
    return get_args(hint) if get_origin(hint) is Literal else ()


def option(
    default=MISSING,
    *,
    min: float | None = None,
    below: float | None = None,
    metavar: str | None = None,
    flag: str | None = None,
    alias: str | None = None,
    folder: bool = False,
    store: bool = False,
    sizes: bool = False,
    argument: bool = False,
):
    """A dataclass field with how it appears on the command line (the field's docstring is its help).

    `min`: smallest value, `below`: a bound above every value (both checked here and by the CLI);
    `flag`: another option name (a bool field named `--no-X` is set False by it); `alias`: a former
    spelling of the option, still accepted; `folder`: a
    folder path (`store`: or an object store's URI, s3:// gs:// abfs://); `store` alone: paths or
    URIs (each URI checked by `uri_problem`); `sizes`: a GPT-2 size name; `argument`: positional
    (a tuple field: any number of them) instead of an option.
    """
    meta = {
        k: v
        for k, v in {
            "min": min,
            "below": below,
            "metavar": metavar,
            "flag": flag,
            "alias": alias,
            "folder": folder,
            "store": store,
            "sizes": sizes,
            "argument": argument,
        }.items()
        if v is not None and v is not False
    }
    return field(default=default, metadata=meta)


def field_problems(cfg) -> list[str]:
    """Values outside a field's Literal choices or its bounds, one message each (option spelling)."""
    problems = []
    hints = field_types(type(cfg))
    for f in fields(cfg):
        value, name = getattr(cfg, f.name), f.name.replace("_", "-")
        allowed = choices(optional_type(hints[f.name]))
        if value is not None and allowed and value not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        low = f.metadata.get("min")
        if value is not None and low is not None and value < low:
            problems.append(f"{name} must be >= {low}, got {value}")
        high = f.metadata.get("below")
        if value is not None and high is not None and not value < high:
            problems.append(f"{name} must be < {high}, got {value}")
        checked = f.metadata.get("folder") or f.metadata.get("store")
        label = name.upper() if f.metadata.get("argument") else "--" + name
        if checked and (uri := uri_problem(label, value, f.metadata.get("store", False))):
            problems.append(uri)
    return problems


_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>[^/]*)")
# URI schemes of the object stores spamjob reads and writes (spamjob.stores), by store.
STORE_SCHEMES = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "abfss": "azure", "az": "azure"}


def uri_problem(option: str, value, store: bool = False) -> str | None:
    """A `scheme://` folder where only local folders are read or written (it would be made locally
    as a folder named `s3:`); with `store`, a URI of a store spamjob does not know, or one that
    carries credentials or options (they would land in plans and logs). A tuple: each of its values."""
    if isinstance(value, tuple):
        return next((p for v in value if (p := uri_problem(option, v, store))), None)
    m = _URI.match(value) if isinstance(value, str) else None
    if m is None:
        return None
    shown = redact(value)
    if not store:
        return f"{option} {shown} is a URI; this option takes a local (or mounted) folder, so give a local path"
    scheme, bucket = m.group("scheme").lower(), m.group("rest")
    if scheme == "file" and not bucket:  # file:///path: a local path
        return None
    if scheme not in STORE_SCHEMES:
        return f"{option} {shown}: unsupported scheme {scheme}://; use s3://, gs:// or abfs:// (or a local path)"
    if ":" in bucket or "?" in value or ("@" in bucket and STORE_SCHEMES[scheme] != "azure"):
        return (
            f"{option} {shown}: credentials and options in a URI are refused (they would land in logs and "
            f"files); credentials belong in the environment: {CREDENTIAL_SOURCES[STORE_SCHEMES[scheme]]}"
        )
    if not bucket:
        return f"{option} {shown}: no bucket named"
    return None


# Where each store's clients find credentials (and options) instead.
CREDENTIAL_SOURCES = {
    "s3": "AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role (AWS_REGION, AWS_ENDPOINT_URL)",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS or the machine's service account",
    "azure": "AZURE_STORAGE_ACCOUNT_NAME + AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_CONNECTION_STRING or "
    "AZURE_STORAGE_SAS_TOKEN",
}


def optional_type(hint):
    """`X | None` -> X; other hints unchanged."""
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if get_origin(hint) in (Union, UnionType) and len(args) == 1 else hint


@functools.cache
def field_types(cls) -> dict:
    """Resolved type hints of a dataclass's fields."""
    return get_type_hints(cls)
