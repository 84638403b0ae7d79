"""The one exception type the CLI turns into a one-line error and a non-zero exit, and the one
rule for what a message may show of a URI (`redact`)."""

import re

# scheme://[userinfo@]rest[?query]: userinfo and `name=value` query pairs may hold credentials
# (s3://KEY:SECRET@bucket, https://user:token@mirror, a presigned or SAS URL's signature).
# A secret may hold '/' (AWS secret keys do): user-info is what precedes an '@' with no '/' before
# it, or with a ':' (user:password) before it.
_URI = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<userinfo>[^/@\s'\"]*|[^@\s'\"]*:[^@\s'\"]*)@)?"
    r"(?P<rest>[^\s?#'\"]*)(?P<query>\?[^\s=&#'\"]+=[^\s#'\"]*?(?=[:,;.)]*(?:[\s'\"]|$)))?"
)
_QUERY_VALUE = re.compile(r"(?P<name>[?&][^=&]+)=[^&]*")
_AZURE = ("abfs://", "abfss://", "az://")  # container@account: a name, not a credential (unless with ':')


def redact(text: str) -> str:
    """`text` with every URI's user-info (`s3://***@bucket/in`) and query values (`?sig=***`)
    replaced: what error lines, logs, plans, manifests and reports show of a URI."""
    return _URI.sub(_redacted, text)


def _redacted(m: re.Match) -> str:
    scheme, userinfo, query = m.group("scheme"), m.group("userinfo"), m.group("query") or ""
    if userinfo is None:
        user = ""
    elif scheme.lower() in _AZURE and ":" not in userinfo:
        user = f"{userinfo}@"
    else:
        user = "***@"
    return scheme + user + m.group("rest") + _QUERY_VALUE.sub(r"\g<name>=***", query)


def has_credentials(uri: str) -> bool:
    """Whether `redact` would hide part of `uri`."""
    return redact(uri) != uri


class SpamjobError(Exception):
    """A problem the user can fix (bad input, missing file, offline...); the message is one line,
    and shows no credential a URI in it carried (`redact`)."""

    def __init__(self, message: str):
        # Keep messages on one line: they are printed as `Error: <message>`.
        super().__init__(redact(" ".join(str(message).split())))


def first_line(e: BaseException) -> str:
    """The first line of what an exception says (libraries put their detail on later lines), or
    its type's name when it says nothing."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
