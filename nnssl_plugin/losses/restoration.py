"""Restoration loss of `hier` (Kats, Hirsch, Heinrich, ISBI 2024, arXiv 2401.06473) on a fixed intensity scale.

Kats et al. reconstruct the un-corrupted crop from the corrupted one with an MSE on CT clipped to [−175, 250] HU and
scaled to [0, 1]. nnU-Net's network input is z-scored instead (CT: clip to the foreground's [0.5, 99.5]
percentiles, then (x − mean) / sd), where one intensity step costs (hi − lo)² times more (~40–90× on CT). Both the
prediction target and the comparison therefore use the channel's fixed range (lo, hi) in network units (from the
plans, `nnssl_plugin.intensity.unit_ranges`), never the crop's own min/max:

    u(x)_c = clip((x_c − lo_c) / (hi_c − lo_c), 0, 1)
    L      = mean over (n, c, voxels) of (r − u(clean))²      r: the restoration head's output (predicts u directly)

Computed in fp32 under autocast.

Shapes: restored, clean (n, c, *spatial); lo, hi (c,); returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit_range(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """u(x) = clip((x − lo) / (hi − lo), 0, 1) per channel; x (n, c, *spatial), lo and hi (c,)."""
    if lo.shape != (x.shape[1],) or hi.shape != (x.shape[1],):
        raise ValueError(f"expected one (lo, hi) per input channel ({x.shape[1]}), found {tuple(lo.shape)} and "
                         f"{tuple(hi.shape)}; pass nnssl_plugin.intensity.unit_ranges(plans, configuration)")
    shape = (1, -1) + (1,) * (x.dim() - 2)
    lo, hi = lo.view(shape).to(torch.float32), hi.view(shape).to(torch.float32)  # (1, c, 1, ..., 1)
    return ((x.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)


def restoration_mse(restored: torch.Tensor, clean: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
                    ) -> torch.Tensor:
    """MSE between the restoration head's output and the clean crop mapped to [0, 1] by its channel's range."""
    if restored.shape != clean.shape:
        raise ValueError(f"restoration output {tuple(restored.shape)} and clean crop {tuple(clean.shape)} differ; "
                         f"crop the output to the patch before the loss")
    with torch.autocast(device_type=restored.device.type, enabled=False):
        return F.mse_loss(restored.float(), to_unit_range(clean, lo, hi))
