"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class SpamjobError(Exception):
    """A problem the user can fix (bad input, missing file, offline...); the message is one line."""

    def __init__(self, message: str):
        # Keep messages on one line: they are printed as `Error: <message>`.
        super().__init__(" ".join(str(message).split()))
