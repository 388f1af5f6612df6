"""Local corruptions of the `hier` method and voxel2vec view augmentations: shapes, what each corruption may
touch, the Bézier curve's closed form and monotonicity, and reproducibility under a global seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.data.local_augment import (
    BezierIntensity,
    BoxInpainting,
    LocalVoxelShuffle,
    bezier_curve,
    hier_local_transforms,
    voxel2vec_view_transforms,
)
from nnssl_plugin.data.vox2vec_augment import GaussianSharpen, RandomIntensityWindow

SHAPES = [(1, 24, 20), (2, 24, 20), (1, 12, 16, 20), (2, 12, 16, 20)]
RANGES = [(0.0, 6.0), (-3.0, 9.0)]  # per-channel unit ranges of `_image` (channel c: 3 + (c + 1) * randn)
WINDOWS = [(2.0, 4.0), (1.0, 5.0)]  # per-channel "soft-tissue" windows inside them
FACTORIES = {  # name -> transform for an image with c channels
    "shuffle": lambda c: LocalVoxelShuffle(),
    "bezier": lambda c: BezierIntensity(),
    "box": lambda c: BoxInpainting(),
    "hier": lambda c: hier_local_transforms(),
    "hier_window": lambda c: hier_local_transforms(window=WINDOWS[:c]),
    "voxel2vec": lambda c: voxel2vec_view_transforms(unit_ranges=RANGES[:c], windows=WINDOWS[:c]),
}


def _image(shape, seed=0) -> torch.Tensor:
    """Distinct values with a different offset and scale per channel."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(shape, generator=g)
    return img * torch.arange(1, shape[0] + 1).view(-1, *[1] * (len(shape) - 1)) + 3.0


def _box_mask(spatial, starts, sizes) -> np.ndarray:
    mask = np.zeros(spatial, dtype=bool)
    for start, size in zip(starts, sizes):
        mask[tuple(slice(s, s + k) for s, k in zip(start, size))] = True
    return mask


def _de_casteljau(points: np.ndarray, t: float) -> np.ndarray:
    """Point of the Bézier curve with control points (4, 2) at t, by repeated linear interpolation."""
    while len(points) > 1:
        points = (1 - t) * points[:-1] + t * points[1:]
    return points[0]


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("shape", SHAPES)
def test_transforms_keep_shape_and_dtype(name, shape):
    np.random.seed(1)
    torch.manual_seed(1)
    out = FACTORIES[name](shape[0])(image=_image(shape))["image"]
    assert out.shape == shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_voxel_shuffle_keeps_values_and_moves_only_voxels_inside_blocks():
    np.random.seed(2)
    img = _image((2, 12, 16, 24))
    t = LocalVoxelShuffle()
    params = t.get_parameters(image=img)
    out = t._apply_to_image(img.clone(), **params)
    outside = torch.from_numpy(~_box_mask(img.shape[1:], params["starts"], params["sizes"]))
    assert torch.equal(out[:, outside], img[:, outside])
    assert not torch.equal(out, img)
    for c in range(2):
        assert torch.equal(out[c].flatten().sort().values, img[c].flatten().sort().values)


def test_voxel_shuffle_uses_one_permutation_for_all_channels():
    np.random.seed(3)
    img = _image((1, 12, 16, 24))
    img = torch.cat([img, img * 2 + 1])  # channel 1 is an affine function of channel 0
    out = LocalVoxelShuffle()(image=img.clone())["image"]
    assert not torch.equal(out, img)
    assert torch.equal(out[1], out[0] * 2 + 1)


def test_voxel_shuffle_single_block_keeps_its_multiset():
    np.random.seed(4)
    img = _image((1, 32, 32))
    t = LocalVoxelShuffle(num_blocks=1, block_size_fraction=(0.25, 0.25))
    params = t.get_parameters(image=img)
    out = t._apply_to_image(img.clone(), **params)
    (z, y), (dz, dy) = params["starts"][0], params["sizes"][0]
    assert (dz, dy) == (8, 8)
    inside = (slice(None), slice(z, z + dz), slice(y, y + dy))
    assert not torch.equal(out[inside], img[inside])
    assert torch.equal(out[inside].flatten().sort().values, img[inside].flatten().sort().values)


