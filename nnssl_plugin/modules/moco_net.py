"""The MoCo / MoCo-ZCA pretraining network: the planned encoder and everything that must survive `--c`.

One module holds the query encoder (the planned U-Net's encoder: only the encoder is pretrained), its EMA key
encoder, the projectors, the key queue (persistent buffers) and, for moco_zca, the running whitening (mean, W).
`forward` computes the losses; the stateful steps (EMA, enqueue) run in `after_step`, outside any compiled forward.

Global branch (both methods): bottleneck → [ZCA (moco_zca)] → global average pool → projector → InfoNCE vs queue.
Local branch (moco_zca): first-stage features of both views (with gradient), average-pooled over aligned regions of
the views' overlap → region InfoNCE; total = global + local_weight · local (DESIGN §4).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.config import MocoConfig
from nnssl_plugin.losses.local import local_region_infonce
from nnssl_plugin.losses.moco import moco_logits, top1_accuracy
from nnssl_plugin.modules.ema import ema_update, frozen_copy_of
from nnssl_plugin.modules.projector import ProjectionHead
from nnssl_plugin.modules.queue import KeyQueue
from nnssl_plugin.modules.whitening import RunningWhitening
from nnssl_plugin.ops.regions import aligned_region_descriptors


def whitening_groups(channels: int, samples: int, min_samples_per_channel: float) -> int:
    """Smallest number of equal channel groups with at least `min_samples_per_channel` samples per channel."""
    for groups in range(1, channels + 1):
        if channels % groups == 0 and samples >= min_samples_per_channel * (channels // groups):
            return groups
    raise ValueError(f"whitening {channels} bottleneck channels needs at least {min_samples_per_channel:g} samples "
                     f"(batch x bottleneck positions) per group channel, but a batch gives only {samples}; use a "
                     f"larger batch or patch")


def first_stage(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of the encoder's first stage (after the stem of residual encoders), full resolution."""
    if getattr(encoder, "stem", None) is not None:
        x = encoder.stem(x)
    return encoder.stages[0](x)


