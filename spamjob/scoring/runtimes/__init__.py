"""The runtime seam: what runs the model of a scoring job (`--runtime`).

A runtime is one module here that defines `RUNTIME`, an object with the `Runtime` interface, and
one line in REGISTRY. `spamjob score`, `spamjob classify`, Ray and Spark all go through
`resolve` (what `auto` picks) and `get` (the runtime of a name); `BatchScorer` asks the runtime
for a `Predictor` and never names one. Each runtime owns what it caches (ONNX Runtime: its
checked graphs; OpenVINO: its compiled models). docs/extending.md shows how to add one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from spamjob.errors import SpamjobError

if TYPE_CHECKING:  # the CLI reads REGISTRY and RuntimeChoice without importing NumPy
    import numpy as np

    from spamjob.scoring.runtimes.launch import Launched
    from spamjob.tokens import TokenIds

# name -> module, in the order `auto` tries them: the first that is installed and suits the job
REGISTRY = {
    "onnxruntime": "spamjob.scoring.runtimes.ort",
    "openvino": "spamjob.scoring.runtimes.ov",
    "torch": "spamjob.scoring.runtimes.pytorch",
}
NAMES = tuple(REGISTRY)
RuntimeChoice = Literal[("auto", *NAMES)]  # the --runtime option's values
# bf16's or int8's agreement with fp32: rows of a job's first window scored in fp32 too, unless the
# runtime's model (ONNX Runtime's int8 graph, OpenVINO's bf16 compile) was checked on at least as
# many of the classifier's test messages when it was made.
# The fp32 pass costs what it measures, so a small job pays for a small sample (128 rows: +-1.7%
# at 99% agreement, 95% interval).
AGREEMENT_SAMPLE = 128


@dataclass(frozen=True)
class Request:
    """What a scoring job asks of its runtime (mixed precision already resolved)."""

    device: object = "cpu"  # a torch.device or its name
    mixed_precision: str = "no"
    quantize: str | None = None
    compile: bool = False
    batch_tokens: int = 512
    workers: int = 1

    @property
    def gpu(self) -> bool:
        return str(self.device).startswith("cuda")


class Predictor(Protocol):
    """Token ids -> P(spam), in length-sorted, token-budgeted batches, order restored."""

    def __call__(self, ids: TokenIds | list[list[int]]) -> np.ndarray: ...

    def launch(self, ids: TokenIds | list[list[int]]) -> Launched:
        """The window's batches queued now; `.result()` collects its probabilities later."""

    def close(self) -> None: ...


@dataclass
class Loaded:
    """A runtime's model, ready to score."""

    predictor: Predictor
    record: dict  # what runs the model, as the report names it: name, version, settings
    settings: dict  # the part of `record` that changes a prediction (a scoring plan holds it)
    reference: Predictor | None = None  # fp32, to measure what bf16 or int8 changes on a job's first window
    # Or the agreement as measured when the runtime's model was made (label_agreement, with
    # `measured_on`), at no cost to the job
    checked: dict | None = None


class Runtime(Protocol):
    name: str
    needs_weights: bool  # loads model.safetensors into torch (else the runtime reads its own files)
    precisions: tuple[str, ...]  # the --mixed-precision values it runs ("no": fp32)

    def available(self) -> bool:
        """Installed (cheap: no import of the runtime's library)."""

    def suits(self, request: Request) -> bool:
        """`--runtime auto` picks this runtime for the job (when available)."""

    def check(self, request: Request) -> None:
        """A one-line SpamjobError for a job this runtime cannot run."""

    def load(self, clf, folder, request: Request) -> Loaded: ...


def get(name: str) -> Runtime:
    """The runtime called `name`."""
    if name not in REGISTRY:
        raise SpamjobError(f"runtime must be one of {', '.join(NAMES)}, got {name!r}")
    return importlib.import_module(REGISTRY[name]).RUNTIME


def precision(mixed_precision: str, gpu: bool, quantize: str | None = None, runtime: str = "auto") -> tuple[str, str]:
    """(mixed precision, why): `auto` as the machine suits (config.precision_choice), but fp32 with
    --quantize int8 (int8 is then the job's precision) and on a runtime named that runs no bf16."""
    from spamjob.config import precision_choice  # (NumPy: not on the CLI's import path)

    if mixed_precision == "auto" and quantize:
        return "no", f"auto: --quantize {quantize} (int8 matrix products, the rest in fp32)"
    if mixed_precision == "auto" and runtime != "auto" and "bf16" not in get(runtime).precisions:
        return "no", f"auto: --runtime {runtime} runs fp32"
    return precision_choice(mixed_precision, gpu)


def resolve(name: str, request: Request) -> str:
    """`auto` -> the first runtime of REGISTRY that is installed and suits `request`; other names
    unchanged (benchmarks/RESULTS.md, "ONNX Runtime inside spamjob score")."""
    if name != "auto":
        return name
    return next(n for n in NAMES if (r := get(n)).available() and r.suits(request))
