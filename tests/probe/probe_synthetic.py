"""Small synthetic cases and frozen networks for the dense-probe tests (tests only; a plain module, not a
conftest.py, which would shadow tests/conftest.py for `from conftest import ...`)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.probe.dense import Case

NUM_CLASSES = 4  # background and three "organs" of different sizes


def label_map(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Background, a large ball (1), a box (2) and a small ball (3), placed with a random shift."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    shift = rng.integers(-2, 3, 3)
    labels = np.zeros(shape, dtype=np.int8)
    centre = np.array(shape) // 2 + shift
    labels[((z - centre[0]) / 5.0) ** 2 + ((y - centre[1]) / 9.0) ** 2 + ((x - centre[2] + 8) / 8.0) ** 2 < 1] = 1
    labels[2 + shift[0] % 3:8, 4:12 + shift[1], 26:34 + shift[2]] = 2
    labels[((z - centre[0] - 3) / 2.5) ** 2 + ((y - centre[1] - 10) / 4.0) ** 2 + ((x - centre[2] + 6) / 4.0) ** 2
           < 1] = 3
    return labels


def cases(count: int, seed: int, shape=(14, 40, 40)) -> list[Case]:
    """Cases whose single channel is the label map plus noise (-1 marks a rim 'outside the nonzero mask')."""
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        labels = label_map(shape, rng)
        image = labels.astype(np.float32) + 0.1 * rng.standard_normal(shape).astype(np.float32)
        seg = labels[None].copy()
        seg[0, :, :, 0] = -1
        out.append(Case(f"case_{seed}_{i}", lambda im=image, s=seg: (im[None], s), lambda s=seg: s))
    return out


class LevelsEncoder(nn.Module):
    """An encoder stand-in with the attributes the probe reads (`output_channels`, `conv_op`): its levels are a
    full-resolution map and a 2× coarser one, each a fixed function of the image."""

    def __init__(self, levels):
        super().__init__()
        self.levels = levels
        self.conv_op = nn.Conv3d
        probe = [f(torch.zeros(1, 1, 4, 4, 4)) for f in levels]
        self.output_channels = [p.shape[1] for p in probe]

    def forward(self, x):
        return [f(x) for f in self.levels]


class FeatureNet(nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.encoder = LevelsEncoder(levels)


def _one_hot(x: torch.Tensor) -> torch.Tensor:
    return F.one_hot(x[:, 0].round().clamp(0, NUM_CLASSES - 1).long(), NUM_CLASSES).movedim(-1, 1).float()


def tiny_unet(kind: str = "plain3d", num_classes: int = NUM_CLASSES) -> nn.Module:
    """A 3-stage planned-style U-Net (4-16 features): 'plain3d', 'plain2d' or 'resenc3d'."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    dims = 2 if kind.endswith("2d") else 3
    conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if dims == 2 else (nn.Conv3d, nn.InstanceNorm3d)
    strides = [1, 2, 2] if dims == 2 else [1, [1, 2, 2], 2]
    common = dict(conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                  nonlin_kwargs={"inplace": True}, deep_supervision=False)
    if kind.startswith("resenc"):
        return ResidualEncoderUNet(1, 3, [4, 8, 16], conv, 3, strides, [1, 1, 1], num_classes, [1, 1], **common)
    return PlainConvUNet(1, 3, [4, 8, 16], conv, 3, strides, 2, num_classes, 2, **common)


def label_features() -> FeatureNet:
    """Levels that contain the label: its one-hot with two noise channels, and a coarse noisy level."""
    def fine(x):
        g = torch.Generator().manual_seed(0)
        return torch.cat([_one_hot(x), torch.rand(x.shape[0], 2, *x.shape[2:], generator=g)], 1)

    return FeatureNet([fine, lambda x: F.avg_pool3d(x, 2)])


def constant_features() -> FeatureNet:
    return FeatureNet([lambda x: torch.ones(x.shape[0], 3, *x.shape[2:]),
                       lambda x: torch.ones(x.shape[0], 2, *[s // 2 for s in x.shape[2:]])])
