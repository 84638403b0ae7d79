"""spamjob.artifact: the classifier folder (safetensors + JSON + tokenizer files) round-trips, loads
offline with nothing else, and refuses folders that are not one, in one line."""

from __future__ import annotations

import json

import pytest
import torch

from spamjob.artifact import FORMAT, load_classifier, save_classifier
from spamjob.config import LABELS, GPTConfig
from spamjob.errors import SpamjobError
from spamjob.fsutil import sha256_file
from spamjob.model import GPTModel, replace_head
from spamjob.scoring.runtimes.pytorch import spam_probability
from spamjob.text import TOKENIZER_FILES

pytestmark = pytest.mark.usefixtures("assets")  # the tokenizer files copied into the folder
TEXTS = ["WINNER!! claim your prize", "see you at lunch", "", "hi <|endoftext|> there", "word " * 50]


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    gpt = replace_head(GPTModel(GPTConfig(context_length=64, emb_dim=32, n_heads=2, n_layers=2)), 2, seed=0)
    meta = {"max_length": 24, "pooling": "last-token", "padding": "dynamic", "training": {"epochs": 1}}
    return gpt, save_classifier(tmp_path / "clf", gpt, meta)


def test_round_trip(saved):
    gpt, folder = saved
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        "config.json",
        "encoder.json",
        "model.safetensors",
        "vocab.bpe",
    ]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == FORMAT and cfg["labels"] == list(LABELS) and cfg["num_classes"] == 2
    assert cfg["architecture"] == gpt.cfg.to_dict() and cfg["training"] == {"epochs": 1}
    assert cfg["model_sha256"] == sha256_file(folder / "model.safetensors")
    assert cfg["tokenizer"] == {
        "encoding": "gpt2",
        "pad_id": 50256,
        "folder": "tokenizer",
        "sha256": dict(TOKENIZER_FILES),
    }
    for name, sha in TOKENIZER_FILES.items():
        assert sha256_file(folder / "tokenizer" / name) == sha
    clf = load_classifier(folder)
    torch.testing.assert_close(clf.model.gpt.state_dict(), gpt.state_dict(), atol=0, rtol=0)
    assert (clf.max_length, clf.pooling, clf.padding, clf.labels) == (24, "last-token", "dynamic", list(LABELS))


def test_loads_offline_from_the_folder_alone(saved, monkeypatch):
    _, folder = saved
    for var in ("SPAMJOB_TOKENIZER", "TIKTOKEN_CACHE_DIR"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    probs, truncated = spam_probability(load_classifier(folder), TEXTS)
    assert len(probs) == 5 and all(0.0 < p < 1.0 for p in probs)
    assert truncated == [False, False, False, False, True]


def test_probabilities_do_not_depend_on_the_batch(saved):
    clf = load_classifier(saved[1])
    alone = [spam_probability(clf, [t])[0][0] for t in TEXTS]
    together, _ = spam_probability(clf, TEXTS, batch_tokens=4096)
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone), atol=1e-6, rtol=0)


def test_last_pooling_pads_to_max_length(saved, tmp_path):
    gpt, _ = saved
    folder = save_classifier(tmp_path / "last", gpt, {"max_length": 24, "pooling": "last", "padding": "fixed"})
    assert load_classifier(folder).padding == "fixed"


def test_folders_that_are_not_a_classifier(saved, tmp_path):
    _, folder = saved
    with pytest.raises(SpamjobError, match="is not a trained classifier"):
        load_classifier(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "format": "other/2"}))
    with pytest.raises(SpamjobError, match=f"is not a {FORMAT} config \\(format 'other/2'\\)"):
        load_classifier(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SpamjobError, match="cannot load .*model.safetensors") as e:
        load_classifier(folder)
    assert "\n" not in str(e.value)


def test_loading_skips_random_init_and_torch_dynamo(saved):
    """Modules are built empty on the meta device (their weights assigned from the file): no random
    fill, which on meta tensors would import torch._dynamo (about 1 s of every scoring start)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom spamjob.artifact import load_classifier\n"
        "from spamjob.scoring.runtimes.pytorch import spam_probability\n"
        f"spam_probability(load_classifier({str(saved[1])!r}), ['hi'])\nprint('torch._dynamo' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["False"], r.stderr
    torch.manual_seed(0)
    built = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    assert built.token_emb.weight.std() > 0.5  # outside empty_modules(), torch's own initialisation
