"""The scoring core's public import path (`from spamjob.scorer import BatchScorer`), kept for
the code that engines and users write against it; the core lives in spamjob.scoring.core."""

from spamjob.scoring.columns import text_column_of
from spamjob.scoring.core import BatchScorer, Window, prepare_window

__all__ = ["BatchScorer", "Window", "prepare_window", "text_column_of"]
