"""Projection head: an MLP, then L2 normalisation (the embedding the contrastive losses compare).

- MoCo v2 (Chen, Fan, Girshick, He, 2020, arXiv 2003.04297): Linear → ReLU → Linear (`num_layers=2`), **no batch
  normalisation**: its input is one pooled vector per crop and nnU-Net batches hold 2–12 crops, too few for batch
  statistics (at batch 2, centring by the batch mean makes the two vectors exact negatives of each other).
- Dense methods (Kats, Hirsch, Heinrich, 2024, arXiv 2401.06473; vox2vec, Goncharov et al., 2023, arXiv
  2307.14725): three layers with BatchNorm1d, (Linear → BN → ReLU) × 2 → Linear (`num_layers=3, batch_norm=True`).
  Their batch is every sampled voxel (thousands), so batch statistics are well estimated. Under DDP each rank
  normalises its own voxels (plain BatchNorm1d, no SyncBatchNorm): a rank's positives and negatives share one set
  of statistics, as in a single-process run, and at thousands of voxels per rank the statistics' sampling noise
  is small; the running statistics (used in eval mode) are rank 0's, which DDP broadcasts.

    h_0 = x,  h_i = ReLU(BN(W_i h_{i-1} + b_i))  (i < L; BN only with batch_norm),  out = normalise(W_L h_{L-1} + b_L)

Shape: (n, in_dim) → (n, out_dim), unit length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128,  # MoCo v2: hidden 2048, out 128
                 num_layers: int = 2, batch_norm: bool = False):  # MoCo v2: two layers, no BN (batch of 2 crops)
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a projection head needs at least 1 layer, found num_layers={num_layers}; use 2 (MoCo "
                             f"v2) or 3 (dense methods)")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):  # hidden layers; MoCo's keys stay net.0 / net.2 (checkpoints unchanged)
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))  # BN's shift replaces the bias
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)  # (n, out_dim)
