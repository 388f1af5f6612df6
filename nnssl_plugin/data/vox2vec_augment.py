"""Photometric view augmentations of vox2vec (Goncharov, Soboleva, Kurmukov, Pisov, Belyaev, MICCAI 2023,
arXiv 2307.14725) for the `voxel2vec` baseline, as batchgeneratorsv2 transforms on `image` tensors (c, *spatial).

- `GaussianSharpen`: in-plane unsharp masking after a pre-blur, s = b + α (b − G_σ2 b) with b = G_σ1 x, σ1 ∈
  [0.5, 1] and σ2 = 0.5 voxels, α ∈ [10, 30] (vox2vec's ranges). Its gain for a frequency ω is
  g1(ω)(1 + α(1 − g2(ω))), g(ω) = exp(−σ²ω²/2): ~1 + (ασ2² − σ1²)ω²/2 at low ω (coefficient 0.75–3.6, mean 2.2),
  peaking at ~2.6 for periods of 4–5 voxels (mean parameters), damped at the Nyquist frequency by the pre-blur.
  batchgeneratorsv2's SharpeningTransform (x + s·(−Δx)), used here before with s ∈ [0.1, 0.5], has gain
  1 + 2s(1 − cos ω) per axis: its s is ~50× smaller than α, and its mid-band boost (gain − 1) 3–4× smaller at
  s = 0.3. Raising s instead would boost the highest frequencies most (gain up to 1 + 12 s at the 3D Nyquist
  corner), i.e. the noise, so the vox2vec form is implemented here.
- `InPlaneGaussianBlur`: vox2vec's blur, σ ∈ [0.25, 1.5] voxels in the last two spatial axes.
- `GaussianNoiseSd`: additive zero-mean Gaussian noise whose sd is drawn uniformly in [0, sd_max] per channel
  (vox2vec: [0, 30] HU, before the window; `nnssl_plugin.intensity.vox2vec_noise_sd` gives sd_max in network units).
- `RandomIntensityWindow`: vox2vec clips HU to a random window whose lower end is drawn in [−1350, −1000] and upper
  end in [300, 1000] (p = 0.8; otherwise the widest window) and scales it to [0, 1]. Here the widest window is the
  channel's fixed range in network units (the plans' CT clip range, `nnssl_plugin.intensity.unit_ranges`), the
  narrowest one a soft-tissue window (`soft_tissue_windows`), and the clipped window is rescaled back to the
  channel's range so that the network input keeps its units.

"In-plane" = the last two spatial axes: nnU-Net's `transpose_forward` puts the axis with the coarsest spacing
first, and vox2vec filters in the axial plane. Gaussian kernels are truncated at 4σ (like scipy.ndimage) and the
image is extended by edge replication. Randomness comes only from numpy's global `np.random`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform

Range = tuple[float, float]


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised sampled Gaussian exp(−x²/2σ²) on x = −r..r, r = round(4σ); shape (2r + 1,), float32."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).float()


def gaussian_filter_axes(x: torch.Tensor, sigma: float, axes: Sequence[int]) -> torch.Tensor:
    """Separable Gaussian smoothing of x (*spatial) along `axes`, edges replicated. Returns a new tensor."""
    kernel = gaussian_kernel1d(sigma).to(x.device, x.dtype)
    r = (kernel.numel() - 1) // 2
    for axis in axes:
        moved = x.movedim(axis, -1)  # (..., L)
        rows = moved.reshape(-1, 1, moved.shape[-1])  # (m, 1, L)
        rows = F.conv1d(F.pad(rows, (r, r), mode="replicate"), kernel.view(1, 1, -1))  # (m, 1, L)
        x = rows.reshape(moved.shape).movedim(-1, axis)
    return x


class GaussianSharpen(ImageOnlyTransform):
    """vox2vec's sharpening, per channel: b = G_σ1 x, x ← b + α (b − G_σ2 b), in the last two spatial axes.

    Args:
        sigma1: range of the pre-blur σ in voxels. Default (0.5, 1.0): vox2vec.
        sigma2: σ of the blur that defines the detail layer. Default 0.5: vox2vec.
        alpha: range of the detail gain. Default (10, 30): vox2vec.
    """

    def __init__(self, sigma1: Range = (0.5, 1.0), sigma2: float = 0.5, alpha: Range = (10.0, 30.0)):
        super().__init__()
        self.sigma1, self.sigma2, self.alpha = sigma1, sigma2, alpha

    def get_parameters(self, **data_dict) -> dict:
        c = data_dict["image"].shape[0]
        return {"sigma1": [float(np.random.uniform(*self.sigma1)) for _ in range(c)],
                "alpha": [float(np.random.uniform(*self.alpha)) for _ in range(c)]}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        axes = (img.dim() - 3, img.dim() - 2)  # last two spatial axes of a channel (*spatial)
        for c, (sigma1, alpha) in enumerate(zip(params["sigma1"], params["alpha"])):
            blurred = gaussian_filter_axes(img[c].float(), sigma1, axes)  # (*spatial)
            detail = blurred - gaussian_filter_axes(blurred, self.sigma2, axes)
            img[c] = blurred.add_(detail, alpha=alpha).to(img.dtype)
        return img


class InPlaneGaussianBlur(ImageOnlyTransform):
    """vox2vec's blur, per channel: x ← G_σ x in the last two spatial axes, σ ~ U(sigma) voxels (default
    [0.25, 1.5])."""

    def __init__(self, sigma: Range = (0.25, 1.5)):
        super().__init__()
        self.sigma = sigma

    def get_parameters(self, **data_dict) -> dict:
        return {"sigma": [float(np.random.uniform(*self.sigma)) for _ in range(data_dict["image"].shape[0])]}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        axes = (img.dim() - 3, img.dim() - 2)  # last two spatial axes of a channel (*spatial)
        for c, sigma in enumerate(params["sigma"]):
            img[c] = gaussian_filter_axes(img[c].float(), sigma, axes).to(img.dtype)
        return img


class GaussianNoiseSd(ImageOnlyTransform):
    """x_c ← x_c + σ_c ε, ε ~ N(0, 1) per voxel, σ_c ~ U(0, sd_max[c]) (vox2vec: sd_max = 30 HU)."""

    def __init__(self, sd_max: Sequence[float]):
        super().__init__()
        self.sd_max = [float(v) for v in sd_max]

    def get_parameters(self, **data_dict) -> dict:
        img = data_dict["image"]
        if img.shape[0] != len(self.sd_max):
            raise ValueError(f"GaussianNoiseSd has {len(self.sd_max)} sd bound(s) but the image has {img.shape[0]} "
                             f"channel(s); pass one per input channel (nnssl_plugin.intensity.vox2vec_noise_sd)")
        sds = [float(np.random.uniform(0.0, m)) for m in self.sd_max]
        return {"sd": sds, "noise": np.random.standard_normal(tuple(img.shape)).astype(np.float32)}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        noise = torch.from_numpy(params["noise"]).to(img.device, img.dtype)  # (c, *spatial)
        for c, sd in enumerate(params["sd"]):
            img[c] += sd * noise[c]
        return img


def _checked_windows(unit_ranges: Sequence[Range], min_windows: Sequence[Range]) -> list[tuple[Range, Range]]:
    if len(unit_ranges) != len(min_windows):
        raise ValueError(f"expected one unit range and one soft-tissue window per channel, found {len(unit_ranges)} "
                         f"and {len(min_windows)}; pass unit_ranges(...) and soft_tissue_windows(...) of one plans")
    out = []
    for c, ((lo, hi), (w_lo, w_hi)) in enumerate(zip(unit_ranges, min_windows)):
        lo, hi = float(lo), float(hi)
        w_lo, w_hi = max(float(w_lo), lo), min(float(w_hi), hi)  # the narrowest window lies inside the range
        if not (hi > lo and w_hi > w_lo):
            raise ValueError(f"channel {c}: expected lo < hi and a window overlapping (lo, hi), found range "
                             f"({lo}, {hi}) and window {min_windows[c]}; use nnssl_plugin.intensity's ranges")
        out.append(((lo, hi), (w_lo, w_hi)))
    return out


class RandomIntensityWindow(ImageOnlyTransform):
    """vox2vec's random intensity window in network units, per channel c with range (lo, hi) and narrowest window
    (w_lo, w_hi): with probability `p_random` a ~ U(lo, w_lo), b ~ U(w_hi, hi), otherwise (a, b) = (lo, hi); then

        x ← lo + (clip(x, a, b) − a) · (hi − lo) / (b − a)

    so the window [a, b] is stretched over the channel's whole range (values outside are clipped to its ends).
    Always applied, like vox2vec's final `scale_hu`: outliers from noise or sharpening are clipped to (lo, hi).

    Args:
        unit_ranges: per channel (lo, hi), the widest window (vox2vec: [−1350, 1000] HU).
        min_windows: per channel, the narrowest window (vox2vec: [−1000, 300] HU; here a soft-tissue window).
        p_random: probability of a random window per channel. Default 0.8: vox2vec.
    """

    def __init__(self, unit_ranges: Sequence[Range], min_windows: Sequence[Range], p_random: float = 0.8):
        super().__init__()
        self.ranges = _checked_windows(unit_ranges, min_windows)
        self.p_random = p_random

    def get_parameters(self, **data_dict) -> dict:
        c = data_dict["image"].shape[0]
        if c != len(self.ranges):
            raise ValueError(f"RandomIntensityWindow has {len(self.ranges)} channel range(s) but the image has {c} "
                             f"channel(s); pass one range per input channel, in the plans' channel order")
        windows = []
        for (lo, hi), (w_lo, w_hi) in self.ranges:
            random = np.random.uniform() < self.p_random
            windows.append((float(np.random.uniform(lo, w_lo)), float(np.random.uniform(w_hi, hi))) if random
                           else (lo, hi))
        return {"windows": windows}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        for c, ((lo, hi), _), (a, b) in zip(range(img.shape[0]), self.ranges, params["windows"]):
            img[c] = img[c].clamp(a, b).sub_(a).mul_((hi - lo) / (b - a)).add_(lo)
        return img
