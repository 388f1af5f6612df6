"""Frozen features and probe logits through nnU-Net's sliding window, with the planned patch.

Padding, windows and weights are nnU-Net's predictor's own (`nnUNetPredictor`: the image padded with 0 to at least
the patch by `pad_nd_image`, windows at `tile_step_size` of the patch from `_internal_get_sliding_window_slicers`,
each weighted by the Gaussian importance map of `compute_gaussian`; no mirroring), so every window's instance
normalisation sees what training and `nnUNetv2_predict` see. Logits of a head over the window are summed as the
predictor sums them,

    logits(v) = Σ_w g_w(v) head_w(v) / Σ_w g_w(v),

in fp32 (the predictor: fp16), and the feature vector of a voxel is the same average of the window's levels
upsampled to the patch and read at v (`points.upsampled_at`), concatenated over the levels, f(v) = Σ_w g_w(v) F_w(v)
/ Σ_w g_w(v); a linear head's logits are therefore W f(v) + b (tested against nnU-Net's predictor). Windows run in
batches of `batch_size`: at batch 1 PyTorch's CPU convolution takes its `slow_conv3d` path, 5-8× slower per window
than the oneDNN kernel it takes from batch 2 (measured, torch 2.14.1, 3d_cpu). Only windows holding a requested
voxel are run for features. 2D configurations run per slice, as the predictor does.

Shapes: data (c, *spatial) with 3 spatial axes; voxels (v, 3) indices into them → features (v, Σ c_l) fp32;
logits (k, *spatial) fp32.
"""
from __future__ import annotations

import contextlib
import io
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nnssl_plugin.precision import autocast
from nnssl_plugin.probe.points import upsampled_at

BATCH_SIZE = 2  # the smallest batch that gets PyTorch's fast CPU convolution (module docstring)


def probe_predictor(network: nn.Module, patch_size: Sequence[int], num_classes: int, device: torch.device,
                    tile_step_size: float = 0.5):
    """nnU-Net's predictor for `network` (logits with `num_classes` channels) on preprocessed arrays: Gaussian
    weighting, `tile_step_size`, no test-time mirroring, no progress bar."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints a notice for every non-CUDA device
        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, allow_tqdm=False)
    predictor.network = network
    # only the patch size is read: the network is ours, not rebuilt from plans
    predictor.configuration_manager = ConfigurationManager({"patch_size": [int(p) for p in patch_size],
                                                            "architecture": {}})
    classes = {"background": 0, **{f"class_{k}": k for k in range(1, num_classes)}}  # sizes the logits it sums
    predictor.label_manager = LabelManager(classes, regions_class_order=None)
    predictor.allowed_mirroring_axes = None
    return predictor


class Windows:
    """The predictor's padded image, windows and Gaussian for one case (c, *spatial)."""

    def __init__(self, data: np.ndarray | torch.Tensor, patch_size: Sequence[int], tile_step_size: float = 0.5):
        from acvl_utils.cropping_and_padding.padding import pad_nd_image
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        self.patch = [int(p) for p in patch_size]
        image = torch.as_tensor(np.asarray(data), dtype=torch.float32)
        self.padded, self.revert = pad_nd_image(image, self.patch, "constant", {"value": 0}, True, None)
        self.offset = np.array([s.start for s in self.revert[1:]])  # image index + offset = padded index
        predictor = probe_predictor(nn.Identity(), self.patch, 1, torch.device("cpu"), tile_step_size)
        self.slicers = predictor._internal_get_sliding_window_slicers(self.padded.shape[1:])
        self.gaussian = compute_gaussian(tuple(self.patch), sigma_scale=1. / 8, value_scaling_factor=10,
                                         device=torch.device("cpu")).float()  # the predictor's map (fp16 values)

    def box(self, slicer: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(start, stop) per spatial axis of the padded image; a 2D window is one slice."""
        if len(self.patch) == 2:
            d = int(slicer[1])
            return (np.array([d, slicer[2].start, slicer[3].start]),
                    np.array([d + 1, slicer[2].stop, slicer[3].stop]))
        return np.array([s.start for s in slicer[1:]]), np.array([s.stop for s in slicer[1:]])

    def batch(self, slicers: Sequence[tuple], device: torch.device) -> torch.Tensor:
        """The windows (b, c, *patch) of `slicers`, on `device`."""
        return torch.stack([self.padded[s] for s in slicers]).to(device)


@torch.no_grad()
def features_at_voxels(read_levels: Callable[[torch.Tensor], list[torch.Tensor]], data: np.ndarray | torch.Tensor,
                       voxels: np.ndarray, patch_size: Sequence[int], device: torch.device,
                       tile_step_size: float = 0.5, batch_size: int = BATCH_SIZE, precision: str = "amp") -> torch.Tensor:
    """f(v) of the module docstring for each voxel; `read_levels` maps windows (b, c, *patch) to their levels;
    `precision`: the autocast (`nnssl_plugin.precision`)."""
    windows = Windows(data, patch_size, tile_step_size)
    patch = windows.patch
    points = np.asarray(voxels, dtype=np.int64).reshape(-1, 3) + windows.offset  # (v, 3) in the padded image
    needed = []
    for slicer in windows.slicers:
        start, stop = windows.box(slicer)
        inside = np.flatnonzero(((points >= start) & (points < stop)).all(1))
        if inside.size:
            needed.append((slicer, start, inside))
    sums = weights = None
    for i in range(0, len(needed), batch_size):
        chunk = needed[i:i + batch_size]
        with autocast(device, precision):
            levels = read_levels(windows.batch([slicer for slicer, _, _ in chunk], device))
        for j, (_, start, inside) in enumerate(chunk):
            local = points[inside] - start
            local = local[:, 1:] if len(patch) == 2 else local  # (n, len(patch))
            local_t = torch.from_numpy(local).to(device)
            f = torch.cat([upsampled_at(level[j:j + 1].float(), local_t, patch) for level in levels], 1).cpu()
            g = windows.gaussian[tuple(torch.from_numpy(local).t())]  # (n,)
            if sums is None:
                sums, weights = torch.zeros(len(points), f.shape[1]), torch.zeros(len(points))
            sums[inside] += g[:, None] * f
            weights[inside] += g
    if sums is None:
        raise ValueError("no voxels to read features at")
    return sums / weights[:, None]


@torch.no_grad()
def sliding_window_logits(head: nn.Module, data: np.ndarray | torch.Tensor, num_classes: int,
                          patch_size: Sequence[int], device: torch.device, tile_step_size: float = 0.5,
                          batch_size: int = BATCH_SIZE, precision: str = "amp") -> torch.Tensor:
    """logits(v) of the module docstring at every voxel of the case: (k, *spatial) fp32 on the CPU; `precision`: the
    autocast (`nnssl_plugin.precision`)."""
    windows = Windows(data, patch_size, tile_step_size)
    spatial = windows.padded.shape[1:]
    logits = torch.zeros(num_classes, *spatial)
    weights = torch.zeros(spatial)
    for i in range(0, len(windows.slicers), batch_size):
        chunk = windows.slicers[i:i + batch_size]
        with autocast(device, precision):
            out = head(windows.batch(chunk, device)).float().cpu()  # (b, k, *patch)
        for j, slicer in enumerate(chunk):
            logits[slicer] += out[j] * windows.gaussian
            weights[slicer[1:]] += windows.gaussian
    logits /= weights
    return logits[(slice(None), *windows.revert[1:])]
