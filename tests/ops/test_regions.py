"""Local-loss regions hold the same physical voxels in both views under known shifts, flips and scales."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.ops.regions import (aligned_region_descriptors, box_size, grid_at_stride, min_patch_for_grid,
                                      min_view_overlap, overlap, region_averaging_matrix, second_box_offsets)


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


# ----- views of different scales -------------------------------------------------------------------------------------
def _unscaled_matrix_reference(lo, hi, start, size, mirror, grid):
    """The unscaled rule written out voxel by voxel: adaptive pooling's regions of the case voxels [lo, hi), each
    a plain average of the view voxels that hold them."""
    matrix = np.zeros((grid, size))
    length = hi - lo
    for i in range(grid):
        first, last = lo + (i * length) // grid, lo + -(-(i + 1) * length // grid)
        for c in range(first, last):
            v = c - start if not mirror else size - 1 - (c - start)
            matrix[i, v] = 1.0 / (last - first)
    return matrix


def test_unscaled_views_give_exactly_the_unscaled_matrices():
    rng = np.random.default_rng(0)
    for _ in range(300):
        size, grid = int(rng.integers(3, 40)), int(rng.integers(1, 5))
        start, other = int(rng.integers(-10, 10)), int(rng.integers(-10, 10))
        lo, hi = max(start, other), min(start, other) + size
        if hi - lo < grid:
            continue
        mirror = bool(rng.integers(2))
        expected = _unscaled_matrix_reference(lo, hi, start, size, mirror, grid)
        assert np.array_equal(region_averaging_matrix(lo, hi, start, size, mirror, grid), expected)
        assert np.array_equal(region_averaging_matrix(lo, hi, start, size, mirror, grid, box=size), expected)


def _ramp_view(gradient, start, box, view, mirror):
    """Features of a view of a case whose features are the linear ramp f(c) = gradient · c (channels: rows of
    `gradient`, (c, D)), sampled at the view voxels' centres c = start + (v + 0.5) · box / view − 0.5."""
    axes = [s + (np.arange(n) + 0.5) * b / n - 0.5 for s, b, n in zip(start, box, view)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))  # (D, *view) case coordinates of the voxel centres
    f = torch.from_numpy(np.einsum("cd,d...->c...", gradient, coords))  # (c, *view)
    flip = [a + 1 for a in range(len(view)) if mirror[a]]
    return f.flip(flip) if flip else f