@pytest.mark.parametrize("spatial", [(64, 64), (32, 40, 48)])
def test_voxel_shuffle_blocks_cover_the_requested_fraction_with_bounded_sides(spatial):
    np.random.seed(5)
    t = LocalVoxelShuffle(block_size_fraction=(0.0, 1 / 8), volume_fraction=(0.1, 0.25))
    for _ in range(5):
        params = t.get_parameters(image=torch.zeros((1, *spatial)))
        sizes, starts = params["sizes"], params["starts"]
        assert (sizes >= 1).all() and (sizes <= np.array(spatial) // 8).all()
        assert (starts >= 0).all() and (starts + sizes <= np.array(spatial)).all()
        volumes = sizes.prod(axis=1)
        total = np.prod(spatial)
        assert 0.1 * total <= volumes.sum() < 0.25 * total + volumes.max()
        assert volumes[:-1].sum() < 0.25 * total  # blocks stop once the target is reached


def test_bezier_curve_matches_de_casteljau():
    p1, p2 = (0.2, 0.9), (0.7, 0.05)
    xs, ys = bezier_curve(p1, p2, num=11)
    points = np.array([(0, 0), p1, p2, (1, 1)], dtype=float)
    for i, t in enumerate(np.linspace(0, 1, 11)):
        np.testing.assert_allclose((xs[i], ys[i]), _de_casteljau(points, t), atol=1e-12)


def test_bezier_curve_is_monotone_from_origin_to_one():
    rng = np.random.default_rng(6)
    for _ in range(500):
        p1, p2 = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
        xs, ys = bezier_curve(p1, p2)
        assert (xs[0], ys[0]) == (0.0, 0.0) and (xs[-1], ys[-1]) == (1.0, 1.0)
        assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= 0).all()
    xs, ys = bezier_curve((1.0, 0.0), (0.0, 1.0))  # extreme control points: x2 < x1 with (x2-x1)² = x1(1-x2)
    assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= 0).all()


def test_bezier_intensity_keeps_voxel_order_and_range_per_channel():
    np.random.seed(7)
    img = _image((2, 12, 16, 20))
    t = BezierIntensity()
    for _ in range(10):
        out = t(image=img.clone())["image"]
        assert not torch.equal(out, img)
        for c in range(2):
            order = img[c].flatten().argsort()
            assert (out[c].flatten()[order].diff() >= 0).all()
            torch.testing.assert_close(out[c].min(), img[c].min(), rtol=1e-6, atol=0)
            torch.testing.assert_close(out[c].max(), img[c].max(), rtol=1e-6, atol=0)


def test_bezier_intensity_matches_interpolation_on_the_curve():
    img = _image((1, 12, 16, 20))
    p1, p2 = (0.2, 0.7), (0.6, 0.1)
    out = BezierIntensity()._apply_to_image(img.clone(), curves=[(p1, p2)])
    v = img[0].double().numpy()
    lo, hi = v.min(), v.max()
    xs, ys = bezier_curve(p1, p2, num=100_000)
    expected = np.interp((v - lo) / (hi - lo), xs, ys) * (hi - lo) + lo
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=0, atol=1e-4 * (hi - lo))


def test_bezier_intensity_identity_control_points_give_identity():
    img = _image((2, 12, 16, 20))
    out = BezierIntensity()._apply_to_image(img.clone(), curves=[((1 / 3, 1 / 3), (2 / 3, 2 / 3))] * 2)
    torch.testing.assert_close(out, img, rtol=1e-6, atol=1e-6 * float(img.abs().max()))


def test_bezier_intensity_leaves_a_constant_channel_unchanged():
    np.random.seed(8)
    img = torch.stack([_image((1, 16, 16))[0], torch.full((16, 16), 2.5)])
    out = BezierIntensity()(image=img.clone())["image"]
    assert torch.equal(out[1], img[1])


