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

SHAPES = [(1, 24, 20), (2, 24, 20), (1, 12, 16, 20), (2, 12, 16, 20)]
FACTORIES = {
    "shuffle": LocalVoxelShuffle,
    "bezier": BezierIntensity,
    "box": BoxInpainting,
    "hier": hier_local_transforms,
    "voxel2vec": voxel2vec_view_transforms,
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
    out = FACTORIES[name]()(image=_image(shape))["image"]
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


@pytest.mark.parametrize("factory", [hier_local_transforms, voxel2vec_view_transforms])
@pytest.mark.parametrize("shape", [(1, 24, 20), (2, 12, 16, 20)])
def test_same_global_seed_gives_the_same_view(factory, shape):
    img = _image(shape)
    transform = factory()

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
