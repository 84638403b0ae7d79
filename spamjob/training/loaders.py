"""The training data path: per-process slices, the frozen-prefix cache, the loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from spamjob.model import GPTModel
from spamjob.text import pad_batch, rows_within


class PrefixCache:
    """Activations entering block `start`, per example of one rank's slice, packed as (sum of widths, d).

    Frozen blocks below the first trainable one compute the same thing in every epoch
    and evaluation; they run once here. Example i owns rows offsets[i] : offsets[i] + widths[i].
    """

    def __init__(self, rows: torch.Tensor, widths: torch.Tensor, start: int):
        self.rows = rows
        self.widths = widths
        self.host_widths = widths.tolist()  # a batch's width is read here, never from a tensor (a sync on GPU)
        self.offsets = torch.cumsum(widths, 0) - widths
        self.start = start

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        gpt: GPTModel,
        ids: list[list[int]],
        widths: list[int],
        start: int,
        device: torch.device,
        autocast,
        batch_tokens: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> PrefixCache:
        """Run embeddings + blocks[:start] once over `ids` (rows padded to `widths`), in width order,
        and keep the activations in `dtype` (bf16 when they are computed in bf16 on a GPU: half the memory).

        Batches hold about `batch_tokens` padded tokens: on CPU 1,024 (the fastest measured
        here at 256 and 768 dims; 3,072 was 10-30% slower, much larger batches several
        times slower: activations fall out of cache), on GPU 32,768.
        """
        budget = batch_tokens or (32768 if device.type == "cuda" else 1024)
        w = torch.tensor(widths, dtype=torch.long)
        rows = torch.empty(int(w.sum()), gpt.cfg.emb_dim, device=device, dtype=dtype)
        offsets = torch.cumsum(w, 0) - w
        order = sorted(range(len(ids)), key=lambda i: widths[i])  # similar widths share a batch
        ordered = [widths[i] for i in order]
        chunks, k = [], 0
        while k < len(order):
            end = k + rows_within(ordered, budget, k)
            chunks.append(order[k:end])
            k = end
        was_training = gpt.training
        gpt.eval()
        for chunk in chunks:
            width = max(widths[i] for i in chunk)
            batch = pad_batch([ids[i] for i in chunk], width, padding="fixed").input_ids.to(device)
            with autocast():
                x = gpt.embed(batch)
                for block in gpt.transformer_blocks[:start]:
                    x = block(x)
            # Every row's first widths[i] positions, in one copy: (B, width) -> packed rows.
            c = torch.tensor(chunk)
            j = torch.arange(width)
            keep = j[None, :] < w[c][:, None]
            dest = (offsets[c][:, None] + j[None, :])[keep]
            rows.index_copy_(0, dest.to(device), x[keep.to(device)].to(dtype))
        gpt.train(was_training)
        return cls(rows, w.to(device), start)

    def gather(self, idx: list[int]) -> torch.Tensor:
        """B example indices -> (B, W, d), each row right-padded by repeating its last row."""
        width = max(self.host_widths[i] for i in idx)
        idx = torch.tensor(idx).to(self.rows.device, non_blocking=True)
        w = self.widths[idx]
        j = torch.arange(width, device=self.rows.device)
        index = self.offsets[idx][:, None] + torch.minimum(j[None, :], (w - 1)[:, None])
        return self.rows[index]

    @property
    def megabytes(self) -> float:
        return self.rows.numel() * self.rows.element_size() / 2**20


@dataclass
class RankSlice:
    """This process's rows of one split: token ids (truncated), labels, optional prefix cache."""

    name: str
    ids: list[list[int]]
    labels: torch.Tensor
    n_total: int
    truncated_total: int
    cache: PrefixCache | None = None

    def __len__(self) -> int:
        return len(self.ids)


class _Collate:
    """Indices -> model inputs: token ids padded (plain path) or cached activations (cached path)."""

    def __init__(self, rank_slice: RankSlice, max_length: int, padding: str):
        self.rank_slice, self.max_length, self.padding = rank_slice, max_length, padding

    def __call__(self, idx: list[int]) -> dict:
        lengths = torch.tensor([max(len(self.rank_slice.ids[i]), 0) for i in idx], dtype=torch.long)
        labels = self.rank_slice.labels[idx]
        cache = self.rank_slice.cache
        if cache is not None:
            return {"hidden": cache.gather(idx), "lengths": lengths, "start": cache.start, "labels": labels}
        b = pad_batch([self.rank_slice.ids[i] for i in idx], self.max_length, padding=self.padding)
        return {"input_ids": b.input_ids, "lengths": b.lengths, "labels": labels}


def make_loader(
    rank_slice: RankSlice, batch_size: int, padding: str, max_length: int, *, train: bool, n_rows: int | None = None
) -> DataLoader:
    """A plain torch DataLoader over row indices, exactly as the reference builds its loaders."""
    rows = list(range(len(rank_slice) if n_rows is None else n_rows))
    return DataLoader(
        rows,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=0,
        collate_fn=_Collate(rank_slice, max_length, padding),
        pin_memory=torch.cuda.is_available() and rank_slice.cache is None,
    )  # cached rows are on the GPU


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on `device`; from pinned memory (loaders pin on CUDA) the copies are asynchronous."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
