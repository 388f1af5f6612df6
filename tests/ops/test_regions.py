"""Local-loss regions hold the same physical voxels in both views under known shifts and flips."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.regions import aligned_region_descriptors, overlap, overlap_in_case_orientation


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
def test_overlaps_cut_from_both_views_are_the_same_case_voxels(mirror1, mirror2):
    case = _coordinate_volume((20, 30, 28))
    size, start1, start2 = (12, 16, 16), (2, 3, 10), (6, 11, 4)  # shifted on every axis
    lo, hi = overlap(start1, start2, size)
    o1 = overlap_in_case_orientation(_view(case, start1, size, mirror1), start1, mirror1, lo, hi)
    o2 = overlap_in_case_orientation(_view(case, start2, size, mirror2), start2, mirror2, lo, hi)
    expected = case[(slice(None), *[slice(a, b) for a, b in zip(lo, hi)])]
    assert torch.equal(o1, expected) and torch.equal(o2, expected)


@pytest.mark.parametrize("mirror1,mirror2", MIRRORS)
def test_region_descriptors_agree_and_are_the_means_of_grid_cells(mirror1, mirror2):
    case = _coordinate_volume((16, 24, 24))
    size, start1, start2 = (8, 16, 16), (1, 2, 5), (5, 6, 1)
    d1, d2 = aligned_region_descriptors(_view(case, start1, size, mirror1), _view(case, start2, size, mirror2),
                                        start1, start2, mirror1, mirror2, grid=2)
    assert d1.shape == (8, 3) and torch.allclose(d1, d2)
    lo, hi = overlap(start1, start2, size)  # (5, 6, 5) to (9, 18, 17): cells of 2 x 6 x 6 voxels
    assert d1[0].tolist() == pytest.approx([lo[0] + 0.5, lo[1] + 2.5, lo[2] + 2.5])
    assert d1[-1].tolist() == pytest.approx([hi[0] - 1.5, hi[1] - 3.5, hi[2] - 3.5])


def test_2d_views_are_supported():
    case = _coordinate_volume((20, 20))
    size, start1, start2 = (10, 10), (0, 4), (5, 0)
    d1, d2 = aligned_region_descriptors(_view(case, start1, size, (True, False)),
                                        _view(case, start2, size, (False, True)), start1, start2, (True, False),
                                        (False, True), grid=2)
    assert d1.shape == (4, 2) and torch.allclose(d1, d2)


def test_no_overlap_or_too_small_overlap_is_named():
    with pytest.raises(ValueError, match="do not overlap"):
        overlap((0, 0, 0), (8, 0, 0), (8, 8, 8))
    f = torch.zeros(1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"overlap \[1, 8, 8\] voxels is smaller than the local-loss grid 2"):
        aligned_region_descriptors(f, f, (0, 0, 0), (7, 0, 0), (False,) * 3, (False,) * 3, grid=2)
