"""BezierIntensity with an intensity window and with a minimum deviation from the identity: the mapping against an
independent numpy computation, monotonicity over the whole range, untouched voxels outside the window."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.data.local_augment import BezierIntensity


def _bernstein_curve(p1, p2, num: int = 200_001) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Bézier (0,0)-P1-P2-(1,1) in power form: B(t) = P0 + 3t(P1-P0) + 3t²(P0-2P1+P2) + t³(P3-P0+3(P1-P2))."""
    t = np.linspace(0.0, 1.0, num)[:, None]
    p0, p1, p2, p3 = np.zeros(2), np.asarray(p1, float), np.asarray(p2, float), np.ones(2)
    b = p0 + 3 * t * (p1 - p0) + 3 * t ** 2 * (p0 - 2 * p1 + p2) + t ** 3 * (p3 - p0 + 3 * (p1 - p2))
    return b[:, 0], b[:, 1]


def _expected(v: np.ndarray, lo: float, hi: float, p1, p2) -> np.ndarray:
    xs, ys = _bernstein_curve(p1, p2)
    inside = (v >= lo) & (v <= hi)
    mapped = lo + (hi - lo) * np.interp((v - lo) / (hi - lo), xs, ys)
    return np.where(inside, mapped, v)


def _ramp_image(shape=(2, 10, 12, 14)) -> torch.Tensor:
    """Channel 0 spans [-4, 4], channel 1 spans [0, 10], in shuffled order, so both windows cut inside the range."""
    g = torch.Generator().manual_seed(0)
    n = int(np.prod(shape[1:]))
    ch0 = torch.linspace(-4, 4, n)[torch.randperm(n, generator=g)]
    ch1 = torch.linspace(0, 10, n)[torch.randperm(n, generator=g)]
    return torch.stack([ch0, ch1]).reshape(shape)


WINDOWS = [(-1.0, 2.5), (3.0, 4.0)]
CURVES = [((0.1, 0.8), (0.3, 0.95)), ((0.9, 0.05), (0.6, 0.2))]


def test_window_mapping_matches_numpy_and_leaves_outside_voxels_bit_identical():
    img = _ramp_image()
    out = BezierIntensity(window=WINDOWS)._apply_to_image(img.clone(), curves=CURVES)
    for c, ((lo, hi), (p1, p2)) in enumerate(zip(WINDOWS, CURVES)):
        v = img[c].double().numpy()
        np.testing.assert_allclose(out[c].double().numpy(), _expected(v, lo, hi, p1, p2), rtol=0,
                                   atol=1e-4 * (hi - lo))
        outside = (img[c] < lo) | (img[c] > hi)
        assert outside.any() and torch.equal(out[c][outside], img[c][outside])
        inside = ~outside
        assert (out[c][inside] >= lo).all() and (out[c][inside] <= hi).all()
        assert not torch.equal(out[c][inside], img[c][inside])


def test_window_map_is_monotone_over_the_whole_range():
    np.random.seed(1)
    v = torch.linspace(-6, 6, 24_001).view(1, 1, -1)  # across both window edges
    t = BezierIntensity(window=[(-1.0, 2.5)])
    for _ in range(20):
        out = t(image=v.clone())["image"].flatten()
        assert (out.diff() >= 0).all()


def test_window_edges_are_fixed_points_so_the_map_is_continuous():
    np.random.seed(5)
    lo, hi = -1.0, 2.5
    d = 1e-5 * (hi - lo)
    v = torch.tensor([lo - 1e-3, lo, lo + d, hi - d, hi, hi + 1e-3], dtype=torch.float64).view(1, -1)
    t = BezierIntensity(window=[(lo, hi)])
    for _ in range(50):
        out = t(image=v.clone())["image"][0]
        assert out[0] == v[0, 0] and out[-1] == v[0, -1]  # outside: untouched
        torch.testing.assert_close(out[[1, 4]], v[0, [1, 4]], rtol=0, atol=1e-9)  # B(0) = 0, B(1) = 1
        assert lo <= out[2] < lo + 0.01 * (hi - lo) and hi - 0.01 * (hi - lo) < out[3] <= hi  # no jump inside


def test_window_with_no_voxel_inside_changes_nothing():
    np.random.seed(2)
    img = _ramp_image()[:1]
    out = BezierIntensity(window=[(20.0, 30.0)])(image=img.clone())["image"]
    assert torch.equal(out, img)


def test_crop_range_is_used_without_a_window():
    img = _ramp_image()
    out = BezierIntensity()._apply_to_image(img.clone(), curves=CURVES)
    for c, (p1, p2) in enumerate(CURVES):
        v = img[c].double().numpy()
        np.testing.assert_allclose(out[c].double().numpy(), _expected(v, v.min(), v.max(), p1, p2), rtol=0,
                                   atol=1e-4 * (v.max() - v.min()))


def test_window_needs_one_pair_per_channel_and_lo_below_hi():
    with pytest.raises(ValueError, match="1 .* pair.* but the image has 2 channel"):
        BezierIntensity(window=[(0.0, 1.0)])(image=_ramp_image())
    with pytest.raises(ValueError, match="lo < hi"):
        BezierIntensity(window=[(1.0, 1.0)])
    with pytest.raises(ValueError, match="lo < hi"):
        BezierIntensity(window=[(0.0, float("nan"))])


def test_min_deviation_rejects_near_identity_curves():
    np.random.seed(3)
    t = BezierIntensity(min_deviation=0.1)
    grid = np.linspace(0, 1, 2001)
    for _ in range(200):
        (p1, p2), = t.get_parameters(image=torch.zeros(1, 4, 4))["curves"]
        xs, ys = _bernstein_curve(p1, p2, 20_001)
        assert np.abs(np.interp(grid, xs, ys) - grid).max() >= 0.1 - 1e-3


def test_zero_min_deviation_draws_exactly_as_before():
    """Reproducibility of `hier` runs: the default consumes np.random exactly like two uniform pairs per channel."""
    np.random.seed(4)
    curves = BezierIntensity().get_parameters(image=torch.zeros(3, 4, 4))["curves"]
    np.random.seed(4)
    expected = [(tuple(np.random.uniform(0, 1, 2)), tuple(np.random.uniform(0, 1, 2))) for _ in range(3)]
    assert curves == expected


def test_min_deviation_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"min_deviation must lie in \[0, 0.3\], found 0.5"):
        BezierIntensity(min_deviation=0.5)
