"""The dense probe end to end on synthetic cases: features that contain the label give Dice ≈ 1, constant features
≈ 0, the same inputs the same Dice bit for bit, real U-Nets (3D, 2D, residual encoder) run, and the probed network
is left as it was found."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from probe_synthetic import NUM_CLASSES, cases, constant_features, label_features, tiny_unet

from nnssl_plugin.probe.dense import ProbeConfig, run_dense_probe

CPU = torch.device("cpu")
CONFIG = ProbeConfig(voxels_per_class=150)
PATCH = (8, 16, 16)


def _probe(net, levels="encoder", patch=PATCH, config=CONFIG):
    return run_dense_probe(net, levels, cases(3, seed=0), cases(2, seed=1), patch, NUM_CLASSES, CPU, None, config)


def test_features_that_contain_the_label_give_dice_of_one():
    result = _probe(label_features())
    assert result.fit.converged
    assert min(result.dice) > 0.99 and result.mean_dice > 0.99
    assert result.sampled_per_class == [150] * NUM_CLASSES


def test_constant_features_give_dice_of_zero():
    result = _probe(constant_features())
    assert result.mean_dice < 0.05


def test_the_same_inputs_give_the_same_dice_bit_for_bit():
    torch.manual_seed(0)
    net = tiny_unet("plain3d")
    first, second = _probe(net, "decoder"), _probe(net, "decoder")
    assert first.dice == second.dice and first.per_case == second.per_case
    assert torch.equal(first.fit.weight, second.fit.weight) and first.fit.loss == second.fit.loss


@pytest.mark.parametrize("kind,patch", [("plain3d", PATCH), ("plain2d", (16, 16)), ("resenc3d", PATCH)])
@pytest.mark.parametrize("levels", ["encoder", "decoder"])
def test_planned_unets_of_every_kind_are_probed(kind, patch, levels):
    torch.manual_seed(0)
    result = _probe(tiny_unet(kind), levels, patch, ProbeConfig(voxels_per_class=60))
    assert len(result.dice) == NUM_CLASSES - 1 and all(0.0 <= d <= 1.0 for d in result.dice)
    assert set(result.per_case) == {"case_1_0", "case_1_1"} and not math.isnan(result.mean_dice)


def test_the_network_is_left_as_it_was_found():
    """A pretraining run may probe its own network: requires_grad flags and training mode come back unchanged."""
    torch.manual_seed(0)
    net = tiny_unet("plain3d").train()
    frozen = next(net.parameters())
    frozen.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _probe(net, "decoder", config=ProbeConfig(voxels_per_class=30))
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_class_missing_from_the_training_cases_is_never_predicted():
    train = cases(3, seed=0)
    without_3 = []
    for case in train:
        data, seg = case.load()
        seg = np.where(seg == 3, 0, seg)
        data = np.where(data > 2.5, 0, data)
        without_3.append(type(case)(case.name, lambda d=data, s=seg: (d, s), lambda s=seg: s))
    result = run_dense_probe(label_features(), "encoder", without_3, cases(2, seed=1), PATCH, NUM_CLASSES, CPU, None,
                             CONFIG)
    assert result.fit.present.tolist() == [True, True, True, False]
    assert result.dice[2] == 0.0 and result.sampled_per_class[3] == 0