class MocoNetwork(nn.Module):
    pretrained_prefixes = ("encoder",)  # what pretrained_state() carries

    def __init__(self, encoder: nn.Module, bottleneck_channels: int, config: MocoConfig,
                 whitening_group_count: int = 1):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.key_encoder = frozen_copy_of(encoder, copy.deepcopy(encoder))
        self.projector = ProjectionHead(bottleneck_channels, config.hidden_dim, config.out_dim)
        self.key_projector = frozen_copy_of(self.projector, copy.deepcopy(self.projector))
        self.queue = KeyQueue(config.out_dim, config.queue_size)
        self.whitening = (RunningWhitening(bottleneck_channels, whitening_group_count, config.zca_eps,
                                           config.zca_momentum) if config.zca else None)

    def compile_encoder(self) -> None:
        """torch.compile the query encoder's forward only: the compiled wrapper is kept outside the module tree,
        so state-dict keys (checkpoints, export) stay those of the planned U-Net, and the stateful queue/EMA
        bookkeeping never enters a compiled graph."""
        object.__setattr__(self, "_compiled_encoder", torch.compile(self.encoder))

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        compiled = self.__dict__.get("_compiled_encoder")
        return compiled(x) if compiled is not None else self.encoder(x)

    def train(self, mode: bool = True):
        super().train(mode)
        self.key_encoder.train(False)  # no dropout/normalisation updates in the EMA copy
        return self

    def embed(self, bottleneck: torch.Tensor, whiten: bool) -> torch.Tensor:
        """Pooled bottleneck vector (n, c), whitened first if asked and available."""
        if whiten and self.whitening is not None:
            bottleneck = self.whitening(bottleneck)
        return bottleneck.float().flatten(2).mean(dim=2)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, start1: torch.Tensor | None = None,
                start2: torch.Tensor | None = None, mirror1: torch.Tensor | None = None,
                mirror2: torch.Tensor | None = None, **unused) -> dict:
        """Losses for a batch of view pairs. Geometry (start, mirror: (n, D)) is needed for the local loss."""
        skips = self._encode(view1)  # list of stage outputs, last = bottleneck (n, c, *s)
        pooled_raw = skips[-1].float().flatten(2).mean(dim=2).detach()  # (n, c) for the rank monitor
        pooled = self.embed(skips[-1], whiten=True)  # (n, c)
        q = self.projector(pooled)  # (n, d)
        with torch.no_grad():
            key_bottleneck = self.key_encoder(view2)[-1]
            if self.whitening is not None:  # keys: whitened with their own batch's statistics, buffers untouched
                key_bottleneck = self.whitening(key_bottleneck, update=False)
            k = self.key_projector(key_bottleneck.float().flatten(2).mean(dim=2))  # (n, d)
        logits = moco_logits(q, k, self.queue.keys.clone(), self.config.temperature)  # (n, 1 + K)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss_global = F.cross_entropy(logits, target)
        embeddings = {"raw bottleneck": pooled_raw}
        if self.whitening is not None:
            embeddings["whitened bottleneck"] = pooled.detach()
        out = {"terms": {"loss_global": loss_global}, "logits": logits.detach(), "keys": k,
               "top1": top1_accuracy(logits.detach()), "embeddings": embeddings}
        loss = loss_global
        if self.config.local_weight > 0:
            loss_local = self._local_loss(skips[0], first_stage(self.encoder, view2), start1, start2, mirror1,
                                          mirror2)
            out["terms"]["loss_local"] = loss_local
            loss = loss + self.config.local_weight * loss_local
        out["loss"] = loss
        return out

    def _local_loss(self, f1: torch.Tensor, f2: torch.Tensor, start1, start2, mirror1, mirror2) -> torch.Tensor:
        """Region InfoNCE over all regions of the batch (negatives: other regions of this and other images)."""
        if start1 is None:
            raise ValueError("the local loss needs the views' geometry (start1, start2, mirror1, mirror2)")
        d1, d2 = aligned_region_descriptors(f1, f2, start1.tolist(), start2.tolist(), mirror1.tolist(),
                                            mirror2.tolist(), self.config.local_grid)  # (n, R, c) each
        d1 = F.normalize(d1.flatten(0, 1).float(), dim=1)  # (n * R, c)
        d2 = F.normalize(d2.flatten(0, 1).float(), dim=1)
        return local_region_infonce(d1, d2, self.config.local_temperature)

    @torch.no_grad()
    def after_step(self, out: dict) -> None:
        """After the optimiser step: EMA of the key encoder and projector, then enqueue this batch's keys."""
        keys = out["keys"]
        ema_update(self.key_encoder, self.encoder, self.config.momentum)
        ema_update(self.key_projector, self.projector, self.config.momentum)
        self.queue.enqueue(keys)

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """What the export carries: the query encoder's weights, keyed as in the planned U-Net (`encoder.*`)."""
        return {f"encoder.{k}": v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}


def build_moco_network(unet: nn.Module, config: MocoConfig, batch_size: int, patch_size: Sequence[int],
                       strides: Sequence[int]) -> MocoNetwork:
    """Wrap the planned U-Net's encoder (its decoder is not pretrained by MoCo and is not kept here)."""
    channels = unet.encoder.output_channels[-1]
    if config.local_weight > 0 and min(patch_size) < 2 * config.local_grid - 1:
        raise ValueError(f"patch {list(patch_size)} is too small for the local-loss grid of {config.local_grid} "
                         f"regions per axis: the views' overlap (at least half a patch) needs every axis >= "
                         f"{2 * config.local_grid - 1} voxels")
    positions = 1
    for p, s in zip(patch_size, strides):
        positions *= max(1, p // s)
    groups = whitening_groups(channels, batch_size * positions, config.zca_min_samples_per_channel) \
        if config.zca else 1
    return MocoNetwork(unet.encoder, channels, config, groups)
