"""The scoring core: a trained classifier applied to Arrow tables, engine-neutral.

`BatchScorer(model_dir).score_table(table)` returns the table with `prediction`,
`spam_probability`, `truncated` and `error` added. `spamjob score` runs the same two halves
separately, `prepare` (decode, flag, tokenize: no model, so it can run in a reading thread)
and `predict` + `output_columns`, so that reading overlaps the model; an engine such as
Ray or Spark calls `score_table` on each batch of a worker that built one scorer.

Rules, the same everywhere: a null text, an empty or whitespace-only text and text whose
bytes are not valid UTF-8 are not scored and say why in `error`; longer messages are
truncated to the classifier's max_length, scored and flagged `truncated`; special-token
text such as `<|endoftext|>` is scored as text. Rows are length-sorted and batched by
padded tokens inside a window; a message's probability does not depend on its batch.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from spamjob.artifact import load_classifier, local_folder, tokenizer_folder
from spamjob.config import INT8_SAMPLE, RUNTIMES, resolve_mixed_precision, resolve_runtime
from spamjob.errors import SpamjobError
from spamjob.fsutil import read_json
from spamjob.scoring.columns import OUTPUT_COLUMNS, OUTPUT_TYPES, TEXT_CANDIDATES, as_strings
from spamjob.scoring.ort_predictor import OrtPredictor, open_session, require_onnxruntime, session_settings
from spamjob.scoring.predictor import Launched, Predictor, dynamic_int8
from spamjob.scoring.tokenize_pool import TokenizerPool
from spamjob.tokens import TokenIds


@dataclass(frozen=True)
class Window:
    """Rows on their way through the scorer: why each is not scored (None: scored), and the
    token ids of those that are."""

    errors: list[str | None]
    ok: list[int]  # row indices that are scored
    ids: TokenIds  # their token ids, in the same order

    @property
    def num_rows(self) -> int:
        return len(self.errors)


class BatchScorer:
    """A classifier loaded once (per process or per engine worker) that scores Arrow tables.

    `threshold`: spam when P(spam) > it [the classifier's operating point, config.json].
    `workers` > 1 (CPU): that many threads each run the model on their own batches, and torch's
    intra-op threads are set to 1 for the process (`spamjob score` picks one worker per CPU it
    may use; see spamjob.threads). `runtime` "onnxruntime" (CPU, fp32 or int8): the model runs
    on ONNX Runtime, the graph of spamjob's own export (spamjob.export.onnx.scoring_graph);
    "auto": ONNX Runtime for CPU int8 where it is installed, else torch (config.resolve_runtime)."""

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        mixed_precision: str = "auto",
        batch_tokens: int | None = None,
        quantize: str | None = None,
        compile: bool = False,
        tokenize_workers: int = 0,
        workers: int = 1,
        threshold: float | None = None,
        runtime: str = "torch",
    ):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        gpu = device.type == "cuda"
        if quantize == "int8" and gpu:
            raise SpamjobError("--quantize int8 is for CPU scoring (dynamic int8 kernels); on GPU use bf16")
        self.mixed_precision, self.quantize = resolve_mixed_precision(mixed_precision, gpu), quantize
        runtime = resolve_runtime(runtime, gpu, compile, self.mixed_precision, quantize)
        check_runtime(runtime, gpu, compile, self.mixed_precision)
        folder = local_folder(model)  # a URI's classifier fetched once: its tokenizer is the workers' too
        # The tokenizer processes start first: they load their tokenizers while the model loads.
        self.tokenize = TokenizerPool(None, tokenizer_folder(folder), tokenize_workers)
        try:
            self.classifier = clf = load_classifier(folder, weights=runtime == "torch")
            self.tokenize.tok = clf.tokenizer  # the calling thread's tokenizer (small windows)
            self.threshold = clf.threshold if threshold is None else float(threshold)  # spam when P(spam) > it
            batch_tokens = batch_tokens or (65536 if gpu else 512)
            if workers > 1 and torch.get_num_threads() != 1:
                torch.set_num_threads(1)
            self.reference: Predictor | OrtPredictor | None = None  # fp32, to measure what int8 changes
            self.session: dict | None = None  # ONNX Runtime's settings
            self.int8_check: dict | None = None  # ONNX Runtime: the int8 graph's check when it was made
            if runtime == "onnxruntime":
                self._on_onnxruntime(folder, batch_tokens, workers)
            else:
                self._on_torch(device, batch_tokens, workers, compile)
        except BaseException:
            self.tokenize.close()
            raise

    def _on_torch(self, device: torch.device, batch_tokens: int, workers: int, compile: bool) -> None:
        clf = self.classifier
        if self.quantize == "int8":
            self.reference = Predictor(clf, device, "no", batch_tokens, workers)
            quantized = copy.copy(clf)
            quantized.model = dynamic_int8(clf.model)
            self.predictor = Predictor(quantized, device, "no", batch_tokens, workers)
        else:
            self.predictor = Predictor(clf, device, self.mixed_precision, batch_tokens, workers)
        if compile:
            self.predictor.model = torch.compile(self.predictor.model, dynamic=True)

    def _on_onnxruntime(self, model: str | os.PathLike, batch_tokens: int, workers: int) -> None:
        """The classifier's cached, checked graph in one session; int8's agreement from the graph's
        check when that saw at least INT8_SAMPLE messages, else from a sample of the job (fp32 graph)."""
        from spamjob.export.onnx import scoring_graph  # the exporter: for this optional runtime only

        clf, self.session = self.classifier, session_settings(workers)
        graph = scoring_graph(model, self.quantize)
        self.predictor = OrtPredictor(clf, open_session(graph, self.session), batch_tokens, workers)
        if self.quantize != "int8":
            return
        check = read_json(graph.parent / "spamjob_onnx.json")["checked_with_onnxruntime"]["int8"]
        if check["messages"] >= INT8_SAMPLE:
            self.int8_check = check
        else:  # too few messages were at hand then (no test split): sample this job
            fp32 = open_session(graph.with_name("model.onnx"), self.session)
            self.reference = OrtPredictor(clf, fp32, batch_tokens, workers)

    @property
    def runtime_record(self) -> dict:
        """What runs the model, as the report names it."""
        if self.session is None:
            return {"name": "torch", "version": torch.__version__.split("+")[0]}
        return {"name": "onnxruntime", "version": require_onnxruntime("").__version__, "session": self.session}

    @property
    def settings(self) -> dict:
        """The resolved settings that change a prediction, as a scoring plan holds them (ONNX
        Runtime's worker count changes none, and follows the machine's load: left out)."""
        session = {k: v for k, v in (self.session or {}).items() if k != "workers"}
        runtime = {**self.runtime_record, "session": session} if session else self.runtime_record
        return {
            "mixed_precision": self.mixed_precision,
            "quantize": self.quantize,
            "threshold": self.threshold,
            "runtime": runtime,
        }

    def prepare(self, texts: pa.Array) -> Window:
        """Decode and flag a text column and tokenize what is scored (thread-safe: no model)."""
        return prepare_window(texts, self.tokenize)

    def predict(self, window: Window) -> np.ndarray:
        """P(spam) of the scored rows of a window, in `window.ok` order."""
        return self.launch(window).result()

    def launch(self, window: Window) -> Launched:
        """`predict`, split: the window goes onto the device now, `.result()` collects it later."""
        return self.predictor.launch(window.ids)

    def output_columns(self, window: Window, probs: np.ndarray) -> dict[str, pa.Array]:
        """The four columns scoring adds, one value per row of the window."""
        n, ok = window.num_rows, window.ok
        scored = np.zeros(n, dtype=bool)
        scored[ok] = True
        spam_prob = np.full(n, np.nan)
        spam_prob[ok] = probs
        truncated = np.zeros(n, dtype=bool)
        truncated[ok] = window.ids.lengths > self.classifier.max_length
        ham, spam = self.classifier.labels
        labels = np.where(spam_prob > self.threshold, spam, ham).astype(object)  # at 0.5: the argmax, a tie is ham
        labels[~scored] = None
        return {
            "prediction": pa.array(labels, type=OUTPUT_TYPES["prediction"]),
            "spam_probability": pa.array(spam_prob, type=OUTPUT_TYPES["spam_probability"], mask=~scored),
            "truncated": pa.array(truncated),
            "error": pa.array(window.errors, type=pa.string()),
        }

    def score_table(
        self, table: pa.Table | pa.RecordBatch, text_column: str | None = None, window: Window | None = None
    ) -> pa.Table:
        """`table` with the four output columns appended (the text column: given, else the first of
        Text, text, message, sms); `window`: its rows already prepared (e.g. by an earlier CPU stage)."""
        table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        column = text_column_of(table.column_names, text_column)
        clash = [c for c in OUTPUT_COLUMNS if c in table.column_names]
        if clash:
            raise SpamjobError(f"input column(s) {', '.join(clash)} would collide with the output")
        window = window or self.prepare(table.column(column).combine_chunks())
        for name, values in self.output_columns(window, self.predict(window)).items():
            table = table.append_column(name, values)
        return table

    def score_messages(self, messages: list[bytes]) -> pa.Table:
        """Messages as bytes (lines of a file, command-line words) -> `score_table`'s table, column
        `text` holding them: decoded, flagged and scored by the same rules as any text column."""
        return self.score_table(pa.table({"text": pa.array(messages, pa.binary())}))

    def close(self) -> None:
        """Stop the model workers and tokenizer processes, if any."""
        for predictor in (self.predictor, self.reference):
            if predictor is not None:
                predictor.close()
        self.tokenize.close()


def check_runtime(runtime: str, gpu: bool, compile: bool, mixed_precision: str) -> None:
    """What runs on ONNX Runtime: CPU scoring in fp32 or int8; a one-line error otherwise."""
    if runtime not in RUNTIMES:
        raise SpamjobError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "onnxruntime":
        return
    if gpu:
        raise SpamjobError("--runtime onnxruntime is for CPU scoring; on a GPU use --runtime torch (bf16)")
    if compile:
        raise SpamjobError("--compile is for --runtime torch")
    if mixed_precision != "no":
        raise SpamjobError(f"--runtime onnxruntime runs fp32 (or --quantize int8), not {mixed_precision}")
    require_onnxruntime("--runtime onnxruntime")


def text_column_of(names: list[str], given: str | None = None) -> str:
    """The text column among `names`: `given`, else the first of Text, text, message, sms."""
    column = given or next((c for c in TEXT_CANDIDATES if c in names), None)
    if column not in names:
        raise SpamjobError(f"no text column {column or ' / '.join(TEXT_CANDIDATES)!r} in {names}")
    return column


def prepare_window(texts: pa.Array, tokenize) -> Window:
    """Decode and flag a text column; `tokenize` (texts -> token ids) what is scored."""
    values, bad = as_strings(texts) if len(texts) else ([], [])
    errors = [_error(t, b) for t, b in zip(values, bad)]
    ok = [i for i, e in enumerate(errors) if e is None]
    return Window(errors, ok, tokenize([values[i] for i in ok]) if ok else TokenIds.from_lists([]))


def _error(text: str | None, bad_bytes: bool) -> str | None:
    if text is None:
        return "null text"
    if bad_bytes:
        return "invalid UTF-8 in text"
    if not text.strip():
        return "empty text"
    return None