def test_box_inpainting_changes_only_reported_boxes_within_channel_range():
    np.random.seed(9)
    t = BoxInpainting(num_boxes=(1, 5), box_size_fraction=(1 / 8, 1 / 4))
    for _ in range(5):
        img = _image((2, 16, 24, 32))
        params = t.get_parameters(image=img)
        out = t._apply_to_image(img.clone(), **params)
        sizes, starts, spatial = params["sizes"], params["starts"], np.array(img.shape[1:])
        assert 1 <= len(sizes) <= 5
        assert (sizes >= np.ceil(spatial / 8)).all() and (sizes <= spatial // 4).all()
        assert (starts >= 0).all() and (starts + sizes <= spatial).all()
        inside = torch.from_numpy(_box_mask(img.shape[1:], starts, sizes))
        assert torch.equal(out[:, ~inside], img[:, ~inside])
        for c in range(2):
            painted = out[c][inside]
            assert (painted >= img[c].min()).all() and (painted <= img[c].max()).all()
            assert (painted != img[c][inside]).float().mean() > 0.99
            # uniform noise over the channel's range, not a constant: its spread is near (max - min) / sqrt(12)
            assert painted.std() > 0.2 * float(img[c].max() - img[c].min())


@pytest.mark.parametrize("name", ["hier", "hier_window", "voxel2vec"])
@pytest.mark.parametrize("shape", [(1, 24, 20), (2, 12, 16, 20)])
def test_same_global_seed_gives_the_same_view(name, shape):
    img = _image(shape)
    transform = FACTORIES[name](shape[0])

    def view(seed):
        np.random.seed(seed)
        torch.manual_seed(seed)
        return transform(image=img.clone())["image"]

    assert torch.equal(view(10), view(10))
    assert not torch.equal(view(10), view(11))


def test_hier_transforms_always_inpaint():
    np.random.seed(12)
    torch.manual_seed(12)
    img = _image((1, 16, 16, 16))
    for _ in range(5):
        out = hier_local_transforms()(image=img.clone())["image"]
        assert not torch.equal(out, img)


def _expected_inpainted_fraction(spatial, num_boxes, fraction) -> float:
    """Exact mean painted fraction: sides uniform on integers in [ceil(f0 s), floor(f1 s)], starts uniform, boxes
    independent; a voxel's chance to lie in one box is the product of per-axis chances; union over n boxes."""
    p_box = np.ones(spatial)
    for axis, side in enumerate(spatial):
        k_lo, k_hi = max(1, int(np.ceil(fraction[0] * side))), int(np.floor(fraction[1] * side))
        p_axis = np.zeros(side)
        for k in range(k_lo, k_hi + 1):
            covered = np.array([min(x, side - k) - max(0, x - k + 1) + 1 for x in range(side)])  # starts covering x
            p_axis += covered / (side - k + 1) / (k_hi - k_lo + 1)
        p_box = p_box * p_axis.reshape([-1 if a == axis else 1 for a in range(len(spatial))])
    return float(np.mean([np.mean(1 - (1 - p_box) ** n) for n in range(num_boxes[0], num_boxes[1] + 1)]))


@pytest.mark.parametrize("spatial", [(32, 48, 48), (64, 128, 128), (256, 256), (48, 64)])
def test_inpainting_paints_about_5_percent_of_a_patch_on_average(spatial):
    t = BoxInpainting()
    dims = "3d" if len(spatial) == 3 else "2d"
    fraction = {"3d": (1 / 6, 0.35), "2d": (0.09, 0.18)}[dims]
    expected = _expected_inpainted_fraction(spatial, (1, 5), fraction)
    assert 0.045 <= expected <= 0.055
    np.random.seed(13)
    image = torch.zeros((1, *spatial))
    draws = 400 if dims == "3d" else 2000
    painted = []
    for _ in range(draws):  # Monte Carlo over the transform's own boxes
        params = t.get_parameters(image=image)
        painted.append(_box_mask(spatial, params["starts"], params["sizes"]).mean())
    painted = np.array(painted)
    assert abs(painted.mean() - expected) < 4 * painted.std() / np.sqrt(draws)


def test_box_inpainting_with_a_value_range_paints_uniform_noise_over_that_range():
    np.random.seed(14)
    img = _image((2, 16, 24, 32))
    t = BoxInpainting(num_boxes=(5, 5), value_range=WINDOWS)
    params = t.get_parameters(image=img)
    out = t._apply_to_image(img.clone(), **params)
    inside = torch.from_numpy(_box_mask(img.shape[1:], params["starts"], params["sizes"]))
    assert torch.equal(out[:, ~inside], img[:, ~inside])
    for c, (lo, hi) in enumerate(WINDOWS):
        painted = out[c][inside].numpy()
        assert painted.min() >= lo and painted.max() <= hi
        assert abs(painted.mean() - (lo + hi) / 2) < 0.05 * (hi - lo)
        assert abs(painted.std() - (hi - lo) / np.sqrt(12)) < 0.05 * (hi - lo)  # uniform: sd = width / sqrt(12)


def test_hier_transforms_give_the_window_to_the_bezier_curve_and_the_inpainting():
    shuffle, bezier, box = hier_local_transforms(window=WINDOWS).transforms
    assert bezier.transform.window == WINDOWS and box.value_range == WINDOWS
    assert isinstance(shuffle.transform, LocalVoxelShuffle) and box.box_size_fraction is None
    _, bezier, box = hier_local_transforms().transforms
    assert bezier.transform.window is None and box.value_range is None


def test_voxel2vec_uses_vox2vec_sharpening_and_a_random_window_over_the_unit_range():
    blur_or_sharpen, noise, window = voxel2vec_view_transforms(unit_ranges=RANGES, windows=WINDOWS).transforms
    assert any(isinstance(t, GaussianSharpen) for t in blur_or_sharpen.transform.list_of_transforms)
    assert isinstance(window, RandomIntensityWindow)
    assert [r for r, _ in window.ranges] == RANGES and [w for _, w in window.ranges] == WINDOWS
    with pytest.raises(ValueError, match="soft_tissue_windows\\(plans, configuration\\)"):
        voxel2vec_view_transforms()
