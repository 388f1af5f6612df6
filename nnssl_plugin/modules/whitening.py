"""ZCA whitening of a feature map's channel vectors as modules: frozen (downstream) and running (pretraining).

In moco_zca (Hassanpour, Srivastav, Mutter, Padoy, ISBI 2024, arXiv 2402.14611) the bottleneck's channel vectors
are ZCA-whitened before pooling and the projector, and the whitening is part of the backbone downstream.

`FrozenWhitening` applies fixed (mean, W) per channel group; downstream trainers insert it between the encoder's
bottleneck and the decoder for moco_zca exports. `RunningWhitening` estimates (mean, Σ) over many batches, because
at nnU-Net's batch 2 batch statistics are degenerate (centring by the batch mean then pooling per image makes the
two pooled vectors exact negatives). Its running moments are an EMA with momentum m over batches of all positions
of all images, zero-initialised and bias-corrected as in Adam (Kingma & Ba 2015, arXiv 1412.6980), which is the
same as mixing batch t in with weight

    α_t = m / (1 − (1 − m)^t)      (α_1 = 1: unbiased from the first step),

using the mixture rule of `nnssl_plugin.ops.whitening` (so the between-batch spread of the means is counted).
`w` = ZCA(running Σ) is refreshed after every update, so `mean` and `w` are always the exported pair.
Training modes (the statistics of one step whiten the queries; the keys use the key function's copy of them,
refreshed with the key encoder: methods/moco/network.py, `key_update`):
- "running": update with the detached batch, then whiten with the running (mean, W): a fixed linear map per step.
- "hybrid": Σ = (1 − a)·Σ_run + a·Σ_batch (mixture rule, running part detached and taken before this update,
  batch part with gradient), a = max(batch_share, α_t); W = ZCA(Σ) differentiable; then update the running
  moments. The default batch_share = m gives the batch the weight it gets in the running estimate: the forward
  values equal "running" mode's (train = eval; a batch-mate moves a crop's embedding by ~m), only the gradient
  also flows through the batch's share. The paper's per-image weight (batch 2 of 64: a = 1/32) let a swapped
  batch-mate move a crop's whitened embedding by up to 8 % on a synthetic stream (tests: the bound is 5 %).
Evaluation: the running (mean, W). A non-finite batch leaves the running state untouched.
Shape: (n, c, *spatial) or (n, c) → same, fp32.
"""
from __future__ import annotations

import torch
from torch import nn

from nnssl_plugin.ops.distributed import gather_from_all_ranks
from nnssl_plugin.ops.whitening import batch_moments, mix_moments, zca_from_covariance

MODES = ("running", "hybrid")


