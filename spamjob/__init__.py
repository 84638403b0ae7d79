"""spamjob: fine-tune GPT-2 as a spam classifier with Accelerate and score large message files."""

__version__ = "0.1.0"
