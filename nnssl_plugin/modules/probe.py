"""Linear probe over a frozen U-Net's multi-scale features (nnUNetTrainerSSLLinear; docs/ARCHITECTURE.md,
"Downstream trainers").

Per level a 1×1(×1) convolution to the classes, upsampled (linear interpolation) to the input size, summed: a
linear map of the features at every voxel. Levels are the encoder stages (encoder-pretrained methods) or the
bottleneck plus every decoder stage output (encoder+decoder methods), read by `probe_levels.read_levels`, the
definition `nnssl_probe` shares. Only the probe is trainable.

Shape: x (n, c_in, *spatial) → logits (n, classes, *spatial).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.modules.probe_levels import check_level_set, level_channels, read_levels


class LinearProbeNetwork(nn.Module):
    def __init__(self, unet: nn.Module, num_classes: int, levels: str = "encoder"):
        super().__init__()
        self.unet, self.levels = unet, check_level_set(levels)
        for p in self.unet.parameters():
            p.requires_grad_(False)
        conv = unet.encoder.conv_op
        self.probes = nn.ModuleList(conv(c, num_classes, kernel_size=1) for c in level_channels(unet, levels))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return read_levels(self.unet, x, self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        mode = "trilinear" if len(size) == 3 else "bilinear"
        logits = 0
        for probe, feature in zip(self.probes, self.features(x)):
            y = probe(feature)
            logits = logits + (y if y.shape[2:] == size else F.interpolate(y, size=size, mode=mode,
                                                                             align_corners=False))
        return logits
