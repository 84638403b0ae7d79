"""A trained classifier as an ONNX graph (`spamjob export --format onnx [--quantize int8]`), for
ONNX Runtime, Triton and other servers: the graph ONNX Runtime's runtime makes and checks
(spamjob.scoring.runtimes.ort_graph: its inputs, outputs and pooling), with the tokenizer
files, the model card and spamjob_onnx.json (how to feed it, its checks, each file's sha256).
`onnxruntime` and `onnx` are an optional extra: `pip install 'spamjob[onnx]'`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from spamjob import digests
from spamjob.artifact import load_classifier, local_folder, tokenizer_folder
from spamjob.fsutil import atomic_path, write_json
from spamjob.scoring.runtimes.ort_graph import GRAPH_FILES, build, sample_texts
from spamjob.scoring.runtimes.ort_session import require_onnxruntime
from spamjob.text import TOKENIZER_FILES, tokenizer_files


def export_onnx(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    quantize: str | None = None,
    texts: list[str] | None = None,
    test_messages: int = 500,
) -> dict:
    """model.onnx (+ model.int8.onnx), tokenizer/, spamjob_onnx.json and the model card in `out`,
    checked with ONNX Runtime on `texts` (default: the SAMPLE and up to `test_messages` of the test split)."""
    require_onnxruntime("--format onnx")
    clf, out = load_classifier(run_dir), Path(out)
    meta = build(clf, out, quantize, texts or sample_texts(clf, test_messages))
    _copy_extras(local_folder(run_dir), out)
    graphs = [n for n in GRAPH_FILES if (out / n).is_file()]
    meta["files"] = digests.record(
        out, [*graphs, *(f"tokenizer/{n}" for n in TOKENIZER_FILES if (out / "tokenizer" / n).is_file())]
    )
    write_json(out / "spamjob_onnx.json", meta)
    return meta


def _copy_extras(run_dir: Path, out: Path) -> None:
    """The tokenizer files and the model card beside the graph."""
    files = tokenizer_files(tokenizer_folder(run_dir))
    for src, name in zip(files or (), TOKENIZER_FILES):
        with atomic_path(out / "tokenizer" / name) as tmp:
            shutil.copyfile(src, tmp)
    if (run_dir / "README.md").is_file():
        shutil.copyfile(run_dir / "README.md", out / "README.md")
