"""moco_regions: the global InfoNCE over aligned regions of the bottleneck (DenseCL-style, Wang et al. 2021, arXiv
2011.09157), checked against region means read directly from the encoders' maps and MoCo's loss written out."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.losses.moco import moco_infonce_and_logits
from nnssl_plugin.methods.moco.network import MocoNetwork, build_moco_network

PATCH = (8, 16, 16)  # the bottleneck is 4x coarser on every axis: (2, 4, 4)


def _unet():
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=False)


def _net(**changes):
    torch.manual_seed(0)
    return build_moco_network(_unet(), replace(method_config("moco_regions"), **changes), 2, PATCH, ranks=1)


def _batch():
    g = torch.Generator().manual_seed(1)
    geometry = {"start1": torch.tensor([[0, 0, 0], [0, 0, 0]]), "start2": torch.tensor([[0, 8, -8], [0, -8, 8]]),
                "mirror1": torch.tensor([[False, False, True], [False, False, False]]),
                "mirror2": torch.tensor([[True, False, False], [False, True, True]])}
    return torch.randn(2, 1, *PATCH, generator=g), torch.randn(2, 1, *PATCH, generator=g), geometry


def _region_means(feature, start, mirror, overlap_lo):
    """(4, c): the mean of each region of the case overlap, read from the coarse map's voxels that hold it. The test's
    boxes share all of axis 0 (one region: the mean over its 2 voxels) and half a patch on y and x (two regions of 4
    case voxels each = one bottleneck voxel, flipped on mirrored axes)."""
    rows = []
    for y in range(2):
        for x in range(2):
            index = []
            for axis, region in ((1, y), (2, x)):
                first = (overlap_lo[axis] + 4 * region - start[axis]) // 4  # the region's bottleneck voxel
                index.append(3 - first if mirror[axis] else first)
            rows.append(feature[:, :, index[0], index[1]].mean(dim=1))
    return torch.stack(rows)


def test_queries_and_keys_are_the_region_means_through_the_projectors_and_the_loss_is_mocos():
    net = _net()
    assert net.region_grid == (1, 2, 2)  # overlaps of >= 6 / 4 = 1.5 and 12 / 4 = 3 bottleneck voxels
    assert net.queue.keys.shape[0] == round(0.256 * 2 * 4 / (1 - 0.99))  # batch 2 x 4 regions per step
    v1, v2, geometry = _batch()
    with torch.no_grad():
        net.queue.enqueue(F.normalize(torch.randn(20, 128), dim=1), torch.tensor([7] * 12 + [9] * 8))
    out = net(v1, v2, **geometry, case_ids=torch.tensor([7, 3]))
    with torch.no_grad():
        qmap, kmap = net.encoder(v1)[-1], net.key_encoder(v2)[-1]  # (2, 16, 2, 4, 4)
        queries, keys = [], []
        for j in range(2):
            s1, s2 = geometry["start1"][j].tolist(), geometry["start2"][j].tolist()
            lo = [0] + [max(a, b) for a, b in zip(s1[1:], s2[1:])]  # the case overlap's start
            queries.append(_region_means(qmap[j], s1, geometry["mirror1"][j].tolist(), lo))
            keys.append(_region_means(kmap[j], s2, geometry["mirror2"][j].tolist(), lo))
        q, k = net.projector(torch.cat(queries)), net.key_projector(torch.cat(keys))  # (8, 128)
        queue = net.queue.keys
        case = torch.tensor([7] * 4 + [3] * 4)
        usable = (net.queue.case_ids[None, :] >= 0) & (net.queue.case_ids[None, :] != case[:, None])
        expected, _ = moco_infonce_and_logits(q, k, queue, 0.2, usable)
    torch.testing.assert_close(out["terms"]["loss_global"], expected, rtol=1e-5, atol=1e-6)
    assert out["keys"].shape == (8, 128) and out["case_ids"].tolist() == case.tolist()
    torch.testing.assert_close(out["keys"], k)
    assert torch.isneginf(out["logits"][:4, 1:13]).all()  # the first crop's regions: case 7's keys masked
    out["loss"].backward()
    assert all(p.grad is not None for p in net.encoder.parameters())
    net.after_step(out)
    assert (net.queue.case_ids == 3).sum() == 4 and (net.queue.case_ids == 7).sum() == 12 + 4


def test_pair_embeddings_stay_one_vector_per_crop():
    net = _net()
    v1, v2, _ = _batch()
    emb = net.eval().pair_embeddings(v1, v2)
    assert emb["q"].shape == (2, 128) and emb["k"].shape == (2, 128)


def test_the_region_term_needs_the_views_geometry_and_a_known_term():
    net = _net()
    v1, v2, _ = _batch()
    with torch.no_grad():
        net.queue.enqueue(F.normalize(torch.randn(20, 128), dim=1), torch.full((20,), 5))
    with pytest.raises(ValueError, match="needs the views' geometry"):
        net(v1, v2)
    with pytest.raises(ValueError, match="global_term must be one of crop, regions"):
        _net(global_term="patches")
    with pytest.raises(ValueError, match="region_grid"):
        MocoNetwork(_unet().encoder, 16, method_config("moco_regions"), 64)


def test_moco_regions_is_moco_v2_with_the_region_term_only():
    regions, plain = method_config("moco_regions"), method_config("moco")
    assert regions.global_term == "regions" and plain.global_term == "crop"
    assert not regions.bottleneck_whitening and regions.local_weight == 0
