"""Optional dependencies, declared once (pyproject.toml's extras): which modules an extra brings,
whether it is installed (`is_available`: found, not imported), and the one line naming how to
install it (`require`)."""

from __future__ import annotations

import importlib.util

from spamjob.errors import SpamjobError

# extra -> (the modules it brings, what a message calls them)
EXTRAS = {
    "tf": (("tensorflow",), "TensorFlow"),
    "lora": (("peft",), "peft"),
    "ray": (("ray",), "Ray"),
    "spark": (("pyspark",), "PySpark"),
    "onnx": (("onnx", "onnxruntime"), "onnx and onnxruntime"),
    "openvino": (("openvino", "onnx", "onnxruntime"), "OpenVINO (and onnx, onnxruntime: its graph)"),
    "s3": (("s3fs",), "s3fs"),
    "gcs": (("gcsfs",), "gcsfs"),
    "azure": (("adlfs",), "adlfs"),
    "tensorboard": (("tensorboard",), "TensorBoard"),
    "mlflow": (("mlflow",), "MLflow"),
    "wandb": (("wandb",), "Weights & Biases (wandb)"),
}


def is_available(extra: str) -> bool:
    """Every module of `extra` can be imported (found on the path; nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra][0])


def require(extra: str, what: str, hint: str = "") -> None:
    """A one-line SpamjobError when `extra` is missing: `what` needs it, and how to install it."""
    if not is_available(extra):
        raise SpamjobError(f"{what} needs {EXTRAS[extra][1]}: pip install 'spamjob[{extra}]'{hint}")
