"""The MoCo / MoCo-ZCA pretraining network: the planned encoder and everything that must survive `--c`.

MoCo v2 (Chen, Fan, Girshick, He, 2020, arXiv 2003.04297) and moco_zca (Hassanpour, Srivastav, Mutter, Padoy,
ISBI 2024, arXiv 2402.14611), with queue and whitening sized for nnU-Net's small batches. One module holds the
query encoder (the planned U-Net's encoder: only the encoder is pretrained), its EMA key encoder, the
projectors, the key queue with the case id of every key, and, for moco_zca, the running whitening (mean, Σ, W),
all as parameters or persistent buffers. `forward` computes the losses (and, for moco_zca in training, moves the
running whitening statistics); the EMA and the enqueue run in `after_step`, outside any compiled forward.

Global branch (`global_readout` "prenorm": the last conv's output before its InstanceNorm in place of the
bottleneck, `methods/moco/readout.py`): bottleneck → whitening with running statistics (moco: per channel, `whitening_per_channel`, the BatchNorm MoCo
v2's ResNet ends in; moco_zca: ZCA) → global average pool → projector → InfoNCE
vs the queue (never-filled slots and same-case keys masked). Whitening and pooling are both linear, so the pooled
vector is whitened (the statistics come from every position). Until `global_loss_min_keys` real keys exist the global
loss is skipped (no term, top-1 None). Keys come from a key function (EMA encoder, its projector and, moco_zca, the
keys' whitening statistics) that `key_update="period"` freezes while the queue fills and refreshes once it is full
(then the queue restarts): positive and negatives share one encoder, so age is no cue (`after_step`). Local branch
(moco_zca): first-stage features of both views, average-pooled over aligned regions of the views' overlap → region
InfoNCE. moco_regions (`global_term="regions"`): in place of one vector per crop, the views' overlap at the readout
is split into regions (`ops/regions.py`, `region_grid` per axis), each query region's mean (whitened map, if any)
through the projector against its twin region of the key view (positive) and the queue of earlier region keys of
other cases (negatives), DenseCL-style (Wang et al. 2021, arXiv 2011.09157) with the views' known geometry as the
correspondence; `pair_embeddings` (the held-out pretext, common to the family) stays one vector per crop.
`terms` hold the weighted contributions:

    loss = loss_global + loss_local,   loss_local = local_weight · L_local
"""
from __future__ import annotations

import copy
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.losses.local import local_region_infonce
from nnssl_plugin.losses.moco import moco_infonce_and_logits, top1_accuracy
from nnssl_plugin.methods.moco.config import MocoConfig
from nnssl_plugin.methods.moco.queue import KeyQueue, derived_queue_size
from nnssl_plugin.methods.moco.readout import GLOBAL_READOUTS, LastOutput, last_conv
from nnssl_plugin.modules.ema import ema_update, frozen_copy_of
from nnssl_plugin.modules.network_protocol import PlanContext
from nnssl_plugin.modules.projector import ProjectionHead
from nnssl_plugin.modules.whitening import RunningWhitening, apply_whitening, whitening_groups
from nnssl_plugin.ops.distributed import world_size
from nnssl_plugin.ops.pooling import POOLINGS, global_pool
from nnssl_plugin.ops.regions import MAX_SHIFT, aligned_region_descriptors, grid_at_stride, min_patch_for_grid

KEY_UPDATES = ("period", "step")  # MocoConfig.key_update
GLOBAL_TERMS = ("crop", "regions")  # MocoConfig.global_term


