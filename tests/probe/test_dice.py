"""Dice per class against nnU-Net's own per-case counts (`compute_tp_fp_fn_tn`)."""
from __future__ import annotations

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

from nnssl_plugin.probe.dice import dice_per_class


def test_equals_nnunets_counts_with_nan_for_absent_classes_and_ignored_voxels():
    rng = np.random.default_rng(0)
    reference = rng.choice([0, 1, 2], size=(6, 9, 8), p=[0.6, 0.3, 0.1])
    prediction = np.where(rng.random(reference.shape) < 0.8, reference, rng.integers(0, 3, reference.shape))
    reference[0, 0, :3] = -1  # ignored: not scored
    got = dice_per_class(prediction, reference, num_classes=4)
    ignore = reference == -1
    for k in (1, 2, 3):
        tp, fp, fn, _ = compute_tp_fp_fn_tn(reference == k, prediction == k, ignore)
        expected = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
        np.testing.assert_equal(got[k - 1], expected)
    assert np.isnan(got[2]), "class 3 is neither present nor predicted"
