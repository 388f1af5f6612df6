"""The one autocast of the plugin: the pretraining step, the held-out hook, the online probe and `nnssl_probe` all
enter it, so `--bf16` (nnssl_run.json's `precision`) reaches every forward of a run.

- "amp" (nnU-Net's): fp16 autocast on CUDA (with its GradScaler in training), full precision elsewhere;
- "bf16": bf16 autocast on any device (its range needs no loss scaling).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("amp", "bf16")


def autocast(device: torch.device, precision: str = "amp"):
    """The autocast context of `precision` on `device` (a no-op context for "amp" off CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=True) if device.type == "cuda" else contextlib.nullcontext()
