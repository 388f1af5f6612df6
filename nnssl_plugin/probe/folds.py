"""The dense probe on several folds at once (`nnssl_probe -f all`): the same five steps as `dense.run_dense_probe`
for each fold, with each case's frozen features computed once for all folds instead of once per fold.

A voxel's feature f(v) = Σ_w g_w(v) F_w(v) / Σ_w g_w(v) depends only on the voxel and the windows that hold it
(`sliding.features_at_voxels`), never on which other voxels are read with it. So for every case the voxels that any
fold's draw takes from it (`sampling.draw_ranks` over that fold's training cases, the same draw as one-fold probes
make) are read in one pass, and each fold's regression gets exactly its own rows, in the order a one-fold probe
builds them. Each case is then predicted once, by the regression of the fold that holds it out. With nnU-Net's five
folds this reads each case twice (features, prediction) instead of five times (four as a training case, once as a
validation case) — 2.5× less work for the same per-fold results (tests/probe/test_folds.py compares them with
`run_dense_probe` fold by fold).

Shapes: features (v, Σ c_l) fp32; classes (v,) int64.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nnssl_plugin.modules.probe_levels import read_levels
from nnssl_plugin.probe.dense import Case, ProbeConfig, ProbeResult, _restore_state, score_validation_cases
from nnssl_plugin.probe.logistic import fit_multinomial_logistic
from nnssl_plugin.probe.sampling import class_counts, draw_ranks, probe_labels, voxels_at_ranks
from nnssl_plugin.probe.sliding import features_at_voxels


def run_dense_probe_folds(unet: nn.Module, levels: str, folds: Sequence[tuple[Sequence[Case], Sequence[Case]]],
                          patch_size: Sequence[int], num_classes: int, device: torch.device,
                          ignore_label: int | None = None, config: ProbeConfig = ProbeConfig()) -> list[ProbeResult]:
    """One `ProbeResult` per fold (train cases, validation cases), each what `run_dense_probe` gives for that fold.
    Cases are matched between folds by name."""
    restore = _restore_state(unet)
    cases: dict[str, Case] = {c.name: c for train, val in folds for c in (*train, *val)}
    try:
        unet.eval()
        unet.to(device)
        start = time.perf_counter()
        labels_of = {name: probe_labels(case.load_seg(), ignore_label) for name, case in cases.items()}
        draws = []  # per fold: {case name: {class: ranks}}
        for train, _ in folds:
            counts = np.stack([class_counts(labels_of[c.name], num_classes) for c in train])
            draws.append({c.name: r for c, r in zip(train, draw_ranks(counts, config.voxels_per_class, config.seed))})
        rows: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in folds]  # fold -> case -> (x, y)
        for name, case in cases.items():
            wanted = [(f, draw[name]) for f, draw in enumerate(draws) if draw.get(name)]
            if not wanted:
                continue
            data, _ = case.load()
            per_fold = [(f, *voxels_at_ranks(labels_of[name], ranks)) for f, ranks in wanted]
            union, inverse = np.unique(np.concatenate([v for _, v, _ in per_fold]), axis=0, return_inverse=True)
            features = features_at_voxels(lambda x: read_levels(unet, x, levels), data, union, patch_size, device,
                                          config.tile_step_size, precision=config.precision)  # (u, Σ c_l)
            offset = 0
            for f, voxels, y in per_fold:
                index = torch.from_numpy(inverse.reshape(-1)[offset:offset + len(voxels)])
                rows[f][name] = (features[index], torch.from_numpy(y))
                offset += len(voxels)
        feature_seconds = time.perf_counter() - start
        results = []
        for f, (train, val) in enumerate(folds):
            ordered = [rows[f][c.name] for c in train if c.name in rows[f]]  # run_dense_probe's order
            if not ordered:
                raise ValueError(f"the training cases of fold {f} hold no labelled voxels")
            x, y = torch.cat([r[0] for r in ordered]), torch.cat([r[1] for r in ordered])
            drawn = [int(sum(len(r.get(k, ())) for r in draws[f].values())) for k in range(num_classes)]
            start = time.perf_counter()
            fit = fit_multinomial_logistic(x, y, num_classes, config.weight_decay, config.max_iterations,
                                           config.tolerance)
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            seconds = {"features (all folds)": feature_seconds, "fit": fit_seconds}
            result = score_validation_cases(unet, levels, fit, val, patch_size, num_classes, device, ignore_label,
                                            config, drawn, seconds)
            seconds["prediction"] = time.perf_counter() - start
            results.append(result)
    finally:
        restore()
    return results
