"""The fine-tuning job's public import path (`from spamjob.train import main, fit`), kept for
code written against it; the job lives in spamjob.training.job (spamjob.training: every module)."""

from spamjob.training.job import fit, main, train_step

__all__ = ["fit", "main", "train_step"]
