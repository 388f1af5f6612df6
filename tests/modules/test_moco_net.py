"""The MoCo network: running whitening, group choice, gradient paths, and the exported state's keys."""
from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.modules.moco_net import build_moco_network, whitening_groups
from nnssl_plugin.modules.whitening import RunningWhitening


def _unet():
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=False)


def _batch(n=2, size=(8, 16, 16)):
    g = torch.Generator().manual_seed(0)
    geometry = {"start1": torch.tensor([[0, 0, 0]] * n), "start2": torch.tensor([[2, 4, -3]] * n),
                "mirror1": torch.zeros(n, 3, dtype=torch.bool), "mirror2": torch.ones(n, 3, dtype=torch.bool)}
    return torch.randn(n, 1, *size, generator=g), torch.randn(n, 1, *size, generator=g), geometry


def test_group_count_is_the_smallest_with_enough_samples():
    assert whitening_groups(64, 128, 2.0) == 1
    assert whitening_groups(80, 36, 2.0) == 5  # 16 channels per group, 36 >= 32
    with pytest.raises(ValueError, match="needs at least 2 samples .* but a batch gives only 1"):
        whitening_groups(3, 1, 2.0)


def test_running_whitening_moves_in_training_and_is_used_in_eval():
    wh = RunningWhitening(4, 1, eps=1e-5, momentum=0.5)
    x = torch.randn(8, 4, 3, 3) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    wh.train()
    wh(x, update=False)
    assert torch.equal(wh.w[0], torch.eye(4)), "update=False leaves the buffers alone"
    wh(x)
    assert not torch.equal(wh.w[0], torch.eye(4))
    wh.eval()
    y = wh(x)
    manual = ((x.movedim(1, -1).reshape(-1, 4) - wh.mean[0]) @ wh.w[0]).reshape(8, 3, 3, 4).movedim(-1, 1)
    assert torch.allclose(y, manual, atol=1e-6)


def test_every_trainable_parameter_gets_a_gradient_and_the_key_branch_none():
    net = build_moco_network(_unet(), method_config("moco_zca"), 2, (8, 16, 16), (2, 4, 4))
    v1, v2, geometry = _batch()
    out = net(v1, v2, **geometry)
    assert torch.isfinite(out["loss"]) and "loss_local" in out["terms"]
    out["loss"].backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert name.startswith(("key_encoder.", "key_projector.")), name


def test_after_step_updates_ema_and_queue():
    net = build_moco_network(_unet(), method_config("moco"), 2, (8, 16, 16), (2, 4, 4))
    v1, v2, geometry = _batch()
    out = net(v1, v2, **geometry)
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in net.key_encoder.parameters()]
    net.after_step(out)
    after = list(net.key_encoder.parameters())
    assert all(torch.allclose(a, b + 0.01) for a, b in zip(after, before))  # momentum 0.99
    assert int(net.queue.ptr) == 2 and torch.allclose(net.queue.keys[:2], out["keys"])


def test_pretrained_state_loads_strictly_into_the_planned_unet_encoder():
    net = build_moco_network(_unet(), method_config("moco"), 2, (8, 16, 16), (2, 4, 4))
    state = net.pretrained_state()
    target = _unet().state_dict()
    assert set(state) == {k for k in target if k.startswith("encoder.")}
    fresh = _unet()
    fresh.encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items()}, strict=True)


def test_patch_too_small_for_the_local_grid_is_named():
    with pytest.raises(ValueError, match=r"patch \[2, 16, 16\] is too small for the local-loss grid of 2 .* >= 3"):
        build_moco_network(_unet(), method_config("moco_zca"), 2, (2, 16, 16), (1, 4, 4))
