"""The dense hierarchical network: pyramid = the U-Net's own decoder, level reads, restoration, gradients, export."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.export import pretrained_prefixes, transfer
from nnssl_plugin.modules.hier_net import build_hier_network
from nnssl_plugin.modules.pyramid import level_strides, unet_pyramid

STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]  # anisotropic: cumulative (1,1,1), (1,2,2), (2,4,4)


def _unet(deep_supervision=False):
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, STRIDES, 2, 3, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=deep_supervision)


def _inputs(n=2, size=(8, 16, 16), v=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    voxels = torch.stack([torch.randint(0, s, (n * v,), generator=g) for s in size], dim=1)
    return {"view1": torch.randn(n, 1, *size, generator=g), "view2": torch.randn(n, 1, *size, generator=g),
            "clean1": torch.randn(n, 1, *size, generator=g), "clean2": torch.randn(n, 1, *size, generator=g),
            "voxels1": voxels, "voxels2": voxels.flip(0), "voxel_batch": torch.arange(n).repeat_interleave(v)}


def test_pyramid_is_the_unets_own_decoder_pass():
    torch.manual_seed(0)
    unet = _unet(deep_supervision=True)
    x = torch.randn(2, 1, 8, 16, 16)
    levels = unet_pyramid(unet.encoder, unet.decoder, x)
    seg = unet(x)  # deep supervision: finest first
    for s, level in enumerate(levels[1:]):  # decoder stage s feeds seg_layers[s]
        torch.testing.assert_close(unet.decoder.seg_layers[s](level), seg[len(levels) - 2 - s])


def test_level_strides_match_the_level_shapes():
    unet = _unet()
    levels = unet_pyramid(unet.encoder, unet.decoder, torch.randn(1, 1, 8, 16, 12))
    strides = level_strides(STRIDES, 3)
    assert strides == [(2, 4, 4), (1, 2, 2), (1, 1, 1)]
    for level, stride in zip(levels, strides):
        assert tuple(level.shape[2:]) == tuple(p // s for p, s in zip((8, 16, 12), stride))


def test_a_patch_the_strides_do_not_divide_is_padded_not_a_crash():
    size = (9, 18, 14)  # bottleneck stride (2, 4, 4) divides none of them
    net = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, size)
    x = _inputs(size=size)
    x["voxels1"][0] = torch.tensor([8, 17, 13])  # the last voxel: a partial cell at every coarse level
    out = net(**x)
    assert torch.isfinite(out["loss"]) and out["terms"]["loss_restore"] > 0


def test_projection_at_voxels_equals_a_1x1x1_convolution_of_the_whole_level():
    torch.manual_seed(1)
    net = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, (8, 16, 16))
    x = _inputs()
    levels = net.pyramid(x["view1"])
    got = net.level_features(levels, x["voxel_batch"], x["voxels1"])
    for i, (level, stride) in enumerate(zip(levels, net.strides)):
        lin = net.projections[i]
        conv = nn.Conv3d(lin.in_features, lin.out_features, 1)
        conv.weight.data = lin.weight.data.view(*lin.weight.shape, 1, 1, 1)
        conv.bias.data = lin.bias.data
        full = conv(level)  # (n, 32, *s)
        cells = torch.minimum(x["voxels1"] // torch.tensor(stride), torch.tensor(level.shape[2:]) - 1)
        expected = full[x["voxel_batch"], :, cells[:, 0], cells[:, 1], cells[:, 2]]
        torch.testing.assert_close(got[i], expected, rtol=1e-5, atol=1e-6)


def test_hier_balances_levels_and_voxel2vec_concatenates_raw_features():
    hier = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, (8, 16, 16))
    v2v = build_hier_network(_unet(), method_config("voxel2vec"), 1, STRIDES, (8, 16, 16))
    assert hier.head.net[0].in_features == 3 * 32 and hier.restoration is not None
    assert v2v.projections is None and v2v.head.net[0].in_features == 16 + 8 + 4 and v2v.restoration is None
    out = v2v(**{k: v for k, v in _inputs().items() if not k.startswith("clean")})
    assert set(out["terms"]) == {"loss_voxel"} and torch.isfinite(out["loss"])


def test_restoration_loss_is_zero_for_the_identity_corruption_and_the_mse_otherwise():
    net = build_hier_network(_unet(), replace(method_config("hier"), restoration_weight=10.0), 1, STRIDES,
                             (8, 16, 16))
    finest = net.pyramid

    def pyramid_with_input_as_finest(x):  # the finest level carries the input in channel 0
        levels = finest(x)
        return [*levels[:-1], torch.cat([x, torch.zeros_like(levels[-1][:, 1:])], dim=1)]

    net.pyramid = pyramid_with_input_as_finest
    net.restoration.weight.data.zero_()
    net.restoration.weight.data[0, 0] = 1.0
    net.restoration.bias.data.zero_()
    x = _inputs()
    identity = net(**{**x, "clean1": x["view1"], "clean2": x["view2"]})
    assert identity["terms"]["loss_restore"].item() == 0.0
    corrupted = net(**x)
    expected = np.mean((np.concatenate([x["view1"], x["view2"]]) - np.concatenate([x["clean1"], x["clean2"]])) ** 2)
    assert corrupted["terms"]["loss_restore"].item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(corrupted["loss"], corrupted["terms"]["loss_voxel"]
                               + 10.0 * corrupted["terms"]["loss_restore"])


def test_gradients_reach_encoder_decoder_projections_and_heads_but_not_seg_layers():
    net = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, (8, 16, 16))
    net(**_inputs())["loss"].backward()
    for name, p in net.named_parameters():
        if name.startswith("decoder.seg_layers"):
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pretrained_state_loads_into_a_fresh_unet_through_the_export_prefixes():
    net = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, (8, 16, 16))
    state = net.pretrained_state()
    assert not any(k.startswith(("decoder.seg_layers", "decoder.encoder", "projections", "head")) for k in state)
    target = _unet()
    loaded, report = transfer(target.state_dict(), state, pretrained_prefixes(target, encoder_only=False))
    target.load_state_dict(loaded)
    for key, value in state.items():
        assert torch.equal(target.state_dict()[key], value)
    assert report.fresh and all(k.startswith("decoder.seg_layers") for k in report.fresh)


def test_monitor_embeddings_name_every_level_and_the_concatenation():
    net = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, (8, 16, 16))
    out = net(**_inputs())
    assert list(out["embeddings"]) == ["level 0 (bottleneck)", "level 1 (decoder 1)", "level 2 (decoder 2)",
                                       "concatenated"]
    assert out["embeddings"]["concatenated"].shape[1] == 96 and 0.0 <= out["top1"] <= 1.0


def test_linear_probe_reads_the_same_pyramid_as_the_decoders_own_stage_outputs():
    from nnssl_plugin.modules.probe import LinearProbeNetwork

    torch.manual_seed(2)
    unet = _unet()
    x = torch.randn(1, 1, 8, 16, 16)
    captured = []
    handles = [s.register_forward_hook(lambda m, i, o: captured.append(o)) for s in unet.decoder.stages]
    unet(x)  # nnU-Net's own decoder pass
    for h in handles:
        h.remove()
    levels = LinearProbeNetwork(unet, 3, "decoder").features(x)
    assert len(levels) == 1 + len(captured)
    for got, expected in zip(levels[1:], captured):
        torch.testing.assert_close(got, expected)
