"""spamjob.text: offline tokenizer loading, special-token text, truncation and padding."""

from __future__ import annotations

import pytest
import tiktoken
import torch
from support import Server, flip_byte, tokenizer_bytes

from spamjob.errors import SpamjobError
from spamjob.text import PAD_ID, encode, fetch_tokenizer, load_tokenizer, pad_batch, rows_within

SAMPLES = [
    "Every effort moves you",
    "WINNER!! As a valued network customer you have been selected to receivea £900 prize reward!",
    "Ok lar... Joking wif u oni...",
    "emoji 😀 and ünïcödé   spaces\t\ttabs\nnewlines",
    "",
]


def test_folder_tokenizer_equals_tiktoken_gpt2(tokenizer):
    ref = tiktoken.get_encoding("gpt2")  # from TIKTOKEN_CACHE_DIR, set by conftest
    assert tokenizer.n_vocab == ref.n_vocab == 50257
    for text in SAMPLES:
        assert tokenizer.encode_ordinary(text) == ref.encode_ordinary(text)
    assert tokenizer.decode(tokenizer.encode_ordinary(SAMPLES[3])) == SAMPLES[3]


def test_hf_file_names_work_too(assets, tmp_path):
    tok = tokenizer_bytes(assets)
    (tmp_path / "vocab.json").write_bytes(tok["encoder.json"])
    (tmp_path / "merges.txt").write_bytes(tok["vocab.bpe"])
    tok = load_tokenizer(tmp_path)
    assert tok.encode_ordinary(SAMPLES[1]) == tiktoken.get_encoding("gpt2").encode_ordinary(SAMPLES[1])


def test_special_token_text_is_ordinary_text(tokenizer):
    ids = encode(tokenizer, ["hi <|endoftext|> there"])[0]
    assert PAD_ID not in ids
    assert tokenizer.decode(ids) == "hi <|endoftext|> there"
    with pytest.raises(ValueError):  # what plain tiktoken.encode would have done
        tokenizer.encode("hi <|endoftext|>")


def test_pad_batch_fixed_and_dynamic():
    ids = [[1, 2, 3], [4], [], [5, 6, 7, 8, 9, 10]]
    fixed = pad_batch(ids, max_length=5)
    assert fixed.input_ids.tolist() == [
        [1, 2, 3, PAD_ID, PAD_ID],
        [4] + [PAD_ID] * 4,
        [PAD_ID] * 5,
        [5, 6, 7, 8, 9],
    ]
    assert fixed.lengths.tolist() == [3, 1, 0, 5]
    assert fixed.truncated.tolist() == [False, False, False, True]
    dyn = pad_batch(ids[:2], max_length=5, padding="dynamic")
    assert dyn.input_ids.tolist() == [[1, 2, 3], [4, PAD_ID, PAD_ID]]
    assert dyn.input_ids.dtype == torch.long


def test_pad_batch_matches_row_by_row_padding_on_random_batches():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(0, 12, (1,), generator=g))
        ids = [
            torch.randint(0, 50000, (int(torch.randint(0, 15, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)
        ]
        for max_length in (1, 7, 20):
            for padding in ("fixed", "dynamic"):
                b = pad_batch(ids, max_length, padding=padding)
                width = max_length if padding == "fixed" else max([min(len(s), max_length) for s in ids] + [1])
                rows = [s[:max_length] + [PAD_ID] * (width - min(len(s), max_length)) for s in ids]
                assert b.input_ids.tolist() == rows and b.input_ids.shape == (n, width)
                assert b.lengths.tolist() == [min(len(s), max_length) for s in ids]
                assert b.truncated.tolist() == [len(s) > max_length for s in ids]


def test_rows_within_is_the_greedy_token_budget():
    def greedy(widths, budget, start):
        end = start + 1
        while end < len(widths) and (end - start + 1) * widths[end] <= budget:
            end += 1
        return end - start

    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        widths = sorted(torch.randint(1, 50, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).tolist())
        budget = int(torch.randint(1, 400, (1,), generator=g))
        for start in range(len(widths)):
            assert rows_within(widths, budget, start) == greedy(widths, budget, start)
    assert rows_within([500], 10) == 1  # a row wider than the budget still forms a batch


def test_encode_then_pad_truncates(tokenizer):
    ids = encode(tokenizer, SAMPLES[:3])
    b = pad_batch(ids, max_length=8)
    assert b.input_ids.shape == (3, 8)
    for row, seq in zip(b.input_ids.tolist(), ids):
        assert row[: min(len(seq), 8)] == seq[:8]
    assert b.truncated.tolist() == [len(s) > 8 for s in ids]


def test_reference_max_length_is_120(data_dir, tokenizer):
    import pandas as pd

    texts = pd.read_csv(data_dir / "train.csv")["Text"].tolist()
    assert max(len(s) for s in encode(tokenizer, texts)) == 120  # the reference's max_length


def test_bad_tokenizer_folders(assets, tmp_path):
    with pytest.raises(SpamjobError, match="lacks encoder.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "encoder.json").write_text("{}")
    (tmp_path / "vocab.bpe").write_bytes(tokenizer_bytes(assets)["vocab.bpe"])
    with pytest.raises(SpamjobError, match="is not OpenAI's GPT-2 encoder.json"):
        load_tokenizer(tmp_path)


def test_offline_without_files_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")  # and no tokenizer configured: this test does not ask for assets
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path))
    with pytest.raises(SpamjobError, match="tokenizer files not found offline"):
        load_tokenizer()


def test_fetch_tokenizer_from_local_server(assets, tmp_path, monkeypatch):
    routes = {f"/enc/{n}": b for n, b in tokenizer_bytes(assets).items()}
    with Server(routes) as srv:
        monkeypatch.setenv("SPAMJOB_TOKENIZER_URL", srv.url + "/enc")
        folder = fetch_tokenizer(tmp_path / "tok", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.json", "vocab.bpe"]
    assert load_tokenizer(folder).encode_ordinary("hello world") == [31373, 995]


def test_a_damaged_tokenizer_in_the_cache_is_fetched_again_and_offline_is_one_line(
    assets, tmp_path, capsys, monkeypatch
):
    routes = {f"/enc/{n}": b for n, b in tokenizer_bytes(assets).items()}
    monkeypatch.setenv("SPAMJOB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPAMJOB_TOKENIZER", raising=False)
    with Server(routes) as srv:
        monkeypatch.setenv("SPAMJOB_TOKENIZER_URL", srv.url + "/enc")
        folder = fetch_tokenizer(progress=False)
        flip_byte(folder / "encoder.json")
        capsys.readouterr()
        assert load_tokenizer().encode_ordinary("hello world") == [31373, 995]
        assert f"note: {folder / 'encoder.json'} is damaged" in capsys.readouterr().out
        assert srv.hits["/enc/encoder.json"] == 2
    flip_byte(folder / "vocab.bpe")
    monkeypatch.setenv("SPAMJOB_OFFLINE", "1")
    with pytest.raises(SpamjobError, match=r"vocab.bpe is damaged .*; run `spamjob download --tokenizer`"):
        load_tokenizer()
