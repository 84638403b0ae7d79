"""accelerate's prepare and unwrap for spamjob's training, without their one-process costs.

On one process, `Accelerator.prepare` checks the model for DTensor parameters (importing
torch.distributed.tensor, and with it sympy) and `unwrap_model` checks for torch.compile
(importing torch._dynamo): ~0.9 s of a 4-layer CPU fine-tune's ~7 s together. spamjob builds
its model itself (no DTensor) and never compiles it in training, so on one process it states
the device placement those checks would compute and knows its classifier is not wrapped.
"""

from __future__ import annotations

import torch
from accelerate.utils import DistributedType, extract_model_from_parallel

from spamjob.model import SpamClassifier


def prepare(accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """accelerator.prepare(model, optimizer); on one process with the device placement given for
    the two, as accelerate would choose it for a model without DTensor parameters. Several
    processes leave every choice to accelerate (DDP runs the DTensor check regardless)."""
    if accelerator.distributed_type != DistributedType.NO:
        return accelerator.prepare(model, optimizer)
    return accelerator.prepare(model, optimizer, device_placement=[accelerator.device_placement] * 2)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier under accelerate's wrapper (DDP, FSDP, ...): accelerator.unwrap_model, but
    an unwrapped classifier (one process) is returned before its torch.compile check."""
    return model if isinstance(model, SpamClassifier) else extract_model_from_parallel(model)