def _supersampled_region_means(gradient, start, box, view, lo, hi, grid, k=40):
    """Independent reference: each view voxel split into k^D sub-voxels carrying the voxel's value; a region's mean
    is the mean over the sub-voxels whose centres lie in the region (converges as k grows, error <= h / k)."""
    dims = len(view)
    sub = [s + (np.arange(n * k) + 0.5) * b / (n * k) for s, b, n in zip(start, box, view)]  # edge coordinates
    value = [s + (np.arange(n * k) // k + 0.5) * b / n - 0.5 for s, b, n in zip(start, box, view)]  # voxel centres
    means = np.zeros((grid,) * dims + (gradient.shape[0],))
    for region in itertools.product(range(grid), repeat=dims):
        centre = []
        for a, i in enumerate(region):
            length = hi[a] - lo[a]
            r_lo, r_hi = lo[a] + np.floor(i * length / grid), min(lo[a] + np.ceil((i + 1) * length / grid), hi[a])
            inside = (sub[a] >= r_lo) & (sub[a] < r_hi)
            centre.append(value[a][inside].mean())  # a separable box: the mean of a linear ramp is per axis
        means[region] = gradient @ np.array(centre)
    return means.reshape(grid ** dims, -1)


SCALED = [((3, 5, 2), (20, 34, 28), (8, 12, 9), (10, 17, 14)),  # view 1 zoomed out (h ~ 1.4), view 2 in (h ~ 0.7)
          ((4, 2, 6), (12, 14, 12), (-3, 3, 1), (22, 34, 30)),  # the other way round, overhanging the case start
          ((4.5, 2.25, 6.0), (12.5, 14.0, 11.5), (-3.0, 3.75, 1.5), (21.0, 33.5, 30.25))]  # off the case grid


@pytest.mark.parametrize("start1,box1,start2,box2", SCALED)
@pytest.mark.parametrize("mirror1,mirror2", MIRRORS[:2])
def test_scaled_views_average_the_same_physical_regions_of_a_linear_ramp(start1, box1, start2, box2, mirror1,
                                                                         mirror2):
    view, grid = (14, 24, 20), 3
    gradient = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, -0.7, 0.2]])  # (c, D)
    f1 = _ramp_view(gradient, start1, box1, view, mirror1)
    f2 = _ramp_view(gradient, start2, box2, view, mirror2)
    d1, d2 = aligned_region_descriptors(f1[None], f2[None], [start1], [start2], [mirror1], [mirror2], grid,
                                        size1=[box1], size2=[box2])
    lo = np.maximum(start1, start2)
    hi = np.minimum(np.add(start1, box1), np.add(start2, box2))
    for d, start, box in ((d1, start1, box1), (d2, start2, box2)):
        reference = _supersampled_region_means(gradient, start, box, view, lo, hi, grid)
        h = max(b / n for b, n in zip(box, view))
        np.testing.assert_allclose(d[0].numpy(), reference, atol=2 * h / 40)  # the sub-voxel rule's own error
    # both views against the region's exact continuous mean (the ramp at its centre): a view voxel cut by a region
    # boundary counts at its own centre, off by at most h/2 on a share w(h − w)/(h · region) of the weight
    regions = itertools.product(range(grid), repeat=3)
    exact = []
    for region in regions:
        centre = []
        for a, i in enumerate(region):
            length = hi[a] - lo[a]
            r_lo, r_hi = lo[a] + np.floor(i * length / grid), min(lo[a] + np.ceil((i + 1) * length / grid), hi[a])
            centre.append((r_lo + r_hi) / 2 - 0.5)  # edge coordinates -> voxel-centre coordinates
        exact.append(gradient @ np.array(centre))
    exact = np.array(exact)
    h_max = max(max(b / n for b, n in zip(box, view)) for box in (box1, box2))
    shortest = min((hi[a] - lo[a]) / grid for a in range(3))
    bound = np.abs(gradient).sum(1) * h_max ** 2 / (4 * shortest)  # two boundaries, w(h − w)/2 <= h²/8 each
    for d in (d1, d2):
        assert (np.abs(d[0].numpy() - exact) <= bound + 1e-9).all()
    assert (bound < 0.2).all()  # below a misalignment by half a case voxel along one axis (0.5 on channels 0-2)


def test_scaled_interpolated_views_of_a_smooth_case_give_matching_region_means():
    """Views cropped from a smooth case and resized with F.interpolate (the sampler's resize), with flips: the
    descriptors of both views agree with the region means of the case itself."""
    shape = (40, 56, 56)
    axes = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    z, y, x = axes
    case = torch.from_numpy(np.stack([0.5 * z + np.sin(y / 6.0), 4 * np.cos(x / 7.0) + 0.1 * y]))  # (2, *shape)
    view, grid = (16, 24, 24), 3
    boxes = [((6, 10, 12), (22, 34, 34), (True, False, True)), ((12, 18, 9), (11, 17, 17), (False, True, True))]
    views = []
    for start, box, mirror in boxes:
        crop = case[(slice(None), *[slice(s, s + b) for s, b in zip(start, box)])]
        resized = F.interpolate(crop[None], size=view, mode="trilinear", align_corners=False)[0]
        views.append(resized.flip([a + 1 for a in range(3) if mirror[a]]))
    (s1, b1, m1), (s2, b2, m2) = boxes
    d1, d2 = aligned_region_descriptors(views[0][None], views[1][None], [s1], [s2], [m1], [m2], grid,
                                        size1=[b1], size2=[b2])
    lo, hi = np.maximum(s1, s2), np.minimum(np.add(s1, b1), np.add(s2, b2))
    region = case[(slice(None), *[slice(a, b) for a, b in zip(lo, hi)])]
    expected = F.adaptive_avg_pool3d(region[None], grid)[0].flatten(1).T  # (27, 2): the case's own region means
    # tolerance 0.1 (measured 0.03: trilinear interpolation of the sine/cosine and a zoomed-in view's clamped edge
    # voxels), while a misalignment by one case voxel moves channel 0 (0.5 · z) by 0.5
    assert torch.allclose(d1[0], expected, atol=0.1) and torch.allclose(d2[0], expected, atol=0.1)
    assert torch.allclose(d1, d2, atol=0.1)
    shifted = aligned_region_descriptors(views[0][None], views[1][None], [s1], [(s2[0] + 1, *s2[1:])], [m1], [m2],
                                         grid, size1=[b1], size2=[b2])[0]
    assert not torch.allclose(shifted, d1, atol=0.4)  # the check sees a misalignment of one case voxel


