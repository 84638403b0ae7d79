"""The peers spamjob's scoring is measured against, each a bare loop over the same messages and the
same weights, tokenizing included: transformers' GPT2ForSequenceClassification (fp32 and bf16,
several batch sizes, the best kept), ONNX Runtime and OpenVINO on the graph `spamjob export
--format onnx [--quantize int8]` writes (spamjob's length-sorted, token-budgeted batches around
their own session calls). A peer whose package is not installed is left out, and said so."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, *args) -> tuple[float, np.ndarray]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def hf_model(clf, device: torch.device, dtype: torch.dtype):
    """transformers' GPT2ForSequenceClassification carrying the classifier's weights."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    c = clf.model.gpt.cfg
    cfg = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.context_length,
        n_embd=c.emb_dim,
        n_layer=c.n_layers,
        n_head=c.n_heads,
        num_labels=2,
        pad_token_id=50256,
    )
    hf = GPT2ForSequenceClassification(cfg)
    sd = clf.model.gpt.state_dict()
    new = {
        "transformer.wte.weight": sd["token_emb.weight"],
        "transformer.wpe.weight": sd["pos_emb.weight"],
        "transformer.ln_f.weight": sd["final_norm.scale"],
        "transformer.ln_f.bias": sd["final_norm.shift"],
        "score.weight": sd["out_head.weight"],
    }
    for i in range(c.n_layers):
        b, h = f"transformer_blocks.{i}.", f"transformer.h.{i}."
        new[h + "attn.c_attn.weight"] = torch.cat([sd[b + f"attention.{t}.weight"] for t in ("W_q", "W_k", "W_v")]).T
        new[h + "attn.c_attn.bias"] = torch.cat([sd[b + f"attention.{t}.bias"] for t in ("W_q", "W_k", "W_v")])
        for src, dst in (
            ("attention.out_proj", "attn.c_proj"),
            ("ffn.layers.0", "mlp.c_fc"),
            ("ffn.layers.2", "mlp.c_proj"),
        ):
            new[h + dst + ".weight"] = sd[b + src + ".weight"].T
            new[h + dst + ".bias"] = sd[b + src + ".bias"]
        for src, dst in (("norm1", "ln_1"), ("norm2", "ln_2")):
            new[h + dst + ".weight"] = sd[b + src + ".scale"]
            new[h + dst + ".bias"] = sd[b + src + ".shift"]
    hf.load_state_dict(new, strict=False)
    return hf.to(device=device, dtype=dtype).eval()


def hf_loop(model, tokenizer, texts: list[str], device: torch.device, batch: int = 256) -> np.ndarray:
    """Tokenize, sort by length, pad each batch to its longest row, GPT2ForSequenceClassification."""
    ids = tokenizer.encode_ordinary_batch(texts)
    ids = [s[:120] or [50256] for s in ids]
    order = np.argsort([len(s) for s in ids], kind="stable")
    probs = np.empty(len(ids))
    with torch.inference_mode():
        for i in range(0, len(ids), batch):
            rows = order[i : i + batch]
            width = max(len(ids[r]) for r in rows)
            x = torch.full((len(rows), width), 50256, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                x[j, : len(ids[r])] = torch.tensor(ids[r])
                mask[j, : len(ids[r])] = 1
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
            probs[rows] = torch.softmax(logits.float(), -1)[:, 1].cpu().numpy()
    return probs


def transformers_rows(clf, texts: list[str], device: torch.device, dtypes: list[str], batches: list[int]) -> list[dict]:
    """(b): transformers in each dtype, every batch size timed, the fastest reported (the others
    in `tried`)."""
    rows = []
    for name in dtypes:
        model = hf_model(clf, device, {"fp32": torch.float32, "bf16": torch.bfloat16}[name])
        hf_loop(model, clf.tokenizer, texts[:64], device, 32)  # warm-up: kernels chosen, pages touched
        tried = {b: timed(hf_loop, model, clf.tokenizer, texts, device, b)[0] for b in batches}
        best = min(tried, key=tried.get)
        rows.append(
            {
                "name": f"(b) transformers GPT2ForSequenceClassification {name}, batch {best} (best of "
                f"{'/'.join(map(str, batches))}), length-sorted",
                "n": len(texts),
                "s": tried[best],
                "peer": True,
                "tried": {str(b): round(len(texts) / s, 1) for b, s in tried.items()},
            }
        )
        del model
    return rows


class _OpenVinoSession:
    """An OpenVINO compiled model behind ONNX Runtime's `run(names, feed)`, so that spamjob's own
    batching (OrtPredictor) drives it as it drives ONNX Runtime."""

    def __init__(self, path: Path, precision: str):
        import openvino as ov

        hint = {"bf16": "bf16", "fp32": "f32"}[precision] if precision != "int8" else "bf16"
        self.model = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        self.output = self.model.output("spam_probability")

    def run(self, names, feed):
        return [self.model(feed)[self.output]]


def onnx_rows(run_dir: Path, clf, texts: list[str], variants: list[str], tmp: Path, batch_tokens: int) -> list[dict]:
    """(d): ONNX Runtime (onnx, onnx-int8) and OpenVINO (openvino-bf16, openvino-int8: the int8 graph,
    its other operations in bf16) on the exported graphs, tokenization included in the time."""
    variants = [v for v in variants if v.startswith(("onnx", "openvino-"))]
    if not variants:
        return []
    from spamjob.export.onnx import export_onnx
    from spamjob.scoring.runtimes.ort_session import OrtPredictor
    from spamjob.scoring.runtimes.pytorch import spam_probability
    from spamjob.text import encode

    export_onnx(
        run_dir, tmp / "onnx", quantize="int8" if any("int8" in v for v in variants) else None, texts=texts[:64]
    )
    want = np.asarray(spam_probability(clf, texts[:400])[0])  # spamjob fp32, for the agreement of labels
    rows = []
    for variant in variants:
        library = "openvino" if variant.startswith("openvino") else "onnxruntime"
        if importlib.util.find_spec(library) is None:
            print(f"(d) {variant}: {library} is not installed here; left out")
            continue
        int8 = variant.endswith("int8")
        path = tmp / "onnx" / ("model.int8.onnx" if int8 else "model.onnx")
        session = _session(library, path, variant)
        OrtPredictor(clf, session, batch_tokens)(encode(clf.tokenizer, texts[:64]))  # warm-up
        t, probs = timed(lambda s=session: OrtPredictor(clf, s, batch_tokens)(encode(clf.tokenizer, texts)))
        same = float(((probs[:400] > clf.threshold) == (want > clf.threshold)).mean())
        label = {"onnx": "fp32", "onnx-int8": "int8", "openvino-bf16": "bf16", "openvino-int8": "int8"}[variant]
        rows.append(
            {
                "name": f"(d) {'OpenVINO' if library == 'openvino' else 'ONNX Runtime'} {label}, "
                f"{batch_tokens}-token length-sorted batches",
                "n": len(texts),
                "s": t,
                "peer": True,
                "agreement": {"same_prediction": same, "rows": min(400, len(texts))},
            }
        )
    return rows


def _session(library: str, path: Path, variant: str):
    if library == "openvino":
        return _OpenVinoSession(path, variant.removeprefix("openvino-"))
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # its default threads
