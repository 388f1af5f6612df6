"""Exponential moving average of a network's weights (MoCo's key encoder): θ_k ← m·θ_k + (1 − m)·θ_q."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """Move `target`'s parameters towards `source`'s; buffers (e.g. norm statistics) are copied."""
    targets, sources = list(target.parameters()), [p.detach() for p in source.parameters()]
    if len(targets) != len(sources):
        raise ValueError("EMA between modules of different architecture")
    torch._foreach_mul_(targets, momentum)  # one fused op over all tensors instead of a python loop
    torch._foreach_add_(targets, sources, alpha=1.0 - momentum)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)


def frozen_copy_of(module: nn.Module, copy: nn.Module) -> nn.Module:
    """Initialise `copy` (same architecture) with `module`'s state and freeze it (no gradient)."""
    copy.load_state_dict(module.state_dict())
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy
