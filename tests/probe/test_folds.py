"""`run_dense_probe_folds` (`nnssl_probe -f all`) gives, fold by fold, what the one-fold probe `run_dense_probe`
gives on that fold: the same sampled voxels, regression and Dice, with each case's features computed once."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_synthetic import NUM_CLASSES, cases, label_features, tiny_unet

from nnssl_plugin.probe.dense import ProbeConfig, run_dense_probe
from nnssl_plugin.probe.folds import run_dense_probe_folds

CPU = torch.device("cpu")
PATCH = (8, 16, 16)


def _folds(all_cases, k):
    """k folds over the cases, each case validation in exactly one (nnU-Net's layout)."""
    out = []
    for f in range(k):
        val = all_cases[f::k]
        out.append(([c for c in all_cases if c not in val], val))
    return out


@pytest.mark.parametrize("kind,levels", [("plain3d", "decoder"), ("resenc3d", "encoder")])
def test_every_fold_matches_the_one_fold_probe(kind, levels):
    torch.manual_seed(0)
    net = tiny_unet(kind)
    folds = _folds(cases(4, seed=0), 2)
    config = ProbeConfig(voxels_per_class=60, seed=3)
    together = run_dense_probe_folds(net, levels, folds, PATCH, NUM_CLASSES, CPU, None, config)
    assert len(together) == 2
    for (train, val), result in zip(folds, together):
        alone = run_dense_probe(net, levels, train, val, PATCH, NUM_CLASSES, CPU, None, config)
        assert result.sampled_per_class == alone.sampled_per_class
        assert set(result.per_case) == {c.name for c in val} == set(alone.per_case)
        torch.testing.assert_close(result.fit.weight, alone.fit.weight, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.dice, alone.dice, atol=2e-3)
        assert abs(result.mean_dice - alone.mean_dice) < 2e-3


def test_features_that_contain_the_label_give_dice_of_one_on_every_fold():
    folds = _folds(cases(4, seed=1), 2)
    results = run_dense_probe_folds(label_features(), "encoder", folds, PATCH, NUM_CLASSES, CPU, None,
                                    ProbeConfig(voxels_per_class=100))
    assert [r.sampled_per_class for r in results] == [[100] * NUM_CLASSES] * 2
    assert all(r.mean_dice > 0.99 for r in results)


def test_each_case_is_read_once_for_features_and_once_for_prediction():
    """The saving the module promises: a case is loaded for its features once, not once per fold."""
    loads = {}

    def counted(case):
        def load():
            loads[case.name] = loads.get(case.name, 0) + 1
            return case.load()
        return type(case)(case.name, load, case.load_seg)

    all_cases = [counted(c) for c in cases(6, seed=2)]
    run_dense_probe_folds(tiny_unet("plain3d"), "encoder", _folds(all_cases, 3), PATCH, NUM_CLASSES, CPU, None,
                          ProbeConfig(voxels_per_class=60))
    assert loads == {c.name: 2 for c in all_cases}
