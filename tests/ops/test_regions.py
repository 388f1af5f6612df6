"""Local-loss regions hold the same physical voxels in both views under known shifts and flips."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.ops.regions import aligned_region_descriptors, overlap, region_averaging_matrix


def _coordinate_volume(shape):
    """A case whose channels are each voxel's own coordinates (z, y, x)."""
    return torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij"))


def _view(case, start, size, mirror):
    crop = case[(slice(None), *[slice(s, s + n) for s, n in zip(start, size)])]
    flip = [a + 1 for a in range(len(size)) if mirror[a]]
    return crop.flip(flip) if flip else crop


MIRRORS = list(itertools.product([(False, False, False), (True, False, True)],
                                 [(False, True, False), (True, True, True)]))


@pytest.mark.parametrize("mirror1,mirror2", MIRRORS)
def test_descriptors_of_both_views_equal_pooling_the_case_overlap(mirror1, mirror2):
    """Independent reference: crop the overlap from the case itself and adaptive-average-pool it."""
    case = _coordinate_volume((20, 30, 28)) + torch.randn(3, 20, 30, 28, dtype=torch.float64)  # not separable
    size, start1, start2 = (12, 16, 16), (2, 3, 10), (7, 11, 4)  # shifted on every axis, odd overlaps
    v1, v2 = _view(case, start1, size, mirror1), _view(case, start2, size, mirror2)
    d1, d2 = aligned_region_descriptors(v1[None], v2[None], [start1], [start2], [mirror1], [mirror2], grid=2)
    lo, hi = overlap(start1, start2, size)
    region = case[(slice(None), *[slice(a, b) for a, b in zip(lo, hi)])]
    expected = F.adaptive_avg_pool3d(region[None], 2)[0].flatten(1).T  # (8, 3)
    assert torch.allclose(d1[0], expected) and torch.allclose(d2[0], expected)


def test_batch_samples_have_their_own_geometry():
    case = _coordinate_volume((16, 24, 24))
    size = (8, 16, 16)
    starts1, starts2 = [(1, 2, 5), (0, 0, 0)], [(5, 6, 1), (3, 4, 4)]
    mirrors1, mirrors2 = [(False, True, False), (True, True, True)], [(True, False, True), (False,) * 3]
    f1 = torch.stack([_view(case, s, size, m) for s, m in zip(starts1, mirrors1)])
    f2 = torch.stack([_view(case, s, size, m) for s, m in zip(starts2, mirrors2)])
    d1, d2 = aligned_region_descriptors(f1, f2, starts1, starts2, mirrors1, mirrors2, grid=2)
    assert d1.shape == (2, 8, 3) and torch.allclose(d1, d2)
    assert not torch.allclose(d1[0], d1[1])


def test_2d_views_are_supported():
    case = _coordinate_volume((20, 20))
    size, start1, start2, m1, m2 = (10, 10), (0, 4), (5, 0), (True, False), (False, True)
    d1, d2 = aligned_region_descriptors(_view(case, start1, size, m1)[None], _view(case, start2, size, m2)[None],
                                        [start1], [start2], [m1], [m2], grid=2)
    assert d1.shape == (1, 4, 2) and torch.allclose(d1, d2)


def test_averaging_matrix_rows_cover_the_overlap_once_each_and_sum_to_one():
    m = region_averaging_matrix(lo=5, hi=12, start=3, size=10, mirror=True, grid=3)  # overlap of 7 voxels
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert (m > 0).sum() == 3 + 3 + 3  # 7 split as [0,3), [2,5), [4,7): adaptive pooling's overlapping split


def test_gradients_reach_every_overlap_voxel_and_nothing_else():
    f1 = torch.zeros(1, 2, 8, 8, 8, requires_grad=True)
    f2 = torch.zeros(1, 2, 8, 8, 8, requires_grad=True)
    d1, d2 = aligned_region_descriptors(f1, f2, [(0, 0, 0)], [(4, 0, 0)], [(False,) * 3], [(False,) * 3], grid=2)
    (d1.sum() + d2.sum()).backward()
    assert (f1.grad[0, 0, 4:] > 0).all() and (f1.grad[0, 0, :4] == 0).all()
    assert (f2.grad[0, 0, :4] > 0).all() and (f2.grad[0, 0, 4:] == 0).all()


def test_no_overlap_or_too_small_overlap_is_named():
    with pytest.raises(ValueError, match="do not overlap"):
        overlap((0, 0, 0), (8, 0, 0), (8, 8, 8))
    f = torch.zeros(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"overlap of 1 voxels is smaller than the local-loss grid 2"):
        aligned_region_descriptors(f, f, [(0, 0, 0)], [(7, 0, 0)], [(False,) * 3], [(False,) * 3], grid=2)
