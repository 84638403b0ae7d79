"""spamjob.training.optimizer.AdamW: torch's AdamW, every tensor the same, without torch._dynamo."""

from __future__ import annotations

import copy

import pytest
import torch

from spamjob.training.optimizer import AdamW


def _steps(cls, fused, n=4, state=None):
    """n steps on a small model from fixed weights and data; the parameters and the optimizer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 2))
    opt = cls(model.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append(1))
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 2, (8,), generator=gen)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    assert len(calls) == n  # step hooks run once per step
    return model, opt


@pytest.mark.parametrize("fused", [None, True])
def test_same_parameters_and_state_as_torch(fused):
    ours, ours_opt = _steps(AdamW, fused)
    theirs, theirs_opt = _steps(torch.optim.AdamW, fused)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b) and a.grad is None
    s, t = ours_opt.state_dict(), theirs_opt.state_dict()
    assert s["param_groups"] == t["param_groups"]
    for k in t["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(s["state"][k][name], t["state"][k][name])


def test_a_loaded_state_continues_like_torch():
    model, opt = _steps(AdamW, None, n=2)
    saved = {"model": model.state_dict(), "opt": opt.state_dict()}
    ours, _ = _steps(AdamW, None, n=2, state=copy.deepcopy(saved))  # the update is in place
    theirs, _ = _steps(torch.optim.AdamW, None, n=2, state=copy.deepcopy(saved))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
