"""The MoCo family's config, its methods and its default optimiser recipe (foundation layer: no torch modules).

moco: MoCo v2 (Chen, Fan, Girshick, He 2020, arXiv 2003.04297) with its bottleneck standardised per channel by
running statistics (`whitening_per_channel`), what the BatchNorm at the end of MoCo v2's ResNet does over the batch.
moco_zca: running ZCA whitening of the bottleneck and a local region loss (Hassanpour et al. 2024, arXiv
2402.14611). Every default carries its reason; the measurements behind them are in docs/RESULTS.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from nnssl_plugin.recipe import Recipe


@dataclass(frozen=True)
class MocoConfig:
    method: str = "moco"
    temperature: float = 0.2  # MoCo v2 (Chen et al. 2020, arXiv 2003.04297); Hassanpour et al. 2024 keep it
    key_momentum: float = 0.99  # weight the key encoder keeps per EMA step; 0.999 suits 200 ImageNet epochs
    queue_size: int | None = None  # None: derived from batch and key_momentum (queue_horizon_ratio), not ImageNet's
    queue_horizon_ratio: float = 0.256  # MoCo v2's queue/EMA-horizon ratio: 65536/256 = 256 steps vs 1/(1-0.999)
    queue_size_floor: int = 64  # floor of the derived size: 32 steps of keys at batch 2, still inside the EMA horizon
    global_loss_min_keys: int = 16  # the global InfoNCE waits for this many real keys: fewer make it near-trivial
    hidden_dim: int = 2048  # MoCo v2 projector
    out_dim: int = 128  # MoCo v2 projector
    bottleneck_whitening: bool = False  # whiten the bottleneck before pooling and the projector (running statistics)
    # one channel per group: per-channel running standardisation, what the BatchNorm at the end of MoCo v2's ResNet
    # does over the batch (nnU-Net's encoder ends in InstanceNorm, whose pooled output barely varies between crops)
    whitening_per_channel: bool = False
    whitening_eps: float = 1e-3  # regularises the smallest eigenvalues of the (small-sample) covariance
    whitening_mode: str = "hybrid"  # "hybrid": gradient through the batch's share of Σ, as the paper's batch whitening
    whitening_update_weight: float = 0.01  # weight each batch takes in the running (mean, Σ): ~100 steps' horizon
    whitening_batch_share: float | None = None  # hybrid: None = whitening_update_weight (a batch-mate moves little)
    whitening_min_images_per_channel: float = 1.0  # groups only if images behind Σ < channels: Σ full rank
    local_weight: float = 0.0  # moco_zca: total = global + 0.5 * local (Hassanpour et al. 2024, arXiv 2402.14611)
    local_grid: int = 2  # regions per axis of the views' overlap (2 -> 8 regions in 3d, 4 in 2d)
    local_temperature: float = 0.2  # Hassanpour et al. 2024 (arXiv 2402.14611)
    view_scale: tuple[float, float] | None = None  # per-view random resized crop; off until (0.7, 1.4) is measured
    view_shift: float = 0.25  # largest offset between the views per axis, a fraction of the patch (0.5: at chance)
    key_update: str = "period"  # "period": key function frozen per queue turnover (no age cue); "step": MoCo v2's EMA
    pooling: str = "avg"  # MoCo v2's global average pool; "max": the average of an instance-normalised map barely varies
    # which map the global vector pools: "output" (the bottleneck, after its InstanceNorm and nonlinearity) or
    # "prenorm" (the last conv's output before that norm, which still holds the per-crop channel means); screened in
    # docs/RESULTS.md ("Can the global vector tell crops apart?")
    global_readout: str = "output"
    # what the global InfoNCE compares: "crop" (MoCo v2: one pooled vector per crop) or "regions" (moco_regions: the
    # views' overlap split into regions at the readout, each region's mean a query and its twin in the other view
    # the positive key, DenseCL-style (Wang et al. 2021, arXiv 2011.09157) with the correspondence from the views'
    # geometry; an InstanceNorm'd map's per-crop mean is fixed, its regions' means are not)
    global_term: str = "crop"
    global_grid: int = 2  # "regions": regions per axis, fewer on axes whose overlap spans fewer readout voxels
    family: str = "moco"  # which network and two-view loader the trainer assembles


METHODS: dict[str, MocoConfig] = {
    # plain MoCo v2 on nnU-Net's InstanceNorm encoder maps every crop to one vector; standardised per channel, its
    # held-out loss falls (docs/RESULTS.md)
    "moco": replace(MocoConfig(), bottleneck_whitening=True, whitening_per_channel=True),
    "moco_zca": replace(MocoConfig(), method="moco_zca", bottleneck_whitening=True, local_weight=0.5),
    # MoCo v2 with a region-aligned global term in place of the whole-crop vector (issue: the pooled vector of an
    # InstanceNorm'd encoder cannot tell crops apart); no whitening: region means keep their between-region signal
    "moco_regions": replace(MocoConfig(), method="moco_regions", global_term="regions"),
}

# SGD momentum 0.9 with warm-up and cosine decay (MoCo v2; Hassanpour et al.); lr chosen on the phantom
RECIPE = Recipe(optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=1e-4, warmup_steps=100, schedule="cosine",
                grad_clip=None)
