"""MoCo view augmentations against nnU-Net's encoder: each one changes the bottleneck through instance
normalisation, brightness does not, and few views go through unchanged.

The probe is a 4-stage PlainConvUNet encoder configured like nnU-Net's plans (conv → InstanceNorm3d(affine,
eps 1e-5) → LeakyReLU, two convs per stage, anisotropic first downsampling), randomly initialised with a fixed
seed, fed a 16×32×32 crop of the CT phantom normalised like nnU-Net's CTNormalization (clip to the foreground's
[0.5, 99.5] percentiles, z-score with its mean and sd). Relative change = ‖f(aug(x)) − f(x)‖ / ‖f(x)‖ of the
bottleneck map. The 5 % bar is 50× what instance normalisation lets through for a brightness change (< 1e-3,
asserted below); it shows that an augmentation is visible, not that it is strong (a one-voxel translation of the
crop moves this random encoder's bottleneck by 93 %).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.data.augment import GammaBothWays, GlobalViewConfig, global_view_transforms
from nnssl_plugin.datasets.phantom import generate_case
from nnssl_plugin.intensity import soft_tissue_windows

VISIBLE = 0.05  # relative bottleneck change that counts as a view the network can tell apart
MEMBERS = ["BezierIntensity", "GammaTransform", "SimulateLowResolutionTransform", "GaussianBlurTransform",
           "GaussianNoiseTransform"]


@pytest.fixture(scope="module")
def phantom():
    """(crop (1, 16, 32, 32) in network units, soft-tissue windows from plans-like CT statistics)."""
    image, label, _ = generate_case(0)
    fg = image[label > 0].astype(np.float64)
    props = {"mean": fg.mean(), "std": fg.std(), "percentile_00_5": np.percentile(fg, 0.5),
             "percentile_99_5": np.percentile(fg, 99.5)}
    x = (np.clip(image, props["percentile_00_5"], props["percentile_99_5"]) - props["mean"]) / props["std"]
    crop = torch.from_numpy(x[8:24, 32:64, 32:64].astype(np.float32))[None]  # (1, z, y, x)
    plans = {"foreground_intensity_properties_per_channel": {"0": props}}
    return crop, soft_tissue_windows(plans, {"normalization_schemes": ["CTNormalization"]})


def _encoder(padding_mode: str = "zeros") -> nn.Module:
    torch.manual_seed(0)
    net = PlainConvUNet(1, 4, [8, 16, 32, 64], nn.Conv3d, 3, [1, [1, 2, 2], 2, 2], 2, 2, [2, 2, 2], True,
                        nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                        {"inplace": True}, deep_supervision=False)
    for m in net.encoder.modules():
        if isinstance(m, nn.Conv3d):
            m.padding_mode = padding_mode
    return net.encoder.eval()


@pytest.fixture(scope="module")
def encoder():
    return _encoder()


def _relative_change(encoder: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        fx, fy = encoder(torch.stack([x, y]))[-1]  # (64, 4, 4, 4) bottleneck maps; one batch: half the calls
    return float((fy - fx).norm() / fx.norm())


def _members(windows, config: GlobalViewConfig = GlobalViewConfig()) -> dict:
    """The composed transform's members, forced on (their RandomTransform wrappers dropped)."""
    return {type(rt.transform).__name__: rt.transform
            for rt in global_view_transforms(False, windows, config).transforms}


def _apply(transform, x: torch.Tensor, seed: int) -> torch.Tensor:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return transform(image=x.clone())["image"]


@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_multiplicative_brightness_is_invisible_through_instance_norm(phantom, encoder, factor):
    x, _ = phantom
    y = MultiplicativeBrightnessTransform(factor, synchronize_channels=False, p_per_channel=1)(image=x.clone())["image"]
    assert not torch.equal(y, x)
    assert _relative_change(encoder, x, y) < 1e-3


