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
padded tokens inside a window; a message's probability does not depend on its batch, so a text
that comes again (in the window or after it: spamjob.scoring.repeats) is tokenized and run once,
every row of it given that probability (`dedup`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from spamjob.artifact import load_classifier, local_folder, tokenizer_folder
from spamjob.errors import SpamjobError
from spamjob.scoring import runtimes
from spamjob.scoring.columns import OUTPUT_COLUMNS, OUTPUT_TYPES, as_strings, text_column_of
from spamjob.scoring.repeats import Repeats, Seen, find_repeats
from spamjob.scoring.runtimes.launch import Launched
from spamjob.scoring.tokenize_pool import TokenizerPool
from spamjob.tokens import TokenIds


@dataclass(frozen=True)
class Window:
    """Rows on their way through the scorer: why each is not scored (None: scored), and the
    token ids of those that are."""

    errors: list[str | None]
    ok: list[int]  # row indices that are scored
    ids: TokenIds  # the token ids of the texts run: each new text once (all of them without `repeats`)
    repeats: Repeats | None = None  # which scored rows share a text, which texts were seen before

    @property
    def num_rows(self) -> int:
        return len(self.errors)

    def per_row(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(spam), token count) per scored row, in `ok` order, from the probabilities of the texts run."""
        lengths = np.asarray(self.ids.lengths, dtype=np.int64)
        if self.repeats is None:
            return probs, lengths
        return self.repeats.per_row(probs, self.repeats.seen_p), self.repeats.per_row(lengths, self.repeats.seen_len)

    def token_lengths(self) -> np.ndarray:
        """Each row's token count (0 for a row not scored): what drift's length histogram counts."""
        lengths = np.zeros(self.num_rows, dtype=np.int64)
        lengths[self.ok] = self.per_row(np.zeros(len(self.ids.lengths)))[1]
        return lengths


class BatchScorer:
    """A classifier loaded once (per process or per engine worker) that scores Arrow tables.

    `threshold`: spam when P(spam) > it [the classifier's operating point, config.json].
    `workers` > 1 (CPU): that many threads each run the model on their own batches, and torch's
    intra-op threads are set to 1 for the process (`spamjob score` picks one worker per CPU it
    may use; see spamjob.threads). `runtime`: what runs the model, a name of the runtime seam
    (spamjob.scoring.runtimes: torch, onnxruntime) or "auto" (the seam's `resolve`)."""

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
        dedup: bool = True,
    ):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        gpu = device.type == "cuda"
        self.mixed_precision, self.precision_reason = runtimes.precision(mixed_precision, gpu, quantize, runtime)
        self.quantize = quantize
        self.dedup, self.seen = dedup, Seen()  # the texts this scorer ran (spamjob.scoring.repeats)
        request = runtimes.Request(
            device, self.mixed_precision, quantize, compile, batch_tokens or (65536 if gpu else 512), workers
        )
        chosen = runtimes.get(runtimes.resolve(runtime, request))
        chosen.check(request)
        folder = local_folder(model)  # a URI's classifier fetched once: its tokenizer is the workers' too
        self.folder = folder
        # The tokenizer processes start first: they load their tokenizers while the model loads.
        self.tokenize = TokenizerPool(None, tokenizer_folder(folder), tokenize_workers)
        try:
            self.classifier = clf = load_classifier(folder, weights=chosen.needs_weights)
            self.tokenize.tok = clf.tokenizer  # the calling thread's tokenizer (small windows)
            self.threshold = clf.threshold if threshold is None else float(threshold)  # spam when P(spam) > it
            if workers > 1 and torch.get_num_threads() != 1:
                torch.set_num_threads(1)
            self.loaded = chosen.load(clf, folder, request)
        except BaseException:
            self.tokenize.close()
            raise
        self.predictor = self.loaded.predictor
        self.reference = self.loaded.reference  # fp32, to measure what bf16 or int8 changes
        self.checked = self.loaded.checked  # or the agreement measured when the runtime's model was made

    @property
    def precision(self) -> str:
        """What the model computes in: fp32, bf16, fp16 or int8."""
        return "int8" if self.quantize else {"no": "fp32"}.get(self.mixed_precision, self.mixed_precision)

    @property
    def runtime_record(self) -> dict:
        """What runs the model, as the report names it."""
        return self.loaded.record

    def prepare(self, texts: pa.Array) -> Window:
        """Decode and flag a text column and tokenize what is scored (thread-safe: no model)."""
        return prepare_window(texts, self.tokenize, self.seen, self.dedup)

    def predict(self, window: Window) -> np.ndarray:
        """P(spam) of the texts a window runs, in `window.ids` order (`window.per_row`: per scored row)."""
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
        truncated = np.zeros(n, dtype=bool)
        spam_prob[ok], lengths = window.per_row(probs)
        truncated[ok] = lengths > self.classifier.max_length
        if window.repeats is not None:
            self.seen.remember(window.repeats.texts, probs, np.asarray(window.ids.lengths))
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


def prepare_window(texts: pa.Array, tokenize, seen: Seen | None = None, dedup: bool = True) -> Window:
    """Decode and flag a text column; `tokenize` (texts -> token ids) what is scored: with `dedup`,
    each text once and none that `seen` holds (exact match of the decoded text)."""
    values, bad = as_strings(texts) if len(texts) else ([], [])
    errors = [_error(t, b) for t, b in zip(values, bad)]
    ok = [i for i, e in enumerate(errors) if e is None]
    scored = [values[i] for i in ok]
    repeats = find_repeats(scored, seen) if dedup else None
    run = repeats.texts if repeats is not None else scored
    return Window(errors, ok, tokenize(run) if run else TokenIds.from_lists([]), repeats)


def _error(text: str | None, bad_bytes: bool) -> str | None:
    if text is None:
        return "null text"
    if bad_bytes:
        return "invalid UTF-8 in text"
    if not text.strip():
        return "empty text"
    return None
