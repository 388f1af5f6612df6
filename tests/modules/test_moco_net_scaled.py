"""The MoCo network with views of different scales: the local loss aligns its regions with the views' box sizes,
and the patch-too-small check follows the grid and the scale range."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.losses.local import local_region_infonce
from nnssl_plugin.methods.moco.network import build_moco_network, first_stage
from nnssl_plugin.ops.regions import aligned_region_descriptors, min_patch_for_grid

PATCH = (12, 16, 16)


def _unet():
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=False)


def _scaled_batch(n=2):
    g = torch.Generator().manual_seed(0)
    geometry = {"start1": torch.tensor([[0, 0, 0]] * n), "start2": torch.tensor([[3, 5, -2]] * n),
                "size1": torch.tensor([[16.0, 22.0, 22.0]] * n), "size2": torch.tensor([[9.0, 12.0, 12.0]] * n),
                "mirror1": torch.zeros(n, 3, dtype=torch.bool), "mirror2": torch.ones(n, 3, dtype=torch.bool)}
    return torch.randn(n, 1, *PATCH, generator=g), torch.randn(n, 1, *PATCH, generator=g), geometry


def _net(**changes):
    torch.manual_seed(0)
    config = replace(method_config("moco_zca"), local_grid=3, view_scale=(0.7, 1.4), **changes)
    return build_moco_network(_unet(), config, 2, PATCH, ranks=1)


def test_the_local_term_averages_the_regions_the_box_sizes_define():
    net = _net()
    v1, v2, geometry = _scaled_batch()
    out = net(v1, v2, **geometry)
    assert set(out["terms"]) == {"loss_local"}  # the queue is empty: no global term yet
    with torch.no_grad():
        f1, f2 = first_stage(net.encoder, v1), first_stage(net.encoder, v2)
        g = {k: v.tolist() for k, v in geometry.items()}
        d1, d2 = aligned_region_descriptors(f1, f2, g["start1"], g["start2"], g["mirror1"], g["mirror2"], 3,
                                            size1=g["size1"], size2=g["size2"])  # (n, 27, c)
        expected = local_region_infonce(F.normalize(d1.flatten(0, 1), dim=1), F.normalize(d2.flatten(0, 1), dim=1))
        unscaled = net._local_loss(f1, f2, geometry["start1"], geometry["start2"], geometry["mirror1"],
                                   geometry["mirror2"])
    torch.testing.assert_close(out["terms"]["loss_local"], 0.5 * expected)
    assert not torch.allclose(unscaled, expected)  # the sizes do change the regions
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in net.encoder.parameters() if p.grad is not None)


def test_one_box_size_without_the_other_is_refused():
    net = _net()
    v1, v2, geometry = _scaled_batch()
    del geometry["size2"]
    with pytest.raises(ValueError, match=r"both views' box sizes \(size1, size2\) or neither"):
        net(v1, v2, **geometry)


def test_scaled_patch_check_follows_the_grid_and_the_scale_range():
    config = replace(method_config("moco_zca"), local_grid=3, view_scale=(0.7, 1.4), view_shift=0.5)
    need = min_patch_for_grid(3, (0.7, 1.4))
    assert need > 2 * 3 - 1  # scaling costs overlap
    build_moco_network(_unet(), config, 2, (need, 16, 16), ranks=1)
    with pytest.raises(ValueError, match=rf"patch \[{need - 1}, 16, 16\] is too small for the local-loss grid of 3 "
                                         rf"regions per axis: the views' overlap \(at least half a patch, less with "
                                         rf"view_scale \(0.7, 1.4\)\) needs every axis >= {need} voxels"):
        build_moco_network(_unet(), config, 2, (need - 1, 16, 16), ranks=1)


@pytest.mark.parametrize("grid", [3, 4])
def test_the_phantom_cpu_patch_supports_a_finer_grid_with_scaling(grid):
    assert min((16, 48, 48)) >= min_patch_for_grid(grid, (0.7, 1.4))  # 3d_cpu: first stage at full resolution