def first_stage(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of the encoder's first stage (after the stem of residual encoders), full resolution."""
    if getattr(encoder, "stem", None) is not None:
        x = encoder.stem(x)
    return encoder.stages[0](x)


class MocoNetwork(nn.Module):
    """A `PretrainingNetwork` (modules/network_protocol.py) for moco and moco_zca."""
    pretrained_prefixes: ClassVar[tuple[str, ...]] = ("encoder",)  # what pretrained_state() carries
    min_cases: ClassVar[int] = 2  # negatives come from other cases (same-case keys are masked)
    sample_unit: ClassVar[str] = "crops"  # one validation embedding per crop

    def __init__(self, encoder: nn.Module, bottleneck_channels: int, config: MocoConfig, queue_size: int,
                 whitening: RunningWhitening | None = None, region_grid: Sequence[int] | None = None,
                 patch_size: Sequence[int] | None = None):
        super().__init__()
        self.config = config
        if config.global_term not in GLOBAL_TERMS:
            raise ValueError(f"global_term must be one of {', '.join(GLOBAL_TERMS)}, found '{config.global_term}'")
        if config.global_term == "regions" and (region_grid is None or patch_size is None):
            raise ValueError("global_term 'regions' needs the regions per axis at the readout (region_grid) and the "
                             "patch; build the network with build_moco_network")
        self.region_grid = None if config.global_term == "crop" else tuple(int(g) for g in region_grid)
        self._patch = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.encoder = encoder
        self.key_encoder = frozen_copy_of(encoder, copy.deepcopy(encoder))
        self.projector = ProjectionHead(bottleneck_channels, config.hidden_dim, config.out_dim)
        self.key_projector = frozen_copy_of(self.projector, copy.deepcopy(self.projector))
        self.queue = KeyQueue(config.out_dim, queue_size)
        self.whitening = whitening
        if config.key_update not in KEY_UPDATES:
            raise ValueError(f"key_update must be one of {', '.join(KEY_UPDATES)}, found '{config.key_update}'")
        if config.global_readout not in GLOBAL_READOUTS:
            raise ValueError(f"global_readout must be one of {', '.join(GLOBAL_READOUTS)}, found "
                             f"'{config.global_readout}'")
        self._prenorm = None  # global_readout "prenorm": hooks keeping each encoder's last conv output
        if config.global_readout == "prenorm":
            self._prenorm = {"query": LastOutput(), "key": LastOutput()}
            last_conv(self.encoder.stages[-1]).register_forward_hook(self._prenorm["query"])
            last_conv(self.key_encoder.stages[-1]).register_forward_hook(self._prenorm["key"])
        # "period": the key function (EMA encoder, projector, whitening statistics) is frozen while the queue fills
        self.register_buffer("steps_since_refresh", torch.zeros((), dtype=torch.long))
        if whitening is not None:  # the keys' whitening statistics, refreshed with the key encoder
            self.register_buffer("key_mean", whitening.mean.detach().clone())
            self.register_buffer("key_w", whitening.w.detach().clone())

    @classmethod
    def from_plan(cls, unet: nn.Module, config: MocoConfig, plan: PlanContext) -> MocoNetwork:
        """The protocol's builder: `build_moco_network` at the planned batch and patch."""
        return build_moco_network(unet, config, plan.batch_size, plan.patch_size)

    def summary(self) -> str:
        """One line for the training log: the derived queue and whitening sizes."""
        text = (f"queue {self.queue.keys.shape[0]} keys (global loss from {self.config.global_loss_min_keys}); key encoder "
                f"updated {'every step' if self.config.key_update == 'step' else 'once per queue turnover'}")
        if self.region_grid is not None:
            text += (f"; global term over {int(np.prod(self.region_grid))} aligned regions per crop (grid "
                     f"{'x'.join(map(str, self.region_grid))} at the readout)")
        if self.whitening is not None:
            w = self.whitening
            text += (f"; whitening {w.groups} group(s) of {w.mean.shape[1]} channels, mode {w.mode}, update "
                     f"weight {w.momentum:g}, batch share {w.batch_share:g}")
        return text

    def compile_encoder(self) -> None:
        """torch.compile the query encoder's forward only (`nn.Module.compile`: in place, so state-dict keys,
        checkpoints and the export stay those of the planned U-Net); the stateful queue/EMA bookkeeping never
        enters a compiled graph."""
        self.encoder.compile()

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def train(self, mode: bool = True):
        super().train(mode)
        self.key_encoder.train(False)  # no dropout/normalisation updates in the EMA copy
        return self

    def _pair(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[dict, list[torch.Tensor], tuple]:
        """`pair_embeddings`, the query encoder's stage outputs (for the local loss) and the (query, key) readout
        maps the projector's inputs are pooled from (whitened, if any; for the region term)."""
        skips = self._encode(view1)  # stage outputs, last = bottleneck (n, c, *s)
        pool = lambda x: global_pool(x, self.config.pooling)  # noqa: E731
        period = self.config.key_update == "period"
        with torch.no_grad():
            key_map = self.key_encoder(view2)[-1]  # (n, c, *s)
        query_map = skips[-1]
        if self._prenorm is not None:  # the last conv's outputs before their InstanceNorm, same shape
            query_map, key_map = self._prenorm["query"].take(), self._prenorm["key"].take()
        raw = pool(query_map)  # (n, c)
        maps, whitened = (query_map, key_map), None
        if self.whitening is not None:
            mean, w = self.whitening.statistics(query_map)  # training: moves the running statistics
            with torch.no_grad():  # keys: no gradient; the key function's frozen statistics ("period")
                key_white = apply_whitening(key_map, *((self.key_mean, self.key_w) if period else
                                                       (mean.detach(), w.detach())))
            maps = (apply_whitening(query_map, mean, w), key_white)
            whitened = pool(maps[0])  # avg: = the whitened pool (both linear)
        q = self.projector(raw if whitened is None else whitened)  # (n, d)
        with torch.no_grad():
            k = self.key_projector(pool(maps[1]))  # (n, d)
        return {"q": q, "k": k, "raw": raw.detach(),
                "whitened": None if whitened is None else whitened.detach()}, skips, maps

    def pair_embeddings(self, view1: torch.Tensor, view2: torch.Tensor) -> dict:
        """Embeddings of view pairs (n, C, *patch): "q" (n, d) unit queries (with gradient in training), "k" (n, d)
        unit keys (no gradient), "raw" (n, c) pooled bottleneck of view1 (fp32, detached), "whitened" (n, c) its
        whitened version (detached) or None without whitening. In training mode the running whitening moves."""
        return self._pair(view1, view2)[0]

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, start1: torch.Tensor | None = None,
                start2: torch.Tensor | None = None, mirror1: torch.Tensor | None = None,
                mirror2: torch.Tensor | None = None, case_ids: torch.Tensor | None = None,
                size1: torch.Tensor | None = None, size2: torch.Tensor | None = None, **unused) -> dict:
        """Losses for a batch of view pairs. Geometry (start, mirror: (n, D); size: (n, D) case voxels each view's
        box spans, None: unscaled views) is needed for the local loss; case_ids (n,) int64 mask same-case queue
        keys (None: no same-case masking)."""
        emb, skips, maps = self._pair(view1, view2)
        q, k, row_case_ids = emb["q"], emb["k"], case_ids  # the case of each query / key row
        if self.region_grid is not None:  # queries and keys: the aligned regions of every pair
            q, k = self._region_embeddings(*maps, start1, start2, mirror1, mirror2, size1, size2)
            regions = q.shape[0] // view1.shape[0]
            row_case_ids = None if case_ids is None else case_ids.repeat_interleave(regions)  # (n * R,)
        terms: dict[str, torch.Tensor] = {}
        top1, logits = None, None
        if self.queue.filled() >= self.config.global_loss_min_keys:
            mask = self.queue.negative_mask(row_case_ids, q.shape[0])  # (n, K)
            terms["loss_global"], logits = moco_infonce_and_logits(q, k, self.queue.keys.clone(),
                                                                   self.config.temperature, mask)  # (n, 1 + K)
            top1 = top1_accuracy(logits.detach())
        if self.config.local_weight > 0:
            terms["loss_local"] = self.config.local_weight * self._local_loss(
                skips[0], first_stage(self.encoder, view2), start1, start2, mirror1, mirror2, size1, size2)
        loss = sum(terms.values()) if terms else None
        if "loss_global" not in terms:  # an exact zero that keeps the projector in the graph (DDP needs every grad)
            anchor = 0.0 * q.sum().abs()  # abs: +0.0 in the log, never -0.0
            loss = anchor if loss is None else loss + anchor
        embeddings = {"raw bottleneck": emb["raw"]}
        if emb["whitened"] is not None:
            embeddings["whitened bottleneck"] = emb["whitened"]
        return {"loss": loss, "terms": terms, "top1": top1, "embeddings": embeddings,
                "logits": None if logits is None else logits.detach(), "keys": k, "case_ids": row_case_ids}

    def _region_embeddings(self, query_map: torch.Tensor, key_map: torch.Tensor, start1, start2, mirror1, mirror2,
                           size1=None, size2=None) -> tuple[torch.Tensor, torch.Tensor]:
        """moco_regions' queries (n * R, d), with gradient, and keys (n * R, d): the region means of the readout
        maps (n, c, *s) over the pair's aligned regions, through the projector and the key projector. The maps are
        coarser than the views, so each view spans its box's case voxels (size; unscaled views: the patch)."""
        if start1 is None:
            raise ValueError("the region global term needs the views' geometry (start1, start2, mirror1, mirror2); "
                             "pass the two-view loader's batch entries")
        n = query_map.shape[0]
        patch = [list(self._patch)] * n
        d1, d2 = aligned_region_descriptors(query_map, key_map, start1.tolist(), start2.tolist(), mirror1.tolist(),
                                            mirror2.tolist(), self.region_grid,
                                            patch if size1 is None else size1.tolist(),
                                            patch if size2 is None else size2.tolist())  # (n, R, c) each
        q = self.projector(d1.flatten(0, 1))  # (n * R, d)
        with torch.no_grad():
            k = self.key_projector(d2.flatten(0, 1))
        return q, k

    def _local_loss(self, f1: torch.Tensor, f2: torch.Tensor, start1, start2, mirror1, mirror2, size1=None,
                    size2=None) -> torch.Tensor:
        """Region InfoNCE over all regions of the batch (negatives: other regions of this and other images); the
        regions are aligned in case coordinates, also between views of different scales (size1, size2)."""
        if start1 is None:
            raise ValueError("the local loss needs the views' geometry (start1, start2, mirror1, mirror2); pass the "
                             "two-view loader's batch entries")
        if (size1 is None) != (size2 is None):
            raise ValueError("the local loss needs both views' box sizes (size1, size2) or neither (unscaled views); "
                             "pass the two-view loader's batch entries")
        d1, d2 = aligned_region_descriptors(f1, f2, start1.tolist(), start2.tolist(), mirror1.tolist(),
                                            mirror2.tolist(), self.config.local_grid,
                                            None if size1 is None else size1.tolist(),
                                            None if size2 is None else size2.tolist())  # (n, R, c) each
        d1 = F.normalize(d1.flatten(0, 1).float(), dim=1)  # (n * R, c)
        d2 = F.normalize(d2.flatten(0, 1).float(), dim=1)
        return local_region_infonce(d1, d2, self.config.local_temperature)

    @torch.no_grad()
    def after_step(self, out: dict) -> None:
        """After the optimiser step: enqueue this batch's keys with their case ids (all-gathered under DDP) and move
        the key function. "step" (MoCo v2): EMA of the key encoder and projector every step. "period": the key
        function stays frozen while the queue fills; once it is full, the EMA catches up on the steps since the last
        refresh in one move (θ_k ← m^P θ_k + (1 − m^P) θ_q, P steps), the keys' whitening statistics take the
        running ones, and the queue restarts empty. Every negative and the positive then come from one function:
        with keys of older encoders in the queue, a fresh positive is told from them by its age alone
        (docs/RESULTS.md)."""
        m = self.config.key_momentum
        self.queue.enqueue(out["keys"], out.get("case_ids"))
        if self.config.key_update == "step":
            ema_update(self.key_encoder, self.encoder, m)
            ema_update(self.key_projector, self.projector, m)
            return
        self.steps_since_refresh.add_(1)
        if self.queue.filled() < self.queue.keys.shape[0]:
            return
        caught_up = m ** int(self.steps_since_refresh)
        ema_update(self.key_encoder, self.encoder, caught_up)
        ema_update(self.key_projector, self.projector, caught_up)
        if self.whitening is not None:
            self.key_mean.copy_(self.whitening.mean)
            self.key_w.copy_(self.whitening.w)
        self.queue.clear()
        self.steps_since_refresh.zero_()

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """What the export carries: the query encoder's weights, keyed as in the planned U-Net (`encoder.*`)."""
        return {f"encoder.{k}": v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}


def build_moco_network(unet: nn.Module, config: MocoConfig, batch_size: int, patch_size: Sequence[int],
                       ranks: int | None = None) -> MocoNetwork:
    """Wrap the planned U-Net's encoder (its decoder is not pretrained by MoCo and is not kept here). Sizes follow
    the effective batch (batch_size x ranks, default the process group's size): the queue (`derived_queue_size`,
    unless config.queue_size) and
    the whitening groups (from the images behind the running estimate, batch / whitening_update_weight, not from positions;
    one channel per group with `whitening_per_channel`); with the region term, keys per step = batch x regions per
    crop, so the queue spans the same steps. The patch must hold the local loss's grid in every views' overlap."""
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, found '{config.pooling}'")
    channels = unet.encoder.output_channels[-1]
    shift = config.view_shift  # the two-view loader's max_shift
    need = min_patch_for_grid(config.local_grid, config.view_scale, shift) if config.local_weight > 0 else 0
    if min(patch_size) < need:  # every sampled overlap must span >= local_grid view voxels in both views
        bound = "at least half a patch" if shift == MAX_SHIFT else f"views shifted by up to {shift:g} of a patch"
        scaled = "" if config.view_scale is None else f", less with view_scale {tuple(config.view_scale)}"
        raise ValueError(f"patch {list(patch_size)} is too small for the local-loss grid of {config.local_grid} "
                         f"regions per axis: the views' overlap ({bound}{scaled}) needs every axis >= {need} voxels; "
                         f"use a smaller local_grid or a configuration with a larger patch")
    effective_batch = batch_size * (world_size() if ranks is None else ranks)
    region_grid = None
    if config.global_term == "regions":  # the views' overlap at the bottleneck, as many regions as it can hold
        stride = np.prod(np.asarray(unet.encoder.strides, dtype=np.int64), axis=0)  # (D,) input -> bottleneck
        region_grid = grid_at_stride(config.global_grid, patch_size, stride.tolist(), config.view_scale, shift)
    keys_per_step = effective_batch * (1 if region_grid is None else int(np.prod(region_grid)))
    queue_size = config.queue_size or derived_queue_size(config.key_momentum, keys_per_step,
                                                         config.queue_horizon_ratio, config.queue_size_floor)
    whitening = None
    if config.bottleneck_whitening:
        groups = channels if config.whitening_per_channel else whitening_groups(
            channels, effective_batch / config.whitening_update_weight, config.whitening_min_images_per_channel)
        whitening = RunningWhitening(channels, groups, config.whitening_eps, config.whitening_update_weight,
                                     config.whitening_mode, config.whitening_batch_share)
    return MocoNetwork(unet.encoder, channels, config, queue_size, whitening, region_grid, patch_size)
