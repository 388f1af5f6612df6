"""vox2vec's photometric augmentations: in-plane Gaussian sharpening against scipy and its closed-form frequency
gain, and the random intensity window against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnssl_plugin.data.local_augment import hier_local_transforms, vox2vec_view_transforms
from nnssl_plugin.data.genesis_shuffle import GenesisVoxelShuffle
from nnssl_plugin.data.vox2vec_augment import (GaussianNoiseSd, GaussianSharpen, InPlaneGaussianBlur,
                                               RandomIntensityWindow, gaussian_filter_axes)
from nnssl_plugin.intensity import unit_ranges, vox2vec_noise_sd, vox2vec_windows


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


@pytest.mark.parametrize("shape", [(2, 6, 16, 12), (1, 16, 12)])
def test_in_plane_blur_is_scipys_gaussian_in_the_last_two_axes_only(shape):
    x = np.random.default_rng(2).normal(size=shape)
    got = InPlaneGaussianBlur()._apply_to_image(torch.from_numpy(x).float(), sigma=[0.9] * shape[0]).double()
    for c in range(shape[0]):
        np.testing.assert_allclose(got[c].numpy(), _scipy_blur(x[c], 0.9, (x.ndim - 3, x.ndim - 2)), atol=1e-5)
    np.random.seed(0)
    sigmas = [InPlaneGaussianBlur().get_parameters(image=torch.zeros(1, 4, 4))["sigma"][0] for _ in range(200)]
    assert 0.25 <= min(sigmas) and max(sigmas) <= 1.5


def test_noise_sd_is_uniform_up_to_the_bound_per_channel():
    t = GaussianNoiseSd([0.4, 2.0])
    np.random.seed(1)
    sds = np.array([t.get_parameters(image=torch.zeros(2, 3, 3))["sd"] for _ in range(2000)])  # (2000, 2)
    assert (sds >= 0).all() and (sds[:, 0] <= 0.4).all() and (sds[:, 1] <= 2.0).all()
    np.testing.assert_allclose(sds.mean(0), [0.2, 1.0], rtol=0.05)  # U(0, m) has mean m / 2
    img = torch.full((2, 40, 40, 40), 5.0)
    params = {"sd": [0.3, 0.0], "noise": np.random.standard_normal((2, 40, 40, 40)).astype(np.float32)}
    out = t._apply_to_image(img.clone(), **params)
    np.testing.assert_allclose(out[0].numpy(), 5.0 + 0.3 * params["noise"][0], rtol=1e-6)
    assert torch.equal(out[1], img[1])
    with pytest.raises(ValueError, match="vox2vec_noise_sd"):
        t.get_parameters(image=torch.zeros(1, 3, 3))


CT = {"foreground_intensity_properties_per_channel": {"0": {"mean": 94.0, "std": 71.0, "percentile_00_5": -429.0,
                                                            "percentile_99_5": 209.0}}}
CT_CONFIGURATION = {"normalization_schemes": ["CTNormalization"]}


def test_vox2vec_views_never_clip_nnunets_ct_input_and_change_contrast_by_at_most_1_8x():
    widest, narrowest = vox2vec_windows(CT, CT_CONFIGURATION)
    blur_or_sharpen, noise, window = vox2vec_view_transforms(widest, narrowest, vox2vec_noise_sd(CT, CT_CONFIGURATION)
                                                             ).transforms
    kinds = {type(t) for t in blur_or_sharpen.transform.list_of_transforms}
    assert kinds == {InPlaneGaussianBlur, GaussianSharpen} and blur_or_sharpen.apply_probability == 0.5
    assert noise.transform.sd_max == pytest.approx([30 / 71]) and noise.apply_probability == 0.5
    (lo, hi), = unit_ranges(CT, CT_CONFIGURATION)  # nnU-Net's input range: [-429, 209] HU
    x = torch.linspace(lo, hi, 101)[None]
    np.random.seed(2)
    gains = []
    for _ in range(200):
        params = window.get_parameters(image=x)
        (a, b), = params["windows"]
        assert a < lo and hi < b  # every window holds the whole clip range: nothing is clipped
        out = window._apply_to_image(x.clone(), **params)[0].numpy()
        slope = np.diff(out) / np.diff(x[0].numpy())
        np.testing.assert_allclose(slope, slope[0], rtol=1e-3)  # an affine map on nnU-Net's input
        gains.append(slope[0])
    assert min(gains) == pytest.approx(1.0) and 1.6 < max(gains) <= 2350 / 1300 + 1e-6  # p = 0.2: the identity


def test_hier_shuffle_choice_picks_kats_scale_blocks():
    shuffle = hier_local_transforms(shuffle="genesis").transforms[0]
    assert isinstance(shuffle.transform, GenesisVoxelShuffle) and shuffle.apply_probability == 0.8
    with pytest.raises(ValueError, match="shuffle="):
        hier_local_transforms(shuffle="kats")
