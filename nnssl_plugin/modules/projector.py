"""Projection head of MoCo v2 (Chen et al. 2020): Linear → ReLU → Linear, then L2 normalisation.

No batch normalisation: nnU-Net batches hold 2–12 crops, too few for batch statistics.

Shape: (n, in_dim) → (n, out_dim), unit length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128):  # MoCo v2: hidden 2048, out 128
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)