def test_contrast_is_seen_only_through_zero_padding_and_clipping(phantom):
    """Why contrast is dropped: with replicate padding an unclipped contrast change is a positive affine map that
    conv + instance norm undo exactly; what the zero-padded encoder sees of it is the border, and the clipping."""
    x, _ = phantom
    y = ContrastTransform(0.6, preserve_range=False, synchronize_channels=False, p_per_channel=1)(image=x.clone())
    assert _relative_change(_encoder("replicate"), x, y["image"]) < 1e-3
    assert _relative_change(_encoder("zeros"), x, y["image"]) > VISIBLE


def test_views_use_neither_brightness_nor_contrast():
    assert sorted(_members(None)) == sorted(MEMBERS)


@pytest.mark.parametrize("name", MEMBERS)
def test_every_view_transform_changes_the_bottleneck(phantom, encoder, name):
    x, windows = phantom
    transform = _members(windows)[name]
    changes = [_relative_change(encoder, x, _apply(transform, x, seed)) for seed in range(4)]
    assert min(changes) > VISIBLE, changes


@pytest.mark.parametrize("name", ["GammaTransform", "SimulateLowResolutionTransform", "GaussianBlurTransform",
                                  "GaussianNoiseTransform"])
def test_weakest_draw_of_each_range_still_changes_the_bottleneck(phantom, encoder, name):
    """Every range's end nearest the identity: γ = 1.15 or 1/1.15 (inverted or not), scale 0.9, σ 0.5, sd 0.05."""
    x, windows = phantom
    c = GlobalViewConfig()
    weakest = replace(c, gamma_range=(c.gamma_range[0],) * 2, low_res_scale=(c.low_res_scale[1],) * 2,
                      blur_sigma=(c.blur_sigma[0],) * 2, noise_sd=(c.noise_sd[0],) * 2)
    transform = _members(windows, weakest)[name]
    changes = [_relative_change(encoder, x, _apply(transform, x, seed)) for seed in range(4)]
    assert min(changes) > VISIBLE, changes


def test_views_without_effective_change_are_rare(phantom, encoder):
    """A view left bit-identical drew no transform: 16 of 400 (4.0 %) here, against (1 − 0.5)⁴ · (1 − 0.3) =
    4.4 % expected. Every other view is visible to the encoder (checked on the first 24, with the tests above
    covering each member's whole range), so this is the fraction of views that give the network nothing to see."""
    x, windows = phantom
    config = GlobalViewConfig()
    transform = global_view_transforms(False, windows, config)
    n = 400
    views = [_apply(transform, x, seed) for seed in range(n)]
    unchanged = sum(torch.equal(v, x) for v in views)
    expected = config.no_change_probability()
    assert expected == pytest.approx(0.5 ** 4 * 0.7)
    assert abs(unchanged - n * expected) <= 3 * np.sqrt(n * expected * (1 - expected)), unchanged
    changed = [v for v in views[:24] if not torch.equal(v, x)]
    assert len(changed) >= 20
    assert all(_relative_change(encoder, x, v) > VISIBLE for v in changed)


@pytest.mark.parametrize("is_2d,shape", [(False, (2, 8, 24, 20)), (True, (2, 24, 20))])
def test_views_keep_shape_and_are_reproducible_under_a_global_seed(is_2d, shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    transform = global_view_transforms(is_2d, windows=[(-1.0, 1.0), (-0.5, 2.0)])
    a, b, other = _apply(transform, x, 3), _apply(transform, x, 3), _apply(transform, x, 4)
    assert a.shape == shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, other)


def test_gamma_draws_both_ways_symmetric_in_the_log():
    np.random.seed(5)
    draws = np.array([GammaBothWays(1.15, 1.5)() for _ in range(4000)])
    log_g = np.abs(np.log(draws))
    assert (log_g >= np.log(1.15) - 1e-12).all() and (log_g <= np.log(1.5) + 1e-12).all()
    assert 0.45 < (draws > 1).mean() < 0.55
    with pytest.raises(ValueError, match="1 < lo <= hi"):
        GammaBothWays(0.7, 1.5)
