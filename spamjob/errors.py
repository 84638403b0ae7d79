"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class SpamjobError(Exception):
    """A problem the user can fix (bad input, missing file, offline...); the message is one line."""

    def __init__(self, message: str):
        # Keep messages on one line: they are printed as `Error: <message>`.
        super().__init__(" ".join(str(message).split()))


def first_line(e: BaseException) -> str:
    """The first line of what an exception says (libraries put their detail on later lines), or
    its type's name when it says nothing."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
