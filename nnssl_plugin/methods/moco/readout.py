"""Candidate global vectors of a crop, read from the encoder's last stage, for screening the MoCo family's global
term (`ops.pair_separability`; studies/moco_screen.py). nnU-Net's encoder normalises every stage per crop and channel
(InstanceNorm: Ulyanov et al. 2016, arXiv 1607.08022), so the average of a stage's output is nearly the same for
every crop; the readouts below pool the output (after norm and nonlinearity) and the last convolution's output
before its InstanceNorm, which still holds the per-crop channel statistics that the norm removes:

    avg:  mean_x f_c(x)        max:  max_x f_c(x)        std:  sd_x f_c(x)     (f = the last stage's output)
    prenorm_avg, prenorm_std:  the same statistics of g = the last convolution's output, before its norm

Shapes: feature maps (n, c, *spatial) → vectors (n, c), fp32.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from nnssl_plugin.ops.pooling import avg_pool, max_pool, std_pool

READOUTS = ("avg", "max", "std", "prenorm_avg", "prenorm_std")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def last_conv(stage: nn.Module) -> nn.Module:
    """The last convolution of `stage` in module order (a plain stage: its last conv block's conv; a residual stage:
    the last block's last registered conv)."""
    convs = [m for m in stage.modules() if isinstance(m, _CONVS)]
    if not convs:
        raise ValueError(f"{type(stage).__name__} holds no convolution")
    return convs[-1]


@contextmanager
def captured_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every forward of `module` appends its output (detached) to the yielded list."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
    try:
        yield outputs
    finally:
        handle.remove()


GLOBAL_READOUTS = ("output", "prenorm")  # MocoConfig.global_readout


class LastOutput:
    """A forward hook that keeps the module's last output (with its gradient): register it with
    `module.register_forward_hook(hook)` and `hook.take()` after the forward. An object, not a closure, so a
    network holding it still deep-copies and pickles."""

    def __init__(self):
        self.output: torch.Tensor | None = None

    def __call__(self, _module, _inputs, output: torch.Tensor) -> None:
        self.output = output

    def take(self) -> torch.Tensor:
        """The kept output, released (a module holding a graph's tensor would not deep-copy)."""
        output, self.output = self.output, None
        if output is None:
            raise RuntimeError("the hooked module ran no forward since the last take()")
        return output


def readouts(output: torch.Tensor, prenorm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every READOUTS vector of a batch: `output` the last stage's output, `prenorm` its last conv's output."""
    return {"avg": avg_pool(output), "max": max_pool(output), "std": std_pool(output),
            "prenorm_avg": avg_pool(prenorm), "prenorm_std": std_pool(prenorm)}
