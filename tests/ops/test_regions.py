"""Local-loss regions hold the same physical voxels in both views under known shifts and flips."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.regions import aligned_region_boxes, overlap, pool_boxes


def _coordinate_volume(shape):
    """A case whose 3 channels are each voxel's own (z, y, x) coordinate."""
    return torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij"))


def _view(case, start, size, mirror):
    crop = case[(slice(None), *[slice(s, s + n) for s, n in zip(start, size)])]
    flip = [a + 1 for a in range(3) if mirror[a]]
    return crop.flip(flip) if flip else crop


@pytest.mark.parametrize("mirror1,mirror2", list(itertools.product(
    [(False, False, False), (True, False, True)], [(False, True, False), (True, True, True)])))
def test_each_region_is_the_same_physical_box_in_both_views(mirror1, mirror2):
    case = _coordinate_volume((20, 30, 28))
    size, start1, start2 = (12, 16, 16), (2, 3, 10), (6, 11, 4)  # shifted on every axis
    v1, v2 = _view(case, start1, size, mirror1), _view(case, start2, size, mirror2)
    boxes1, boxes2 = aligned_region_boxes(start1, start2, size, mirror1, mirror2, grid=(2, 2, 3))
    assert len(boxes1) == 12
    for b1, b2 in zip(boxes1, boxes2):
        c1, c2 = v1[(slice(None), *b1)], v2[(slice(None), *b2)]
        assert c1.numel() > 0
        # the same set of case coordinates (compare sorted coordinate tuples)
        s1 = sorted(map(tuple, c1.flatten(1).T.tolist()))
        s2 = sorted(map(tuple, c2.flatten(1).T.tolist()))
        assert s1 == s2
    lo, hi = overlap(start1, start2, size)
    covered = sum(v1[(slice(None), *b)].shape[1:].numel() for b in boxes1)
    assert covered == int(np.prod(hi - lo)), "regions tile the overlap exactly"


def test_pooled_descriptors_agree_across_views():
    case = _coordinate_volume((16, 24, 24))
    size, start1, start2 = (8, 16, 16), (1, 2, 5), (5, 6, 1)
    m1, m2 = (False, True, False), (True, False, True)
    boxes1, boxes2 = aligned_region_boxes(start1, start2, size, m1, m2, grid=(1, 2, 2))
    d1 = pool_boxes(_view(case, start1, size, m1), boxes1)
    d2 = pool_boxes(_view(case, start2, size, m2), boxes2)
    assert torch.allclose(d1, d2)


def test_no_overlap_or_too_small_overlap_is_named():
    with pytest.raises(ValueError, match="do not overlap"):
        aligned_region_boxes((0, 0, 0), (8, 0, 0), (8, 8, 8), (False,) * 3, (False,) * 3, (1, 1, 1))
    with pytest.raises(ValueError, match=r"overlap \[2, 8, 8\] voxels is smaller than the local-loss grid"):
        aligned_region_boxes((0, 0, 0), (6, 0, 0), (8, 8, 8), (False,) * 3, (False,) * 3, (4, 2, 2))
