"""Class-balanced, seeded voxel sampling from the labelled training cases of a fold.

Every class k (background included) gets min(n, N_k) voxels drawn uniformly without replacement from the N_k voxels
of class k in all training cases together, so a small organ weighs as much as the background in the regression
and cases contribute in proportion to how much of the class they hold. The draw depends only on the seed and the
per-case class counts (ranks are drawn among the N_k voxels and resolved case by case in C order), so counts can be
taken in one pass and voxels located in a second pass that loads one case at a time.

Labels follow nnU-Net's training: a segmentation's −1 (outside the nonzero mask after cropping) is background;
the ignore label, if the dataset has one, is neither sampled nor scored (−1 in `probe_labels`).
Shapes: seg (1, *spatial) or (*spatial) → labels (*spatial); counts (cases, k); voxels (v, dims).
"""
from __future__ import annotations

import numpy as np


def probe_labels(seg: np.ndarray, ignore_label: int | None = None) -> np.ndarray:
    """nnU-Net's stored segmentation → int16 class map: −1 (outside the nonzero mask) → 0, ignore label → −1."""
    labels = np.asarray(seg)
    labels = labels[0] if labels.ndim == 4 else labels
    out = np.where(labels < 0, 0, labels).astype(np.int16)
    if ignore_label is not None:
        out[labels == ignore_label] = -1
    return out


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Voxels of each class (k,) in a class map (−1 = not counted)."""
    return np.bincount(labels[labels >= 0].ravel(), minlength=num_classes)[:num_classes]


def draw_ranks(counts: np.ndarray, per_class: int, seed: int) -> list[dict[int, np.ndarray]]:
    """For counts (cases, k): per case, per class, the sorted ranks (in C order among that case's voxels of the
    class) of the voxels drawn. Deterministic in (counts, per_class, seed)."""
    rng = np.random.default_rng(seed)
    cases, num_classes = counts.shape
    ranks: list[dict[int, np.ndarray]] = [{} for _ in range(cases)]
    for k in range(num_classes):
        total = int(counts[:, k].sum())
        if total == 0:
            continue
        drawn = np.sort(rng.choice(total, size=min(per_class, total), replace=False))
        starts = np.concatenate(([0], np.cumsum(counts[:, k])))
        for case in range(cases):
            inside = drawn[(drawn >= starts[case]) & (drawn < starts[case + 1])] - starts[case]
            if inside.size:
                ranks[case][k] = inside
    return ranks


def voxels_at_ranks(labels: np.ndarray, ranks: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (v, dims) and their classes (v,) that `ranks` (one case's entry of `draw_ranks`) name."""
    voxels, classes = [], []
    flat = labels.ravel()
    for k, r in sorted(ranks.items()):
        positions = np.flatnonzero(flat == k)[r]
        voxels.append(np.stack(np.unravel_index(positions, labels.shape), 1))
        classes.append(np.full(len(positions), k, dtype=np.int64))
    if not voxels:
        return np.zeros((0, labels.ndim), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(voxels).astype(np.int64), np.concatenate(classes)
