"""The dense probe of a frozen network on one fold (docs/ARCHITECTURE.md, "Evaluation and demo data"): sample, fit,
predict, score.

1. voxels: `voxels_per_class` per class, class-balanced and seeded, from the fold's training cases (`sampling`);
2. features: the levels the Linear trainer reads (`probe_levels.read_levels`), through nnU-Net's sliding window
   with the planned patch, upsampled to voxel resolution and concatenated (`sliding.features_at_voxels`);
3. a multinomial logistic regression fitted to convergence (`logistic`, full batch L-BFGS, weight decay);
4. its weights put into the Linear trainer's own head (`LinearProbeNetwork`: a 1×1(×1) convolution per level,
   upsampled and summed) and every validation case predicted densely with nnU-Net's predictor's windows and
   Gaussian weighting (`sliding.sliding_window_logits`);
5. Dice per organ per case (`dice`), averaged over the validation cases (NaN-aware, like nnU-Net's summary), and
   their mean over the organs.
Scores are on the preprocessed grid (the configuration's spacing), where the probe and nnU-Net's training both work.
The network is left as it was found (training mode and requires_grad flags restored), so a pretraining run can call
this on its own network.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nnssl_plugin.modules.probe import LinearProbeNetwork
from nnssl_plugin.modules.probe_levels import level_channels, read_levels
from nnssl_plugin.probe.dice import dice_per_class
from nnssl_plugin.probe.logistic import LogisticFit, fit_multinomial_logistic
from nnssl_plugin.probe.sampling import class_counts, draw_ranks, probe_labels, voxels_at_ranks
from nnssl_plugin.probe.sliding import features_at_voxels, sliding_window_logits


@dataclass(frozen=True)
class ProbeConfig:
    voxels_per_class: int = 2000  # ~28k samples for 14 classes, a fit in seconds; fewer lose Dice (docs/RESULTS.md)
    weight_decay: float = 1e-2  # on standardised features, bounds the logits; the best of 1e-2..1e-4 (docs/RESULTS.md)
    max_iterations: int = 1000  # L-BFGS iterations; the phantom's fits converge in far fewer
    tolerance: float = 1e-5  # max |gradient| (fp64); the argmax as a 1e-6 fit's at 2/3 of its cost (docs/RESULTS.md)
    tile_step_size: float = 0.5  # nnU-Net's predictor default
    seed: int = 0  # the voxel draw; everything else is deterministic
    precision: str = "amp"  # the autocast of every forward (nnssl_plugin.precision); the pretraining run's in --probe-every


@dataclass(frozen=True)
class Case:
    """One preprocessed case: `load()` gives (data (c, *spatial), seg (1, *spatial)); `load_seg()` the seg only."""
    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    load_seg: Callable[[], np.ndarray]


@dataclass
class ProbeResult:
    dice: list[float]  # per foreground class 1 … k − 1: mean over validation cases (NaN: nowhere to score)
    mean_dice: float  # mean over the classes with a score
    per_case: dict[str, list[float]]  # validation case → Dice per foreground class
    sampled_per_class: list[int]  # voxels drawn per class (background first)
    fit: LogisticFit
    seconds: dict[str, float] = field(default_factory=dict)


def _restore_state(unet: nn.Module):
    flags = [p.requires_grad for p in unet.parameters()]
    training = unet.training

    def restore():
        for p, flag in zip(unet.parameters(), flags):
            p.requires_grad_(flag)
        unet.train(training)

    return restore


def fitted_head(unet: nn.Module, levels: str, fit: LogisticFit) -> LinearProbeNetwork:
    """The Linear trainer's head over `unet`'s `levels` carrying the fitted map (bias on the first level; absent
    classes get 0 here and are masked at the argmax). Its logits at v are W f(v) + b."""
    num_classes = fit.weight.shape[0]
    head = LinearProbeNetwork(unet, num_classes, levels)
    with torch.no_grad():
        start = 0
        for l, (probe, c) in enumerate(zip(head.probes, level_channels(unet, levels))):
            w = fit.weight[:, start:start + c]
            probe.weight.copy_(w.reshape(*probe.weight.shape).to(probe.weight.dtype))
            probe.bias.copy_(fit.bias.to(probe.bias.dtype) if l == 0 else torch.zeros_like(probe.bias))
            start += c
    return head


def sample_training_voxels(unet: nn.Module, levels: str, cases: Sequence[Case], patch_size: Sequence[int],
                           num_classes: int, ignore_label: int | None, config: ProbeConfig, device: torch.device
                           ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Features (v, Σ c_l) and classes (v,) of the class-balanced draw; the drawn count per class."""
    counts = np.stack([class_counts(probe_labels(case.load_seg(), ignore_label), num_classes) for case in cases])
    ranks = draw_ranks(counts, config.voxels_per_class, config.seed)
    features, classes = [], []
    for case, case_ranks in zip(cases, ranks):
        if not case_ranks:
            continue
        data, seg = case.load()
        voxels, y = voxels_at_ranks(probe_labels(seg, ignore_label), case_ranks)
        features.append(features_at_voxels(lambda x: read_levels(unet, x, levels), data, voxels, patch_size,
                                           device, config.tile_step_size, precision=config.precision))
        classes.append(torch.from_numpy(y))
    if not features:
        raise ValueError("the training cases hold no labelled voxels")
    drawn = [int(sum(len(r.get(k, ())) for r in ranks)) for k in range(num_classes)]
    return torch.cat(features), torch.cat(classes), drawn


