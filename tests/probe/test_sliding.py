"""The sliding window: its logits equal nnU-Net's predictor's for the same head (3D, 2D, an image smaller than the
patch), and a linear head's logits equal the linear map of the voxel features."""
from __future__ import annotations

import pytest
import torch
from probe_synthetic import tiny_unet

from nnssl_plugin.modules.probe import LinearProbeNetwork
from nnssl_plugin.modules.probe_levels import read_levels
from nnssl_plugin.probe.sliding import Windows, features_at_voxels, probe_predictor, sliding_window_logits

CPU = torch.device("cpu")
CASES = [("plain3d", (8, 16, 16), (12, 30, 37)), ("plain3d", (8, 16, 16), (6, 30, 20)),
         ("plain2d", (16, 16), (3, 30, 37)), ("resenc3d", (8, 16, 16), (12, 30, 37))]


def _head(kind: str, levels: str = "decoder") -> LinearProbeNetwork:
    torch.manual_seed(0)
    head = LinearProbeNetwork(tiny_unet(kind), 3, levels)
    for probe in head.probes:
        torch.nn.init.normal_(probe.weight, std=0.3)
    return head.eval()


def _weight_map(data: torch.Tensor, patch) -> torch.Tensor:
    """Σ_w g_w(v): how much Gaussian weight the windows put on each voxel."""
    windows = Windows(data, patch)
    weights = torch.zeros(windows.padded.shape[1:])
    for slicer in windows.slicers:
        weights[slicer[1:]] += windows.gaussian
    return weights[tuple(windows.revert[1:])]


@pytest.mark.parametrize("kind,patch,shape", CASES)
def test_logits_equal_nnunets_predictor(kind, patch, shape):
    head = _head(kind)
    data = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    ours = sliding_window_logits(head, data, 3, patch, CPU)
    theirs = probe_predictor(head, patch, 3, CPU).predict_sliding_window_return_logits(data).float()
    assert ours.shape == theirs.shape == (3, *shape)
    # the predictor sums in fp16: where only the far corners of windows reach (Gaussian weights ~1e-5 of the
    # centre's, below fp16's normal range) its sums lose their digits; everywhere else (> 94 % here) the two agree
    reached = _weight_map(data, patch) > 1e-4
    assert reached.float().mean() > 0.9
    torch.testing.assert_close(ours[:, reached], theirs[:, reached], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("kind,patch,shape", CASES)
@pytest.mark.parametrize("levels", ["encoder", "decoder"])
def test_a_linear_heads_logits_are_the_linear_map_of_the_voxel_features(kind, patch, shape, levels):
    head = _head(kind, levels)
    data = torch.randn(1, *shape, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    voxels = torch.stack([torch.randint(0, s, (50,), generator=g) for s in shape], 1).numpy()
    features = features_at_voxels(lambda x: read_levels(head.unet, x, levels), data, voxels, patch, CPU)
    weight = torch.cat([p.weight.flatten(1) for p in head.probes], 1)  # (k, Σ c_l)
    bias = sum(p.bias for p in head.probes)
    logits = sliding_window_logits(head, data, 3, patch, CPU)[(slice(None), *voxels.T)].t()  # (v, k)
    torch.testing.assert_close(features @ weight.t() + bias, logits, rtol=1e-4, atol=1e-4)
