"""The scoring core's public import path (`from spamjob.scorer import BatchScorer`), kept for
the code that engines and users write against it; the core lives in spamjob.scoring.core."""

from spamjob.scoring.core import BatchScorer, Window, prepare_window, text_column_of

__all__ = ["BatchScorer", "Window", "prepare_window", "text_column_of"]
