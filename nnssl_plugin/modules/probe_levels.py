"""Which features of a frozen U-Net a linear probe reads: the one definition that `nnUNetTrainerSSLLinear` and
`nnssl_probe` share (docs/ARCHITECTURE.md, "Downstream trainers" and "Evaluation and demo data").

A level set is "encoder" (every encoder stage output, fine to coarse) for encoder-pretrained methods (moco,
moco_zca: He et al. 2020, arXiv 1911.05722; Hassanpour et al. 2024, arXiv 2402.14611) or "decoder" (the bottleneck,
then every decoder stage output, coarse to fine) for methods that pretrain the whole U-Net (hier, voxel2vec: Kats
et al. 2024, arXiv 2401.06473). The set follows from which state-dict prefixes pretraining provided. moco_zca's
exported whitening is a frozen module between the encoder's bottleneck and everything that consumes it
(`attach_exported_whitening`), so both level sets read the whitened bottleneck, as the method's downstream backbone.

Shape: x (n, c_in, *spatial) → levels [(n, c_l, *s_l)], channels `level_channels(unet, levels)`.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nnssl_plugin.modules.pyramid import unet_pyramid
from nnssl_plugin.modules.pyramid import level_channels as pyramid_channels
from nnssl_plugin.modules.whitening import attach_bottleneck_whitening

LEVEL_SETS = ("encoder", "decoder")


def level_set_for(pretrained_prefixes: Iterable[str]) -> str:
    """'decoder' if pretraining provided any decoder tensors (state-dict prefixes such as `decoder.stages`), else
    'encoder'."""
    return "decoder" if any(p.startswith("decoder") for p in pretrained_prefixes) else "encoder"


def check_level_set(levels: str) -> str:
    if levels not in LEVEL_SETS:
        raise ValueError(f"levels must be one of {LEVEL_SETS}, got {levels!r}")
    return levels


def level_channels(unet: nn.Module, levels: str) -> list[int]:
    """Channels of each level read, in the order `read_levels` returns them."""
    if check_level_set(levels) == "encoder":
        return list(unet.encoder.output_channels)
    return pyramid_channels(unet.encoder)  # bottleneck, then decoder stages coarse to fine


def read_levels(unet: nn.Module, x: torch.Tensor, levels: str) -> list[torch.Tensor]:
    """The frozen features of `levels` for input x; the U-Net's own modules (and a bottleneck whitening attached to
    its encoder) compute them."""
    if check_level_set(levels) == "encoder":
        return list(unet.encoder(x))
    return unet_pyramid(unet.encoder, unet.decoder, x)


def attach_exported_whitening(network: nn.Module, pretrain_info: dict | None) -> nn.Module:
    """The frozen bottleneck whitening an export's plans declare (`pretrain_info["whitening_shape"]` = groups,
    channels per group), attached to `network`'s encoder; its (mean, W) arrive with the export's weights. Plans
    without whitening leave the network unchanged."""
    shape = (pretrain_info or {}).get("whitening_shape")
    if shape:
        attach_bottleneck_whitening(network, int(shape[0]), int(shape[1]))
    return network