@torch.no_grad()
def predict_case(head: LinearProbeNetwork, data: np.ndarray, present: torch.Tensor, patch_size: Sequence[int],
                 device: torch.device, tile_step_size: float = 0.5, precision: str = "amp") -> np.ndarray:
    """Dense sliding-window prediction of one case (c, *spatial) → label map (*spatial), the argmax over the
    present classes."""
    logits = sliding_window_logits(head, data, len(present), patch_size, device, tile_step_size,
                                   precision=precision)
    classes = torch.nonzero(present).flatten()
    return classes[logits[classes].argmax(0)].numpy()


def run_dense_probe(unet: nn.Module, levels: str, train_cases: Sequence[Case], val_cases: Sequence[Case],
                    patch_size: Sequence[int], num_classes: int, device: torch.device,
                    ignore_label: int | None = None, config: ProbeConfig = ProbeConfig()) -> ProbeResult:
    """Steps 1–5 of the module docstring for a frozen `unet` (any module with the planned U-Net's `encoder`, and
    `decoder` for the decoder levels), on `device`."""
    restore = _restore_state(unet)
    seconds = {}
    try:
        unet.eval()
        unet.to(device)
        start = time.perf_counter()
        x, y, drawn = sample_training_voxels(unet, levels, train_cases, patch_size, num_classes, ignore_label,
                                             config, device)
        seconds["features"] = time.perf_counter() - start
        start = time.perf_counter()
        fit = fit_multinomial_logistic(x, y, num_classes, config.weight_decay, config.max_iterations,
                                       config.tolerance)
        seconds["fit"] = time.perf_counter() - start
        start = time.perf_counter()
        result = score_validation_cases(unet, levels, fit, val_cases, patch_size, num_classes, device, ignore_label,
                                        config, drawn, seconds)
        seconds["prediction"] = time.perf_counter() - start
    finally:
        restore()
    return result


def score_validation_cases(unet: nn.Module, levels: str, fit: LogisticFit, val_cases: Sequence[Case],
                           patch_size: Sequence[int], num_classes: int, device: torch.device,
                           ignore_label: int | None, config: ProbeConfig, drawn: list[int],
                           seconds: dict[str, float]) -> ProbeResult:
    """Steps 4–5 of the module docstring: every validation case predicted densely by the fitted head, Dice per organ
    per case, their NaN-aware mean over the cases and the mean over the organs."""
    head = fitted_head(unet, levels, fit).to(device)
    per_case = {}
    for case in val_cases:
        data, seg = case.load()
        prediction = predict_case(head, data, fit.present, patch_size, device, config.tile_step_size,
                                  config.precision)
        per_case[case.name] = dice_per_class(prediction, probe_labels(seg, ignore_label), num_classes).tolist()
    scores = np.array(list(per_case.values()), dtype=np.float64).reshape(len(per_case), num_classes - 1)
    dice = np.array([_nanmean(scores[:, k]) for k in range(num_classes - 1)])
    return ProbeResult(dice.tolist(), _nanmean(dice), per_case, drawn, fit, seconds)


def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite values; NaN if there are none (nothing to score)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
