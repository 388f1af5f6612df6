"""vox2vec's photometric augmentations: in-plane Gaussian sharpening against scipy and its closed-form frequency
gain, and the random intensity window against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnssl_plugin.data.vox2vec_augment import GaussianSharpen, RandomIntensityWindow, gaussian_filter_axes


def _scipy_blur(x: np.ndarray, sigma: float, axes) -> np.ndarray:
    for axis in axes:
        x = ndimage.gaussian_filter1d(x, sigma, axis=axis, mode="nearest", truncate=4.0)
    return x


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.5])
def test_gaussian_filter_matches_scipy_with_edge_replication(sigma):
    x = np.random.default_rng(0).normal(size=(6, 12, 9)).astype(np.float64)
    got = gaussian_filter_axes(torch.from_numpy(x).float(), sigma, (1, 2)).double().numpy()
    np.testing.assert_allclose(got, _scipy_blur(x, sigma, (1, 2)), atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 6, 16, 12), (1, 16, 12)])
def test_sharpen_equals_pre_blur_plus_alpha_times_detail_in_the_last_two_axes(shape):
    x = np.random.default_rng(1).normal(size=shape)
    params = {"sigma1": [0.7] * shape[0], "alpha": [20.0] * shape[0]}
    got = GaussianSharpen()._apply_to_image(torch.from_numpy(x).float(), **params).double().numpy()
    for c in range(shape[0]):
        axes = (x.ndim - 3, x.ndim - 2)
        b = _scipy_blur(x[c], 0.7, axes)
        np.testing.assert_allclose(got[c], b + 20.0 * (b - _scipy_blur(b, 0.5, axes)), atol=1e-3)


def test_sharpen_leaves_the_through_plane_axis_alone():
    z = np.sin(np.arange(8) * 1.3)[:, None, None] * np.ones((8, 10, 10))  # varies along axis 0 only
    out = GaussianSharpen()(image=torch.from_numpy(z[None]).float())["image"][0].double().numpy()
    np.testing.assert_allclose(out, z, atol=1e-5)


@pytest.mark.parametrize("period", [4, 6, 10])
def test_sharpen_gain_on_an_in_plane_sinusoid_is_the_closed_form(period):
    """Gain g1(ω)(1 + α(1 − g2(ω))), g the DTFT of the sampled Gaussian: Σ_k w_k cos(kω)."""
    omega, alpha, sigma1, sigma2 = 2 * np.pi / period, 20.0, 0.75, 0.5

    def dtft(sigma):
        r = int(4 * sigma + 0.5)
        k = np.arange(-r, r + 1)
        w = np.exp(-0.5 * (k / sigma) ** 2)
        return float(np.sum(w / w.sum() * np.cos(k * omega)))

    x = np.cos(omega * np.arange(60))[None, :] * np.ones((60, 1))  # (y, x): varies along x only
    out = GaussianSharpen()._apply_to_image(torch.from_numpy(x[None]).float(), sigma1=[sigma1], alpha=[alpha])
    interior = out[0, 30, 15:45].double().numpy()  # away from the replicated edges
    gain = dtft(sigma1) * (1 + alpha * (1 - dtft(sigma2)))
    np.testing.assert_allclose(interior, gain * x[30, 15:45], atol=1e-3 * max(1.0, gain))
    if period == 4:  # the mid band is amplified ~2.6x at vox2vec's mean parameters (its peak)
        assert 2.5 < gain < 2.8
        bgv2 = 1 + 0.3 * 2 * (1 - np.cos(omega))  # batchgeneratorsv2's x + s(-Δx) at its former mean s = 0.3
        assert gain - 1 > 2.5 * (bgv2 - 1)


def test_window_clips_and_stretches_the_window_over_the_unit_range():
    x = np.linspace(-10, 10, 101)
    t = RandomIntensityWindow([(-8.0, 2.0)], [(-2.0, 1.0)])
    got = t._apply_to_image(torch.from_numpy(x[None]).float(), windows=[(-5.0, 1.5)])[0].double().numpy()
    expected = -8.0 + (np.clip(x, -5.0, 1.5) + 5.0) * (10.0 / 6.5)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
    assert got.min() == pytest.approx(-8.0) and got.max() == pytest.approx(2.0)


def test_random_windows_lie_between_the_narrowest_window_and_the_unit_range():
    np.random.seed(0)
    t = RandomIntensityWindow([(-8.0, 2.0), (-3.0, 3.0)], [(-2.0, 1.0), (-10.0, 10.0)])
    assert t.ranges[1] == ((-3.0, 3.0), (-3.0, 3.0))  # a window wider than the range is cut to it
    windows = np.array([t.get_parameters(image=torch.zeros(2, 4, 4))["windows"][0] for _ in range(2000)])
    assert (windows[:, 0] >= -8.0).all() and (windows[:, 0] <= -2.0).all()
    assert (windows[:, 1] >= 1.0).all() and (windows[:, 1] <= 2.0).all()
    full = np.all(windows == (-8.0, 2.0), axis=1).mean()  # not random: the unit range itself (a clip)
    assert abs(full - 0.2) < 0.04


def test_window_without_randomness_is_a_clip_to_the_unit_range():
    x = torch.tensor([[-20.0, -8.0, 0.0, 2.0, 7.0]])
    out = RandomIntensityWindow([(-8.0, 2.0)], [(-2.0, 1.0)], p_random=0.0)(image=x.clone())["image"]
    torch.testing.assert_close(out, torch.tensor([[-8.0, -8.0, 0.0, 2.0, 2.0]]))


def test_window_needs_one_range_per_channel():
    with pytest.raises(ValueError, match="one unit range and one soft-tissue window per channel"):
        RandomIntensityWindow([(-1.0, 1.0)], [])
    with pytest.raises(ValueError, match="1 channel range"):
        RandomIntensityWindow([(-1.0, 1.0)], [(-0.5, 0.5)])(image=torch.zeros(2, 4, 4))
