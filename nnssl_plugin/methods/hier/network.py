"""The dense hierarchical pretraining network (`hier`: Kats, Hirsch, Heinrich, ISBI 2024, arXiv 2401.06473) and its
`voxel2vec` baseline (after vox2vec: Goncharov et al., MICCAI 2023, arXiv 2307.14725).

The whole planned U-Net (encoder + decoder; its segmentation layers are frozen and unused) plus the method heads,
one module so that everything `--c` needs lands in nnU-Net's checkpoint. Both views run through the U-Net in one
batch (2n crops). At the sampled corresponding voxels, each pyramid level (bottleneck, decoder stages coarse to
fine) is read at the cell holding the voxel; `hier` projects each level with its own 1×1×1 projection to
`level_dim` channels (hierarchical balance; 0: the widest level's channels, so no level loses rank; trained, or
frozen random as in Kats et al.'s code with `train_level_projections=False`), `voxel2vec` keeps the raw features
(coarse, wide levels dominate); the concatenation of both views' voxels goes through the projection head in one batch (its BatchNorm sees one set
of statistics for both views) to an L2-normalised voxel embedding:

    loss_voxel   = NT-Xent over all sampled voxels of the batch (positives: same voxel, other view), τ = 0.1
    loss_restore = restoration_weight · MSE(restoration(finest decoder output), u(un-corrupted crop))  (hier only)
    loss         = loss_voxel + loss_restore                                     (weight 10, Kats et al.)

u maps each channel's fixed range (lo, hi) in network units to [0, 1] (`nnssl_plugin.losses.restoration`): the
plans' CT clip range, or with `restoration_window="kats"` Kats et al.'s own [−175, 250] HU. `terms` holds the
weighted contributions, so the logged terms add up to the loss.

The per-level projections are 1×1×1 convolutions applied only at the sampled voxels (a 1×1×1 convolution is the
same linear map at every voxel, so reading it at v voxels equals convolving the whole map and reading there).

Shapes: view1, view2, clean1, clean2 (n, c_in, *patch); voxels1, voxels2 (v, D) view-voxel coordinates of the
same case voxels; voxel_batch (v,) the crop each voxel belongs to.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from nnssl_plugin.losses.restoration import restoration_mse
from nnssl_plugin.losses.voxel import voxel_nt_xent_with_top1
from nnssl_plugin.methods.hier.config import HierConfig
from nnssl_plugin.modules.network_protocol import PlanContext
from nnssl_plugin.modules.projector import ProjectionHead
from nnssl_plugin.modules.pyramid import level_channels, level_strides, pad_to_multiple, unet_pyramid
from nnssl_plugin.ops.correspondence import gather_at_voxels

MONITOR_VOXELS = 256  # voxels per batch kept for the effective-rank monitor (validation)


class HierNetwork(nn.Module):
    """A `PretrainingNetwork` (modules/network_protocol.py) for hier and voxel2vec."""
    pretrained_prefixes: ClassVar[tuple[str, ...]] = ("encoder", "decoder")  # what pretrained_state() carries
    min_cases: ClassVar[int] = 1  # negatives are other voxels of the same batch, positives the same voxel
    sample_unit: ClassVar[str] = "voxels"  # validation embeddings are sampled voxels

    def __init__(self, unet: nn.Module, config: HierConfig, num_input_channels: int,
                 strides: Sequence[Sequence[int]], unit_ranges: Sequence[tuple[float, float]] | None = None):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = unet.encoder, unet.decoder
        for p in self.decoder.seg_layers.parameters():  # sized for a label set pretraining does not have
            p.requires_grad_(False)
        channels = level_channels(self.encoder)
        if len(strides) != len(channels):
            raise ValueError(f"{len(strides)} level strides for {len(channels)} pyramid levels")
        self.strides = [tuple(int(v) for v in s) for s in strides]
        self.level_dim = config.level_dim or max(channels)  # 0: the widest level, no level cut below its rank
        self.projections = (nn.ModuleList(nn.Linear(c, self.level_dim) for c in channels)
                            if config.project_levels else None)
        if self.projections is not None and not config.train_level_projections:
            self.projections.requires_grad_(False)  # frozen random, as Kats et al.'s code leaves them
        width = self.level_dim * len(channels) if config.project_levels else sum(channels)
        self.head = ProjectionHead(width, config.hidden_dim or width, config.out_dim, config.head_layers,
                                   config.head_batch_norm)
        self.restoration = None
        if config.restoration_weight > 0:
            lo, hi = _checked_unit_ranges(unit_ranges, num_input_channels)
            self.restoration = self.encoder.conv_op(channels[-1], num_input_channels, kernel_size=1)
            # derived from the plans at every build: follow the module's device, stay out of the checkpoint
            self.register_buffer("unit_lo", lo, persistent=False)  # (c_in,)
            self.register_buffer("unit_hi", hi, persistent=False)  # (c_in,)

    @classmethod
    def from_plan(cls, unet: nn.Module, config: HierConfig, plan: PlanContext) -> HierNetwork:
        """The protocol's builder: `build_hier_network` with the plans' strides and the restoration's intensity
        ranges (config.restoration_window: "plans" the plans' clip range, "kats" [−175, 250] HU)."""
        ranges = plan.restoration_ranges if config.restoration_window == "kats" else plan.unit_ranges
        return build_hier_network(unet, config, plan.num_input_channels, plan.stage_strides, plan.patch_size, ranges)

    def summary(self) -> str:
        """One line for the training log: the pyramid the voxel embedding reads and the loss terms."""
        levels = len(self.strides)
        frozen = "" if self.config.train_level_projections else " (frozen random)"
        reads = (f"{levels} levels projected to {self.level_dim} channels each{frozen}" if self.projections is not None
                 else f"{levels} raw levels concatenated ({self.head.net[0].in_features} channels)")
        restore = (f"restoration weight {self.config.restoration_weight:g}" if self.restoration is not None
                   else "no restoration")
        return f"{reads}, {self.config.num_voxels} voxels per batch, τ {self.config.temperature:g}, {restore}"

    def compile_encoder(self) -> None:
        """torch.compile the U-Net's pyramid pass only: a compiled function, not a module, so the state-dict keys
        stay those of the planned U-Net."""
        self._pyramid_fn = torch.compile(unet_pyramid)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        return getattr(self, "_pyramid_fn", unet_pyramid)(self.encoder, self.decoder, x)

    def level_features(self, levels: list[torch.Tensor], voxel_batch: torch.Tensor, voxels: torch.Tensor
                       ) -> list[torch.Tensor]:
        """Per level (v, level_dim) projected (hier) or (v, c_l) raw (voxel2vec) features at the voxels."""
        out = []
        for i, (feature, stride) in enumerate(zip(levels, self.strides)):
            f = gather_at_voxels(feature, voxel_batch, voxels, stride).float()  # (v, c_l)
            out.append(self.projections[i](f) if self.projections is not None else f)
        return out

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, voxels1: torch.Tensor, voxels2: torch.Tensor,
                voxel_batch: torch.Tensor, clean1: torch.Tensor | None = None, clean2: torch.Tensor | None = None,
                **geometry) -> dict:
        n, patch = view1.shape[0], view1.shape[2:]
        levels = self.pyramid(pad_to_multiple(torch.cat([view1, view2]), self.strides[0]))  # (2n, c_l, *s_l)
        h1 = self.level_features(levels, voxel_batch, voxels1)  # view 1: crops 0..n-1 of the joint batch
        h2 = self.level_features(levels, voxel_batch + n, voxels2)  # view 2: crops n..2n-1 (no slicing copies)
        z1, z2 = torch.cat(h1, dim=1), torch.cat(h2, dim=1)  # (v, width)
        e1, e2 = self.head(torch.cat([z1, z2])).chunk(2)  # (v, out_dim) each, unit length; one BN batch
        loss_voxel, top1 = voxel_nt_xent_with_top1(e1, e2, self.config.temperature, gather=True)  # DDP: all ranks
        terms = {"loss_voxel": loss_voxel}  # weighted contributions: they add up to the loss
        if self.restoration is not None:
            if clean1 is None or clean2 is None:
                raise ValueError("the restorative branch needs the un-corrupted crops (clean1, clean2); found None; "
                                 "give the loader local_transforms so that it returns them")
            restored = self.restoration(levels[-1])  # (2n, c_in, *padded patch), predicts u(clean)
            restored = restored[(..., *[slice(0, p) for p in patch])]  # (2n, c_in, *patch)
            mse = restoration_mse(restored, torch.cat([clean1, clean2]), self.unit_lo, self.unit_hi)
            terms["loss_restore"] = self.config.restoration_weight * mse
        loss = sum(terms.values())
        keep = slice(None, None, max(1, z1.shape[0] // (MONITOR_VOXELS * n)))  # spread over the batch's crops
        embeddings = {f"level {i} ({'bottleneck' if i == 0 else f'decoder {i}'})": h[keep].detach()
                      for i, h in enumerate(h1)}
        embeddings["concatenated"] = z1[keep].detach()
        return {"loss": loss, "terms": terms, "top1": top1,
                "embeddings": embeddings}

    def after_step(self, out: dict) -> None:
        """No momentum encoder or queue in this family."""

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """What the export carries: encoder and decoder (without seg layers), keyed as in the planned U-Net."""
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()
                      if not k.startswith(("encoder.", "seg_layers."))})
        return {k: v.detach().cpu().clone() for k, v in state.items()}


def _checked_unit_ranges(unit_ranges: Sequence[tuple[float, float]] | None, channels: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) as (c,) float32 tensors, after checking one increasing pair per input channel."""
    if unit_ranges is None or len(unit_ranges) != channels or any(float(h) <= float(l) for l, h in unit_ranges):
        raise ValueError(f"hier's restoration needs one (lo, hi) range with lo < hi per input channel ({channels}), "
                         f"found {unit_ranges}; pass unit_ranges=nnssl_plugin.intensity.unit_ranges(plans, "
                         f"configuration)")
    lo, hi = (torch.tensor([float(r[i]) for r in unit_ranges], dtype=torch.float32) for i in (0, 1))
    return lo, hi


def build_hier_network(unet: nn.Module, config: HierConfig, num_input_channels: int,
                       stage_strides: Sequence, patch_size: Sequence[int],
                       unit_ranges: Sequence[tuple[float, float]] | None = None) -> HierNetwork:
    """`unit_ranges`: per input channel (lo, hi) in network units that the restoration maps to [0, 1]
    (`nnssl_plugin.intensity.unit_ranges`); required when `config.restoration_weight > 0`."""
    return HierNetwork(unet, config, num_input_channels, level_strides(stage_strides, len(patch_size)), unit_ranges)
