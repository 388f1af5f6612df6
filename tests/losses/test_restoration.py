"""Restoration loss on a fixed intensity scale: the plans' range maps to [0, 1], the crop's own range never does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.losses.restoration import restoration_mse, to_unit_range


def test_unit_range_maps_each_channel_by_its_own_given_range_and_clips():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 4, 5, 6, generator=g) * 4  # values well outside both ranges
    lo, hi = torch.tensor([-1.0, -7.8]), torch.tensor([2.0, 1.6])
    got = to_unit_range(x, lo, hi).numpy()
    xn = x.numpy()
    expected = np.stack([np.clip((xn[:, c] - l) / (h - l), 0, 1) for c, (l, h) in enumerate([(-1, 2), (-7.8, 1.6)])],
                        axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.min() == 0.0 and got.max() == 1.0


def test_unit_range_does_not_depend_on_the_crops_own_min_and_max():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3)
    lo, hi = torch.tensor([-1.0]), torch.tensor([3.0])
    np.testing.assert_allclose(to_unit_range(x, lo, hi).flatten().numpy(), [0.25, 0.375, 0.5])  # not [0, .5, 1]


def test_restoration_mse_equals_numpy_on_the_mapped_clean_crop():
    g = torch.Generator().manual_seed(1)
    restored, clean = torch.rand(2, 1, 3, 8, 8, generator=g), torch.randn(2, 1, 3, 8, 8, generator=g) * 3
    got = restoration_mse(restored, clean, torch.tensor([-2.0]), torch.tensor([1.5])).item()
    target = np.clip((clean.numpy() + 2.0) / 3.5, 0, 1)
    assert got == pytest.approx(np.mean((restored.numpy() - target) ** 2), rel=1e-6)


def test_perfect_restoration_costs_nothing():
    clean = torch.linspace(-1, 1, 64).view(1, 1, 4, 4, 4)
    lo, hi = torch.tensor([-1.0]), torch.tensor([1.0])
    assert restoration_mse((clean + 1) / 2, clean, lo, hi).item() == pytest.approx(0.0, abs=1e-12)


def test_one_range_per_channel_is_required():
    with pytest.raises(ValueError, match="one \\(lo, hi\\) per input channel"):
        to_unit_range(torch.zeros(1, 2, 4), torch.tensor([0.0]), torch.tensor([1.0]))
