"""Voxel correspondences land on the same physical voxel at every pyramid level (shifts, flips, anisotropy)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.correspondence import corresponding_voxels, gather_at_voxels, to_level


def _coordinate_case(shape):
    return np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float64)  # (D, *shape)


def _view(case, start, size, mirror):
    crop = case[(slice(None), *[slice(s, s + n) for s, n in zip(start, size)])]
    for a in range(len(size)):
        if mirror[a]:
            crop = np.flip(crop, axis=a + 1)
    return crop


def _level(view, stride):
    """Mean coordinate of each level cell (stride blocks; a partial last block where the stride does not divide)."""
    d = len(stride)
    shape = [-(-s // st) for s, st in zip(view.shape[1:], stride)]
    out = np.zeros((view.shape[0], *shape))
    for cell in itertools.product(*[range(s) for s in shape]):
        block = view[(slice(None), *[slice(c * st, (c + 1) * st) for c, st in zip(cell, stride)])]
        out[(slice(None), *cell)] = block.reshape(d, -1).mean(1)
    return out


@pytest.mark.parametrize("mirror1,mirror2", [((False,) * 3, (False,) * 3), ((True, False, True), (False, True,
                                                                                                    True))])
def test_same_physical_voxel_in_both_views_at_every_level(mirror1, mirror2):
    case = _coordinate_case((24, 40, 36))
    size, start1, start2 = np.array([10, 16, 16]), (3, 5, 12), (7, 13, 6)  # 10 is not divisible by stride 4
    v1_img, v2_img = _view(case, start1, size, mirror1), _view(case, start2, size, mirror2)
    a, b = corresponding_voxels(start1, start2, mirror1, mirror2, size, num_voxels=200,
                                rng=np.random.default_rng(0))
    assert len(a) == 200
    coords1 = v1_img[(slice(None), *a.T)].T  # (k, 3) case coordinates
    coords2 = v2_img[(slice(None), *b.T)].T
    np.testing.assert_array_equal(coords1, coords2)
    for stride in ((1, 2, 2), (2, 4, 4), (4, 8, 8)):  # anisotropic, cumulative
        level1, level2 = _level(v1_img, stride), _level(v2_img, stride)
        c1 = level1[(slice(None), *to_level(a, stride, level1.shape[1:]).T)].T  # cell centres
        c2 = level2[(slice(None), *to_level(b, stride, level2.shape[1:]).T)].T
        half = (np.asarray(stride) - 1) / 2
        assert np.all(np.abs(c1 - coords1) <= half + 1e-9), "the view-1 cell holds the voxel"
        assert np.all(np.abs(c2 - coords1) <= half + 1e-9), "the view-2 cell holds the same voxel"


def test_foreground_is_preferred_and_all_background_still_samples():
    size = (8, 8, 8)
    mask = np.zeros(size, dtype=bool)
    mask[:, :2, :] = True
    a, _ = corresponding_voxels((0, 0, 0), (0, 0, 4), (False,) * 3, (False,) * 3, size, 50, mask,
                                np.random.default_rng(1))
    assert len(a) == 50 and mask[tuple(a.T)].all() and (a[:, 2] >= 4).all()
    a, _ = corresponding_voxels((0, 0, 0), (0, 0, 4), (False,) * 3, (False,) * 3, size, 50, np.zeros(size, bool),
                                np.random.default_rng(1))
    assert len(a) == 50


def test_fewer_overlap_voxels_than_asked_returns_them_all_once():
    a, b = corresponding_voxels((0, 0), (3, 3), (False, False), (True, False), (4, 4), num_voxels=100)
    assert len(a) == 1 and a.tolist() == [[3, 3]] and b.tolist() == [[3, 0]]


def test_views_that_cannot_overlap_are_named():
    with pytest.raises(ValueError, match="do not overlap"):
        corresponding_voxels((0, 0, 0), (8, 0, 0), (False,) * 3, (False,) * 3, (8, 8, 8))


def test_gather_at_voxels_reads_the_cell_that_to_level_names():
    import torch

    from nnssl_plugin.ops.correspondence import gather_at_voxels

    rng = np.random.default_rng(2)
    feature = rng.normal(size=(2, 5, 3, 5, 4))  # (n, c, *s): a level of a (10, 18, 16) view at stride (4, 4, 4)
    voxels = np.stack([rng.integers(0, s, 40) for s in (10, 18, 16)], axis=1)
    batch = rng.integers(0, 2, 40)
    got = gather_at_voxels(torch.from_numpy(feature), torch.from_numpy(batch), torch.from_numpy(voxels), (4, 4, 4))
    cells = to_level(voxels, (4, 4, 4), (3, 5, 4))
    expected = np.stack([feature[b, :, z, y, x] for b, (z, y, x) in zip(batch, cells)])
    np.testing.assert_array_equal(got.numpy(), expected)


def test_gather_backward_is_bit_identical_run_after_run_on_several_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        feature = torch.randn(2, 16, 8, 12, 12, generator=g, requires_grad=True)
        voxels = torch.randint(0, 24, (4096, 3), generator=g)  # many voxels share a cell: gradients add up
        batch = torch.randint(0, 2, (4096,), generator=g)
        weights = torch.randn(4096, 16, generator=g)
        grads = []
        for _ in range(20):
            feature.grad = None
            (gather_at_voxels(feature, batch, voxels, (3, 2, 2)) * weights).sum().backward()
            grads.append(feature.grad.clone())
        assert all(torch.equal(grads[0], g) for g in grads[1:])
        expected = feature[(batch, slice(None), *(voxels // torch.tensor([3, 2, 2])).minimum(
            torch.tensor([7, 11, 11])).unbind(1))]
        assert torch.equal(gather_at_voxels(feature, batch, voxels, (3, 2, 2)), expected)
    finally:
        torch.set_num_threads(threads)
