"""accelerate's prepare and unwrap for spamjob's training, without their one-process costs.

On one process, `Accelerator.prepare` checks the model for DTensor parameters (importing
torch.distributed.tensor, and with it sympy) and `unwrap_model` checks for torch.compile
(importing torch._dynamo): ~0.9 s of a 4-layer CPU fine-tune's ~7 s together. spamjob builds
its model itself (no DTensor) and never compiles it in training, so it states the device
placement those checks would compute and unwraps the one wrapper training adds, DDP's.
"""

from __future__ import annotations

import torch
from accelerate.utils import DistributedType
from torch.nn.parallel import DistributedDataParallel


def prepare(accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """accelerator.prepare(model, optimizer), device placement given for the two (as accelerate
    would choose it for a model without DTensor parameters)."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return accelerator.prepare(model, optimizer)  # these refuse a per-object placement
    return accelerator.prepare(model, optimizer, device_placement=[accelerator.device_placement] * 2)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP's wrapper (accelerator.unwrap_model without its torch.compile check)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