def whitening_groups(channels: int, images: float, min_images_per_channel: float) -> int:
    """Smallest number of equal channel groups such that the images behind the running estimate (effective batch /
    EMA momentum) are at least `min_images_per_channel` times the channels of a group."""
    for groups in range(1, channels + 1):
        if channels % groups == 0 and images >= min_images_per_channel * (channels // groups):
            return groups
    raise ValueError(f"whitening needs at least {min_images_per_channel:g} image(s) per channel behind its running "
                     f"estimate, found {images:g} (effective batch / whitening_update_weight); lower whitening_update_weight")


def apply_whitening(x: torch.Tensor, mean: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(x − mean_g) W_g for every channel group g of x (n, c, *spatial) or (n, c); mean (g, c/g), w (g, c/g, c/g).
    Returns fp32/fp64 (autocast off), same shape as x."""
    groups, per_group = mean.shape
    if x.shape[1] != groups * per_group:
        raise ValueError(f"whitening of {groups} x {per_group} channels got a tensor with {x.shape[1]} channels "
                         f"(shape {tuple(x.shape)}); the network and the whitening statistics differ")
    with torch.autocast(device_type=x.device.type, enabled=False):
        v = x.movedim(1, -1)  # (n, *spatial, c)
        v = v.to(w.dtype).reshape(*v.shape[:-1], groups, per_group) - mean  # (n, *spatial, g, c/g)
        out = torch.einsum("...gi,gij->...gj", v, w)
        return out.reshape(*out.shape[:-2], groups * per_group).movedim(-1, 1)


class FrozenWhitening(nn.Module):
    def __init__(self, groups: int, channels_per_group: int):
        super().__init__()
        self.groups = groups
        self.register_buffer("mean", torch.zeros(groups, channels_per_group))  # (g, c/g)
        self.register_buffer("w", torch.eye(channels_per_group).repeat(groups, 1, 1))  # (g, c/g, c/g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_whitening(x, self.mean, self.w)


class RunningWhitening(FrozenWhitening):
    """Running ZCA statistics (module docstring). Persistent buffers: mean (g, c/g), cov (g, c/g, c/g),
    w (g, c/g, c/g) = ZCA(cov), step () = number of batches in the estimate."""

    def __init__(self, channels: int, groups: int, eps: float, momentum: float, mode: str = "hybrid",
                 batch_share: float | None = None):
        if mode not in MODES:
            raise ValueError(f"whitening_mode must be one of {MODES}, found '{mode}'; use 'running' or 'hybrid'")
        if channels % groups:
            raise ValueError(f"{channels} channels cannot be split into {groups} whitening groups; choose a divisor")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"whitening_update_weight must be in (0, 1], found {momentum}; 0.01 spans ~100 steps")
        super().__init__(groups, channels // groups)
        self.eps, self.momentum, self.mode = eps, momentum, mode
        self.batch_share = momentum if batch_share is None else batch_share
        per_group = channels // groups
        self.register_buffer("cov", torch.zeros(groups, per_group, per_group))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        """Channel vectors of every position of every image, grouped: (n * positions, g, c/g)."""
        v = x.movedim(1, -1)
        return v.reshape(-1, self.groups, v.shape[-1] // self.groups)

    def _update_weight(self) -> torch.Tensor:
        """α_t of the next update (0-dim fp64 tensor on the buffers' device; no host sync)."""
        t = (self.step + 1).to(torch.float64)
        return self.momentum / (1.0 - (1.0 - self.momentum) ** t)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Mix the batch x (n, c, *spatial) into the running moments (all ranks' batches under DDP), refresh w."""
        mean_b, cov_b = batch_moments(self._grouped(x.detach()))  # (g, c/g), (g, c/g, c/g)
        means = gather_from_all_ranks(mean_b.unsqueeze(0))  # (world, g, c/g); ranks hold equal sample counts
        covs = gather_from_all_ranks(cov_b.unsqueeze(0))
        mean_b = means.mean(0)
        spread = (means - mean_b).unsqueeze(-1)  # (world, g, c/g, 1)
        cov_b = (covs + spread @ spread.transpose(-1, -2)).mean(0)  # pooled covariance of all ranks' samples
        mean, cov = mix_moments(self.mean.to(mean_b.dtype), self.cov.to(cov_b.dtype), mean_b, cov_b,
                                self._update_weight())
        finite = torch.isfinite(mean).all() & torch.isfinite(cov).all()
        mean = torch.where(finite, mean, self.mean.to(mean.dtype))
        cov = torch.where(finite, cov, self.cov.to(cov.dtype))
        self.mean.copy_(mean)
        self.cov.copy_(cov)
        w = zca_from_covariance(cov, self.eps)
        self.w.copy_(torch.where(finite, w, self.w.to(w.dtype)))  # untouched, also before the first update
        self.step.add_(finite.long())

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (g, c/g), W (g, c/g, c/g)) to whiten this step with. Training: updates the running moments with x
        (n, c, *spatial); "hybrid" returns statistics with gradient through x. Evaluation: the running buffers."""
        if not self.training:
            return self.mean.clone(), self.w.clone()
        if self.mode == "running":
            self.update(x)
            return self.mean.clone(), self.w.clone()
        mean_b, cov_b = batch_moments(self._grouped(x))  # with gradient
        share = torch.maximum(self._update_weight(), torch.tensor(float(self.batch_share), dtype=torch.float64,
                                                                  device=self.step.device)).to(mean_b.dtype)
        running = self.mean.detach().clone().to(mean_b.dtype), self.cov.detach().clone().to(cov_b.dtype)
        mean, cov = mix_moments(*running, mean_b, cov_b, share)  # the running part is taken before this update
        cov = torch.where(torch.isfinite(cov), cov, torch.zeros_like(cov))  # a NaN batch fails the loss, not eigh
        w = zca_from_covariance(cov, self.eps)
        self.update(x)
        return mean, w

    def exported(self) -> dict:
        """What the pretrained-weights file and the export carry of it: mean (g, c/g), w (g, c/g, c/g) (CPU
        copies), groups, eps, mode, momentum (`whitening_update_weight`) and the batches behind the estimate."""
        return {"mean": self.mean.detach().cpu().clone(), "w": self.w.detach().cpu().clone(), "groups": self.groups,
                "eps": self.eps, "mode": self.mode, "momentum": self.momentum, "batches": int(self.step)}

    def forward(self, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Whitened x with `stats` (mean, W) if given, else with `statistics(x)` (which updates in training)."""
        mean, w = self.statistics(x) if stats is None else stats
        return apply_whitening(x, mean, w)


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
