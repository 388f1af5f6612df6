"""The feature pyramid of a planned U-Net (Kats et al. 2024, arXiv 2401.06473; docs/ARCHITECTURE.md, "The methods"):
the bottleneck, then every decoder stage output, coarse to fine, computed with the network's own modules (its class
and weights stay a plain nnU-Net U-Net's).

The decoder's stages are run as `UNetDecoder.forward` runs them (transposed convolution, concatenation with the
skip, stage) but without its segmentation layers, which pretraining neither needs nor trains. `level_strides`
gives each level's cumulative per-axis stride from the plans (anisotropic). A patch that the bottleneck stride does
not divide (nnU-Net's planner never makes one, hand-edited plans can) is zero-padded at the end of each axis by
`pad_to_multiple`: view voxels keep their coordinates, and the cells they fall in are those of the padded pass.

Shape: x (n, c_in, *spatial) → [bottleneck (n, c_L, *s_L), decoder stage outputs (n, c_l, *s_l) coarse to fine].
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def unet_pyramid(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    skips = encoder(x)  # encoder stage outputs, last = bottleneck
    levels = [skips[-1]]
    for s, (transpconv, stage) in enumerate(zip(decoder.transpconvs, decoder.stages)):
        up = transpconv(levels[-1])
        levels.append(stage(torch.cat((up, skips[-(s + 2)]), 1)))
    return levels


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int]) -> torch.Tensor:
    """Zero-pad the spatial axes of x (n, c, *s) at their end up to multiples of `multiple` (no copy if already)."""
    pad = []
    for size, m in zip(reversed(x.shape[2:]), reversed(list(multiple))):
        pad += [0, (-size) % m]
    return F.pad(x, pad) if any(pad) else x


def level_channels(encoder: nn.Module) -> list[int]:
    """Channels of the pyramid levels: bottleneck, then decoder stages (which mirror the encoder's)."""
    channels = list(encoder.output_channels)
    return [channels[-1], *reversed(channels[:-1])]


def level_strides(stage_strides: Sequence[Sequence[int] | int], dims: int) -> list[tuple[int, ...]]:
    """Cumulative per-axis stride of each pyramid level from the plans' per-stage `strides`."""
    cumulative, total = [], [1] * dims
    for stride in stage_strides:
        stride = [stride] * dims if isinstance(stride, int) else list(stride)
        total = [t * s for t, s in zip(total, stride)]
        cumulative.append(tuple(total))
    return [cumulative[-1], *reversed(cumulative[:-1])]
