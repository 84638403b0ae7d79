"""spamjob.scoring.runtimes: the runtime seam. A runtime is one module plus one registry line
(docs/extending.md); every runtime keeps the Predictor interface; `auto` and a bad name."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest

from spamjob.errors import SpamjobError
from spamjob.scorer import BatchScorer
from spamjob.scoring import runtimes

# A new runtime, written as docs/extending.md says: the torch runtime as its model, in fp32 on
# half-size batches (a behaviour of its own, that the test can see).
HALVES = """
from spamjob.scoring.runtimes import Loaded
from spamjob.scoring.runtimes.pytorch import TorchPredictor


class HalvesRuntime:
    name = "halves"
    needs_weights = True
    precisions = ("no",)

    def available(self):
        return True

    def suits(self, request):
        return False

    def check(self, request):
        pass

    def load(self, clf, folder, request):
        predictor = TorchPredictor(clf, request.device, "no", request.batch_tokens // 2, request.workers)
        record = {"name": self.name, "batch_tokens": request.batch_tokens // 2}
        return Loaded(predictor, record, record)


RUNTIME = HalvesRuntime()
"""


def test_a_new_runtime_is_one_module_and_one_registry_line(classifier_dir, tmp_path, monkeypatch):
    (tmp_path / "halves_runtime.py").write_text(HALVES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(runtimes.REGISTRY, "halves", "halves_runtime")  # the registry line
    table = pa.table({"text": ["WINNER!! claim your prize", "see you at lunch", None, "call me " * 80]})
    by_torch, by_halves = BatchScorer(classifier_dir, device="cpu"), BatchScorer(classifier_dir, runtime="halves")
    try:
        want, got = by_torch.score_table(table), by_halves.score_table(table)
        assert by_halves.runtime_record == {"name": "halves", "batch_tokens": 256}
        assert got.column("prediction").to_pylist() == want.column("prediction").to_pylist()
        for a, b in zip(got.column("spam_probability").to_pylist(), want.column("spam_probability").to_pylist()):
            assert a == b or abs(a - b) < 1e-6
    finally:
        by_torch.close(), by_halves.close()
    monkeypatch.delitem(sys.modules, "halves_runtime")


def test_every_registered_runtime_keeps_the_interface():
    for name in runtimes.NAMES:
        runtime = runtimes.get(name)
        assert runtime.name == name and isinstance(runtime.needs_weights, bool) and "no" in runtime.precisions
        assert all(callable(getattr(runtime, m)) for m in ("available", "suits", "check", "load"))
    assert runtimes.get("torch").suits(runtimes.Request())  # `auto` always finds one


def test_an_unknown_runtime_is_one_line(classifier_dir):
    with pytest.raises(SpamjobError, match=r"^runtime must be one of onnxruntime, openvino, torch, got 'tensorrt'$"):
        BatchScorer(classifier_dir, device="cpu", runtime="tensorrt")