def test_scaled_gradients_reach_the_overlap_and_the_cut_voxels_only():
    f1 = torch.zeros(1, 1, 8, 8, 8, requires_grad=True)
    f2 = torch.zeros(1, 1, 8, 8, 8, requires_grad=True)
    # view 1: 12 case voxels from 0 (h = 1.5); view 2: 8 from 6: overlap [6, 12) = view-1 voxels 4..7 (edge 6.0)
    d1, d2 = aligned_region_descriptors(f1, f2, [(0, 0, 0)], [(6, 0, 0)], [(False,) * 3], [(False,) * 3], grid=2,
                                        size1=[(12, 8, 8)], size2=[(8, 8, 8)])
    (d1.sum() + d2.sum()).backward()
    assert (f1.grad[0, 0, 4:] > 0).all() and (f1.grad[0, 0, :4] == 0).all()
    assert (f2.grad[0, 0, :6] > 0).all() and (f2.grad[0, 0, 6:] == 0).all()


def test_a_fractional_boundary_weights_the_cut_view_voxel_by_its_footprint():
    # one axis: view of 4 voxels spanning 6 case voxels from 0 (h = 1.5); region = the overlap [0, 4), grid 1
    m = region_averaging_matrix(lo=0, hi=4, start=0, size=4, mirror=False, grid=1, box=6.0)
    np.testing.assert_allclose(m, [[1.5 / 4, 1.5 / 4, 1.0 / 4, 0.0]])  # voxel 2 covers [3, 4.5): 1 voxel inside
    np.testing.assert_allclose(region_averaging_matrix(0, 4, 0, 4, True, 1, box=6.0), m[:, ::-1])


def test_too_small_scaled_overlap_is_counted_in_view_voxels():
    f = torch.zeros(1, 1, 8, 8, 8)
    # 2 case voxels of overlap; view 1 spans 16 case voxels in 8 (h = 2): 1 view voxel < grid 2
    with pytest.raises(ValueError, match=r"overlap of 1 voxels is smaller than the local-loss grid 2"):
        aligned_region_descriptors(f, f, [(0, 0, 0)], [(14, 0, 0)], [(False,) * 3], [(False,) * 3], grid=2,
                                   size1=[(16, 8, 8)], size2=[(8, 8, 8)])


