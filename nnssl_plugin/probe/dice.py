"""Dice per class of a predicted label map against the reference (Dice 1945; nnU-Net's per-case metric).

    Dice_k = 2 TP_k / (2 TP_k + FP_k + FN_k),   NaN where TP_k + FP_k + FN_k = 0 (class absent and not predicted)

Voxels whose reference is −1 (the ignore label, see `sampling.probe_labels`) are not counted.
Shapes: prediction and reference (*spatial) integer maps → (k − 1,) for the foreground classes 1 … k − 1.
"""
from __future__ import annotations

import numpy as np


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    scored = reference >= 0
    p, r = prediction[scored].astype(np.int64), reference[scored].astype(np.int64)
    confusion = np.bincount(r * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    tp = np.diag(confusion).astype(np.float64)
    fn = confusion.sum(1) - tp
    fp = confusion.sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * tp / (2 * tp + fp + fn)
    return dice[1:]
