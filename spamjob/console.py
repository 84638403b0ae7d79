"""What a run prints: the main process only, through tqdm so progress bars stay intact."""

from __future__ import annotations

from tqdm import tqdm


def say(msg: str) -> None:
    """Print one message from the main process (every other process stays quiet)."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        tqdm.write(msg)
