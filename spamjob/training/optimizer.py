"""AdamW as torch computes it, without importing torch._dynamo on first use.

torch.optim wraps `add_param_group`, `zero_grad`, `state_dict`, `load_state_dict` and `step` so
that torch.compile does not trace into them; the wrappers import torch._dynamo the first time one
runs (~0.9 s of a 4-layer CPU fine-tune's ~7 s). Outside torch.compile they change nothing, and
spamjob never compiles its optimizer, so this subclass calls the wrapped methods themselves: the
same code and the same arithmetic (tests/training/test_optimizer.py compares every tensor).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def _unwrapped(name: str):
    """torch.optim.AdamW's method `name` under every functools.wraps layer. torch also hooks
    AdamW.step once any AdamW exists; this class's own step carries that hook (Optimizer.__init__
    adds it), so step hooks run once."""
    return inspect.unwrap(getattr(torch.optim.AdamW, name))


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW (every argument and kernel, fused included) minus the import above."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _unwrapped("add_param_group")(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _unwrapped("zero_grad")(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _unwrapped("state_dict")(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _unwrapped("load_state_dict")(self, state_dict)

    def step(self, closure=None):
        # What torch's step wrapper does outside torch.compile: gradients off around the update.
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return _unwrapped("step")(self, closure)