# ----- the sampler's boxes and the smallest overlap they allow ---------------------------------------------------
def test_equal_boxes_shift_by_at_most_half_the_patch():
    for p in (1, 2, 7, 16, 48):
        low, high = second_box_offsets(p, p, 0.5)
        assert (int(low), int(high)) == (-(p // 2), p // 2)


def _brute_force_min_overlap(patch, scale_range, max_shift):
    """Every pair of box sizes and every offset the sampler can draw, overlaps counted as shared integer voxels."""
    lo_s, hi_s = scale_range or (1.0, 1.0)
    sizes = range(max(1, int(np.floor(patch * lo_s + 0.5))), int(np.floor(patch * hi_s + 0.5)) + 1)  # rounded
    worst = np.inf
    for b1 in sizes:
        for b2 in sizes:
            centre, reach = (b1 - b2) // 2, int(min(b1, b2) * max_shift)
            for e in range(centre - reach, centre + reach + 1):
                shared = len(set(range(0, b1)) & set(range(e, e + b2)))
                worst = min(worst, shared * patch / max(b1, b2))
    return worst


@pytest.mark.parametrize("patch,scale_range", [(16, None), (7, None), (16, (0.7, 1.4)), (9, (0.7, 1.4)),
                                               (48, (0.8, 1.25)), (13, (0.5, 2.0))])
def test_min_view_overlap_is_the_worst_of_every_sampled_pair(patch, scale_range):
    assert box_size(patch, 0.7) == int(np.floor(patch * 0.7 + 0.5))
    expected = _brute_force_min_overlap(patch, scale_range, 0.5)
    assert min_view_overlap(patch, scale_range, 0.5) == pytest.approx(expected)


def test_unscaled_overlap_is_at_least_half_a_patch_and_the_grid_needs_twice_itself_minus_one():
    for p in range(1, 30):
        assert min_view_overlap(p, None) == -(-p // 2)
    for g in range(1, 6):
        assert min_patch_for_grid(g, None) == 2 * g - 1


@pytest.mark.parametrize("grid", [2, 3, 4])
def test_scaled_grid_needs_the_smallest_patch_whose_overlaps_all_clear_it(grid):
    need = min_patch_for_grid(grid, (0.7, 1.4))
    assert min_view_overlap(need - 1, (0.7, 1.4)) < grid
    assert all(_brute_force_min_overlap(p, (0.7, 1.4), 0.5) >= grid for p in range(need, need + 12))
    assert need > 2 * grid - 1  # scaling costs overlap: a larger patch than unscaled views need


# ----- regions per axis, and feature maps coarser than the views ------------------------------------------------------
def test_a_grid_per_axis_pools_the_case_overlap_into_that_many_regions_per_axis():
    """Independent reference: adaptive average pooling of the overlap cropped from the case, output size per axis."""
    case = _coordinate_volume((20, 30, 28)) + torch.randn(3, 20, 30, 28, dtype=torch.float64)
    size, start1, start2, m1, m2 = (12, 16, 16), (2, 3, 10), (7, 11, 4), (True, False, True), (False, True, False)
    d1, d2 = aligned_region_descriptors(_view(case, start1, size, m1)[None], _view(case, start2, size, m2)[None],
                                        [start1], [start2], [m1], [m2], grid=(1, 2, 3))
    lo, hi = overlap(start1, start2, size)
    region = case[(slice(None), *[slice(a, b) for a, b in zip(lo, hi)])]
    expected = F.adaptive_avg_pool3d(region[None], (1, 2, 3))[0].flatten(1).T  # (6, 3), row-major over the axes
    assert d1.shape == (1, 6, 3)
    assert torch.allclose(d1[0], expected) and torch.allclose(d2[0], expected)
    with pytest.raises(ValueError, match="one positive count per spatial axis"):
        aligned_region_descriptors(region[None], region[None], [start1], [start2], [m1], [m2], grid=(2, 2))


def _feature_box(lo, hi, start, stride, voxels, mirror):
    """Feature voxels [first, last) of a stride-coarse view holding the case interval [lo, hi) (stride-aligned)."""
    first, last = (lo - start) // stride, (hi - start) // stride
    return (voxels - last, voxels - first) if mirror else (first, last)


def test_a_coarse_feature_map_averages_the_same_case_regions_given_the_views_boxes():
    """A map 2x / 4x coarser than the views (a deeper stage): passing each view's box in case voxels as its size, the
    regions are the same case boxes as read directly from the coarse voxels that hold them (stride-aligned here)."""
    stride, patch = (2, 4, 4), (8, 16, 16)
    start1, start2, m1, m2 = (0, 0, 0), (0, 8, -8), (False, False, True), (True, False, False)
    torch.manual_seed(3)
    f1, f2 = torch.randn(1, 5, 4, 4, 4, dtype=torch.float64), torch.randn(1, 5, 4, 4, 4, dtype=torch.float64)
    d1, d2 = aligned_region_descriptors(f1, f2, [start1], [start2], [m1], [m2], grid=(1, 2, 2), size1=[patch],
                                        size2=[patch])
    case_lo, case_hi = [0, 8, 0], [8, 16, 8]  # the case overlap of the two boxes
    halves = [[(case_lo[0], case_hi[0])], [(8, 12), (12, 16)], [(0, 4), (4, 8)]]  # its regions per axis
    for f, d, start, mirror in ((f1, d1, start1, m1), (f2, d2, start2, m2)):
        rows = []
        for z in halves[0]:
            for y in halves[1]:
                for x in halves[2]:
                    box = [_feature_box(a, b, s, st, 4, mi) for (a, b), s, st, mi in
                           zip((z, y, x), start, stride, mirror)]
                    rows.append(f[0][(slice(None), *[slice(a, b) for a, b in box])].mean(dim=(1, 2, 3)))
        torch.testing.assert_close(d[0], torch.stack(rows))


@pytest.mark.parametrize("patch, stride, shift", [((16, 48, 48), (8, 16, 16), 0.25), ((8, 16, 16), (4, 4, 4), 0.5),
                                                  ((64, 160, 160), (16, 32, 32), 0.25), ((16, 48, 48), (8, 16, 16), 0)])
def test_grid_at_stride_fits_the_smallest_overlap_in_feature_voxels(patch, stride, shift):
    grid = grid_at_stride(2, patch, stride, None, shift)
    expected = tuple(max(1, min(2, int(_brute_force_min_overlap(p, None, shift) // s))) for p, s in zip(patch, stride))
    assert grid == expected
    if patch == (16, 48, 48) and shift == 0.25:
        assert grid == (1, 2, 2)  # the phantom's 3d_cpu bottleneck: 1.5 and 2.25 feature voxels of overlap
