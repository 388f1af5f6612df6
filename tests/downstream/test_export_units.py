"""Export pieces against hand-made state dicts; schedule and whitening hook against closed forms."""
from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export import first_architecture_difference, pretrained_prefixes, transfer
from nnssl_plugin.export_sources import read_source
from nnssl_plugin.modules.whitening import attach_bottleneck_whitening
from nnssl_plugin.schedules import warmup_poly_lr


def _unet(features=(4, 8, 16)):
    return PlainConvUNet(1, 3, list(features), nn.Conv3d, 3, [1, 2, 2], 2, 3, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})


def test_prefixes_come_from_the_network_class():
    assert pretrained_prefixes(_unet(), encoder_only=True) == ["encoder.stages"]
    assert pretrained_prefixes(_unet(), encoder_only=False) == ["decoder.stages", "decoder.transpconvs",
                                                                "encoder.stages"]


def test_transfer_copies_encoder_and_its_decoder_alias_and_reports_the_rest():
    source, target = _unet(), _unet()
    pretrained = {k: v for k, v in source.state_dict().items() if k.startswith("encoder.")}
    state, report = transfer(target.state_dict(), pretrained, ["encoder.stages"])
    target.load_state_dict(state, strict=True)
    for key, value in pretrained.items():
        assert torch.equal(target.state_dict()[key], value)
        assert torch.equal(target.state_dict()["decoder." + key], value)
    assert len(report.transferred) == len(pretrained) and report.skipped == []
    assert all(k.startswith(("decoder.", "seg")) for k in report.fresh)


def test_transfer_names_both_shapes_on_mismatch():
    pretrained = {k: v for k, v in _unet((4, 8, 32)).state_dict().items() if k.startswith("encoder.")}
    with pytest.raises(NnsslError, match=r"shape \(32, 8, 3, 3, 3\) but the target network needs \(16, 8, 3, 3, 3\)"):
        transfer(_unet().state_dict(), pretrained, ["encoder.stages"])


def test_first_architecture_difference_names_the_field():
    a = {"network_class_name": "X", "arch_kwargs": {"features_per_stage": [8, 16], "strides": [[1, 1], [2, 2]]}}
    b = {"network_class_name": "X", "arch_kwargs": {"features_per_stage": [8, 16], "strides": [[1, 1], [1, 2]]}}
    assert first_architecture_difference(a, a) is None
    assert first_architecture_difference(a, b) == "arch_kwargs.strides"


def test_reads_a_mic_dkfz_nnssl_checkpoint(tmp_path):
    net = _unet()
    checkpoint = {"network_weights": net.state_dict(), "nnssl_adaptation_plan": {
        "architecture_plans": {"arch_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                               "arch_kwargs": {"n_stages": 3}},
        "pretrain_num_input_channels": 1, "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stages.0",
        "keys_to_in_proj": [], "key_to_lpe": None, "recommended_downstream_patchsize": [16, 32, 32]}}
    torch.save(checkpoint, tmp_path / "nnssl.pth")
    source = read_source(tmp_path / "nnssl.pth")
    assert source.method == "nnssl" and not source.encoder_only and source.num_input_channels == 1
    assert source.architecture["arch_kwargs"] == {"n_stages": 3}


def test_warmup_then_poly():
    assert warmup_poly_lr(0, 100, 0.01, 5) == pytest.approx(0.002)
    assert warmup_poly_lr(4, 100, 0.01, 5) == pytest.approx(0.01)
    assert warmup_poly_lr(5, 100, 0.01, 5) == pytest.approx(0.01)
    assert warmup_poly_lr(52, 100, 0.01, 5) == pytest.approx(0.01 * (1 - 47 / 95) ** 0.9)
    assert warmup_poly_lr(100, 100, 0.01, 5) == 0.0


def test_whitening_sits_between_encoder_and_decoder():
    torch.manual_seed(0)
    net = attach_bottleneck_whitening(_unet(), groups=2, channels_per_group=8)
    with torch.no_grad():
        net.bottleneck_whitening.mean.normal_()
        net.bottleneck_whitening.w.normal_()
    x = torch.randn(2, 1, 8, 16, 16)
    whitened_bottleneck = net.encoder(x)[-1]  # the hook whitens the encoder's last output
    net_plain = _unet()
    net_plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("bottleneck_")})
    plain = net_plain.encoder(x)
    b = plain[-1]
    flat = b.movedim(1, -1).reshape(-1, 16)
    manual = torch.cat([(flat[:, g * 8:(g + 1) * 8] - net.bottleneck_whitening.mean[g]) @ net.bottleneck_whitening.w[g]
                        for g in range(2)], dim=1).reshape(2, *b.shape[2:], 16).movedim(-1, 1)
    assert torch.allclose(whitened_bottleneck, manual, atol=1e-5)
    assert torch.allclose(net(x), net_plain.decoder([*plain[:-1], manual]), atol=1e-5)


def test_what_nnunets_own_nnssl_route_keeps_is_stated_per_export():
    """That route's trainers load key_to_encoder and key_to_stem only (tests/downstream/test_nnunet_nnssl_route.py
    runs it): a dense export's decoder and moco_zca's whitening are dropped; its planners write 3d_fullres only."""
    from nnssl_plugin.export import nnunet_route_keeps, route_line

    dense = pretrained_prefixes(_unet(), encoder_only=False)
    route = nnunet_route_keeps(dense, "encoder.stages", "encoder.stages.0", False, "3d_cpu")
    assert route["loads"] == ["encoder.stages"] and route["drops"] == ["decoder.stages", "decoder.transpconvs"]
    assert route_line(route) == ("nnU-Net's own nnssl route (nnUNetv2_train_pretrained) loads encoder.stages and "
                                 "drops decoder.stages, decoder.transpconvs; its planners write 3d_fullres only "
                                 "(use this export's plans directly with -p) (docs/NNSSL_ROUTE.md)")
    resenc = nnunet_route_keeps(["encoder.stages", "encoder.stem"], "encoder.stages", "encoder.stem", True,
                                "3d_fullres")
    assert resenc["loads"] == ["encoder.stages", "encoder.stem"] and resenc["drops"] == ["whitening"]
    assert route_line(resenc).endswith("loads encoder.stages, encoder.stem and drops moco_zca's whitening "
                                       "(docs/NNSSL_ROUTE.md)")
