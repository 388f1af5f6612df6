"""ZCA whitening of a feature map's channel vectors as modules: frozen (downstream) and running (pretraining).

`FrozenWhitening` applies fixed (mean, W) per channel group; it is what downstream trainers insert between the
encoder's bottleneck and the decoder for `moco_zca` exports (paper 000: the whitening is part of the backbone).
`RunningWhitening` computes exact ZCA from the batch while training (with gradient) and keeps running (mean, W)
buffers for evaluation and export. Shape: (n, c, *spatial) → same, fp32.
"""
from __future__ import annotations

import torch
from torch import nn

from nnssl_plugin.ops.whitening import zca_matrix


class FrozenWhitening(nn.Module):
    def __init__(self, groups: int, channels_per_group: int):
        super().__init__()
        self.groups = groups
        self.register_buffer("mean", torch.zeros(groups, channels_per_group))
        self.register_buffer("w", torch.eye(channels_per_group).repeat(groups, 1, 1))  # (groups, c/g, c/g)

    def _apply_groups(self, x: torch.Tensor, stats) -> torch.Tensor:
        n, c = x.shape[:2]
        flat = x.movedim(1, -1).reshape(-1, c)  # (n * positions, c)
        out = []
        for g, chunk in enumerate(flat.split(c // self.groups, dim=1)):
            w, mean = stats(g, chunk)
            with torch.autocast(device_type=x.device.type, enabled=False):
                out.append((chunk.float() - mean.float()) @ w.float())
        return torch.cat(out, dim=1).reshape(n, *x.shape[2:], c).movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_groups(x, lambda g, chunk: (self.w[g], self.mean[g]))


class RunningWhitening(FrozenWhitening):
    def __init__(self, channels: int, groups: int, eps: float, momentum: float):
        super().__init__(groups, channels // groups)
        self.eps, self.momentum = eps, momentum

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Training: batch statistics (with gradient), moving the running buffers unless `update=False`.
        Evaluation: the running buffers."""
        if not self.training:
            return super().forward(x)

        def batch_stats(g, chunk):
            w, mean = zca_matrix(chunk, self.eps)
            if update:
                with torch.no_grad():
                    self.mean[g].lerp_(mean.detach().to(self.mean.dtype), self.momentum)
                    self.w[g].lerp_(w.detach().to(self.w.dtype), self.momentum)
            return w, mean

        return self._apply_groups(x, batch_stats)


def attach_bottleneck_whitening(network: nn.Module, groups: int, channels_per_group: int) -> nn.Module:
    """Insert a FrozenWhitening between a planned U-Net's encoder and everything that consumes its bottleneck
    (decoder, probes): a forward hook on `network.encoder` whitens the last stage output. The module is registered
    as `network.bottleneck_whitening` (its buffers are in the state dict, so checkpoints and nnUNetv2_predict carry
    them); the U-Net's own keys are unchanged. It cannot be folded into the decoder's transposed convolution
    exactly: the mean term would differ per kernel position."""
    network.bottleneck_whitening = FrozenWhitening(groups, channels_per_group)
    for p in network.bottleneck_whitening.parameters():
        p.requires_grad_(False)

    def whiten_bottleneck(module, inputs, output):
        if isinstance(output, (list, tuple)):
            return [*output[:-1], network.bottleneck_whitening(output[-1]).to(output[-1].dtype)]
        return network.bottleneck_whitening(output).to(output.dtype)

    network.encoder.register_forward_hook(whiten_bottleneck)
    return network
