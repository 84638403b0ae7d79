"""What a run prints: the main process only, through tqdm so progress bars stay intact."""

from __future__ import annotations

from tqdm import tqdm


def say(msg: str) -> None:
    """Print one message from the main process (every other process stays quiet)."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        tqdm.write(msg)


def note(msg: str) -> None:
    """One `note:` line: something the run did for the user that they should know of (e.g. a cache
    entry that failed its check and was made again)."""
    say(f"note: {msg}")
