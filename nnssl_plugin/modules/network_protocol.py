"""What a pretraining network provides to the trainer, the export and the evaluation: one explicit contract, so that
`pretrain/trainer.py` holds no branch per method family (docs/ARCHITECTURE.md, "The methods").

A pretraining network wraps the planned U-Net (or its encoder) with a method's heads and losses. The trainer builds it
with `from_plan(unet, config, plan)` from what nnU-Net planned (`PlanContext`), calls it on a two-view batch
(`forward(**batch) -> StepOutput`), runs `after_step(out)` after the optimiser step (stateful bookkeeping such as a
momentum encoder and a key queue, outside any compiled graph), may `compile_encoder()` (torch.compile of the U-Net
pass only, state-dict keys unchanged) and at the end writes `pretrained_state()` (keyed as in the planned U-Net, only
under `pretrained_prefixes`); a bottleneck whitening the export carries is named by the family (`Family.whitening`).

`MocoNetwork` (methods/moco/network.py) and `HierNetwork` (methods/hier/network.py) are the two implementations; each
family's `Family` object names its own. tests/test_families.py checks that both satisfy this contract.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypedDict, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class PlanContext:
    """What nnU-Net planned that a pretraining network is sized from (one argument for every family's builder).

    num_input_channels: image channels; batch_size: per process (the effective batch multiplies it by the DDP world
    size); patch_size: the configuration's patch (D entries); stage_strides: the plans' per-stage strides
    (`arch_kwargs["strides"]`, an int or D ints each); unit_ranges: per input channel (lo, hi) in network units that
    a restoration maps to [0, 1] (`nnssl_plugin.intensity.unit_ranges`), None when unknown; restoration_ranges: the
    same for Kats et al.'s [−175, 250] HU (`nnssl_plugin.intensity.restoration_ranges`), None when unknown."""
    num_input_channels: int
    batch_size: int
    patch_size: tuple[int, ...]
    stage_strides: tuple
    unit_ranges: tuple[tuple[float, float], ...] | None = None
    restoration_ranges: tuple[tuple[float, float], ...] | None = None


class StepOutput(TypedDict, total=False):
    """A training forward's result. Always: "loss" (scalar tensor with gradient), "terms" (name -> weighted scalar
    contribution; they add up to the loss and are logged), "top1" (pretext top-1 as a float tensor, or None when the
    pretext had no scored query this step), "embeddings" (name -> (samples, c) detached representations for the
    effective-rank monitor). A network may add what its own `after_step` needs (MoCo: "keys", "case_ids")."""
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    top1: torch.Tensor | None
    embeddings: dict[str, torch.Tensor]


@runtime_checkable
class PretrainingNetwork(Protocol):
    """The contract (see the module docstring). Class attributes: `pretrained_prefixes` (the state-dict prefixes
    `pretrained_state` carries: ("encoder",) or ("encoder", "decoder"); the downstream probe's level set follows from
    them), `min_cases` (fewest unlabelled cases the pretext can train on), `sample_unit` (what one row of the
    validation embeddings is: "crops" or "voxels")."""
    pretrained_prefixes: ClassVar[tuple[str, ...]]
    min_cases: ClassVar[int]
    sample_unit: ClassVar[str]
    config: Any
    encoder: nn.Module

    @classmethod
    def from_plan(cls, unet: nn.Module, config: Any, plan: PlanContext) -> "PretrainingNetwork": ...

    def forward(self, **batch: torch.Tensor) -> StepOutput: ...

    def after_step(self, out: StepOutput) -> None: ...

    def compile_encoder(self) -> None: ...

    def pretrained_state(self) -> dict[str, torch.Tensor]: ...

    def summary(self) -> str: ...

