"""The MoCo network: sizes derived from the batch, the skipped global loss, masking, terms that add up, the
pair_embeddings interface, gradient paths, persistent state and the exported state's keys."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.losses.moco import moco_infonce_and_logits
from nnssl_plugin.methods.moco.network import build_moco_network, first_stage


def moco_infonce(q, k, queue, temperature=0.2, negative_mask=None):
    """The loss of `moco_infonce_and_logits` alone (what the network calls, without its logits)."""
    return moco_infonce_and_logits(q, k, queue, temperature, negative_mask)[0]


def _unet():
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=False)


def _batch(n=2, size=(8, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    geometry = {"start1": torch.tensor([[0, 0, 0]] * n), "start2": torch.tensor([[2, 4, -3]] * n),
                "mirror1": torch.zeros(n, 3, dtype=torch.bool), "mirror2": torch.ones(n, 3, dtype=torch.bool)}
    return torch.randn(n, 1, *size, generator=g), torch.randn(n, 1, *size, generator=g), geometry


def _net(method="moco", **changes):
    torch.manual_seed(0)
    return build_moco_network(_unet(), replace(method_config(method), **changes), 2, (8, 16, 16),
                              ranks=1)


def _fill(net, keys=16, case=100):
    with torch.no_grad():
        net.queue.enqueue(torch.nn.functional.normalize(torch.randn(keys, net.config.out_dim), dim=1),
                          torch.full((keys,), case))


def test_sizes_follow_the_effective_batch():
    config = method_config("moco_zca")
    net = build_moco_network(_unet(), config, 2, (8, 16, 16), ranks=4)
    assert net.queue.keys.shape[0] == round(0.256 * 8 / (1 - 0.99))  # 205: 25.6 steps of 8 keys
    assert net.whitening.groups == 1  # 8 / 0.01 = 800 images behind the estimate >= 16 channels
    few = build_moco_network(_unet(), replace(config, whitening_update_weight=0.5), 2, (8, 16, 16), ranks=1)
    assert few.whitening.groups == 4  # 4 images: groups of 4 channels
    fixed = build_moco_network(_unet(), replace(config, queue_size=100), 2, (8, 16, 16), ranks=1)
    assert fixed.queue.keys.shape[0] == 100


def test_diagonal_whitening_standardises_each_channel_by_its_running_moments():
    net = build_moco_network(_unet(), replace(method_config("moco"), bottleneck_whitening=True,
                                              whitening_per_channel=True, whitening_update_weight=0.5),
                             2, (8, 16, 16), ranks=1)
    assert net.whitening.groups == 16 and net.whitening.w.shape == (16, 1, 1)
    torch.manual_seed(1)
    x = torch.randn(2, 16, 3, 4, 4) * torch.linspace(0.5, 4.0, 16)[None, :, None, None, None] + 3.0
    net.whitening.update(x)  # first update: the running moments are this batch's (bias-corrected)
    flat = x.movedim(1, -1).reshape(-1, 16).double()
    mean, var = flat.mean(0), flat.var(0, unbiased=False)
    torch.testing.assert_close(net.whitening.mean.flatten().double(), mean, rtol=1e-5, atol=1e-5)
    expected = 1 / torch.sqrt(var + net.config.whitening_eps)
    torch.testing.assert_close(net.whitening.w.flatten().double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["moco", "moco_zca"])
def test_global_loss_waits_for_real_keys_and_every_parameter_still_gets_a_gradient(method):
    net = _net(method)
    v1, v2, geometry = _batch()
    _fill(net, keys=15)  # one short of global_loss_min_keys = 16
    out = net(v1, v2, **geometry)
    assert "loss_global" not in out["terms"] and out["top1"] is None
    assert out["loss"].item() == sum(t.item() for t in out["terms"].values())  # local term, or exactly 0
    out["loss"].backward()
    for name, p in net.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    _fill(net, keys=1)
    out = net(v1, v2, **geometry)
    assert "loss_global" in out["terms"] and out["top1"] is not None


def test_terms_are_weighted_and_add_up_to_the_loss():
    net = _net("moco_zca")
    _fill(net)
    v1, v2, geometry = _batch()
    out = net(v1, v2, **geometry)
    terms = out["terms"]
    assert set(terms) == {"loss_global", "loss_local"}
    assert out["loss"].item() == (terms["loss_global"] + terms["loss_local"]).item()
    with torch.no_grad():
        skips = net.encoder(v1)
        local = net._local_loss(skips[0], first_stage(net.encoder, v2), geometry["start1"], geometry["start2"],
                                geometry["mirror1"], geometry["mirror2"])
    torch.testing.assert_close(terms["loss_local"], 0.5 * local)


def test_global_loss_masks_unfilled_slots_and_same_case_keys():
    net = _net()
    _fill(net, keys=20, case=3)  # 20 keys of case 3, 44 slots never filled
    _fill(net, keys=4, case=8)
    v1, v2, geometry = _batch()
    out = net(v1, v2, **geometry, case_ids=torch.tensor([3, 5]))
    emb = net.eval().pair_embeddings(v1, v2)
    logits = out["logits"]
    assert torch.isneginf(logits[:, 1 + 24:]).all()  # never filled
    assert torch.isneginf(logits[0, 1:21]).all() and torch.isfinite(logits[1, 1:25]).all()  # query 0 is case 3
    queue = net.queue.keys
    expected = (moco_infonce(emb["q"][:1], emb["k"][:1], queue[20:24]) +
                moco_infonce(emb["q"][1:], emb["k"][1:], queue[:24])) / 2  # the masked slots simply dropped
    torch.testing.assert_close(out["terms"]["loss_global"], expected, rtol=1e-5, atol=1e-6)


def test_pair_embeddings_interface_and_same_statistics_for_queries_and_keys():
    net = _net("moco_zca", key_update="step").train()
    for _ in range(3):  # move the running whitening
        net.pair_embeddings(*_batch(seed=1)[:2])
    v1, _, _ = _batch(seed=2)
    emb = net.pair_embeddings(v1, v1)  # key encoder = a copy of the encoder so far: same view -> same embedding
    assert set(emb) == {"q", "k", "raw", "whitened"}
    assert emb["q"].shape == emb["k"].shape == (2, 128) and emb["raw"].shape == emb["whitened"].shape == (2, 16)
    assert emb["q"].requires_grad and not emb["k"].requires_grad
    assert not emb["raw"].requires_grad and not emb["whitened"].requires_grad and emb["raw"].dtype == torch.float32
    torch.testing.assert_close(emb["q"].norm(dim=1), torch.ones(2))
    torch.testing.assert_close(emb["q"].detach(), emb["k"], rtol=1e-4, atol=1e-5)  # keys whitened as the queries
    net.eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        frozen = net.pair_embeddings(v1, v1)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()), "eval moves no statistics"
    manual = (emb["raw"] - net.whitening.mean[0]) @ net.whitening.w[0]
    torch.testing.assert_close(frozen["whitened"], manual, rtol=1e-4, atol=1e-5)
    assert _net("moco", bottleneck_whitening=False).pair_embeddings(v1, v1)["whitened"] is None  # MoCo v2 as published


def test_after_step_updates_ema_and_queue_with_case_ids():
    net = _net(key_update="step")
    v1, v2, geometry = _batch()
    out = net(v1, v2, **geometry, case_ids=torch.tensor([4, 9]))
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in net.key_encoder.parameters()]
    net.after_step(out)
    after = list(net.key_encoder.parameters())
    assert all(torch.allclose(a, b + 0.01) for a, b in zip(after, before))  # momentum 0.99
    assert int(net.queue.ptr) == 2 and torch.allclose(net.queue.keys[:2], out["keys"])
    assert net.queue.case_ids[:3].tolist() == [4, 9, -1]


def test_period_key_update_freezes_the_key_function_until_the_queue_is_full():
    net = _net("moco_zca", queue_size=8).train()  # batch 2: a period of 4 steps
    v1, v2, geometry = _batch()
    probe = _batch(seed=5)[0]
    key_encoder0 = [p.clone() for p in net.key_encoder.parameters()]
    encoder0 = [p.clone() for p in net.encoder.parameters()]
    key_stats0 = net.key_mean.clone(), net.key_w.clone()
    keys = []
    for step in range(4):
        out = net(v1, v2, **geometry, case_ids=torch.tensor([2 * step, 2 * step + 1]))
        with torch.no_grad():
            for p in net.encoder.parameters():
                p.add_(0.5)  # an optimiser step
            keys.append(net.pair_embeddings(probe, probe)["k"])  # moves only the running whitening
        net.after_step(out)
        if step < 3:  # frozen while the queue fills: same keys, same statistics, queue growing
            assert all(torch.equal(a, b) for a, b in zip(net.key_encoder.parameters(), key_encoder0))
            assert torch.equal(net.key_mean, key_stats0[0]) and torch.equal(net.key_w, key_stats0[1])
            assert net.queue.filled() == 2 * (step + 1) and int(net.steps_since_refresh) == step + 1
    assert all(torch.equal(k, keys[0]) for k in keys), "keys of one input differ within a period"
    # full after 4 steps: the EMA catches up in one move, the statistics are the running ones, the queue restarts
    caught_up = 0.99 ** 4
    for k, k0, q0 in zip(net.key_encoder.parameters(), key_encoder0, encoder0):
        torch.testing.assert_close(k, caught_up * k0 + (1 - caught_up) * (q0 + 2.0))
    assert torch.equal(net.key_mean, net.whitening.mean) and torch.equal(net.key_w, net.whitening.w)
    assert net.queue.filled() == 0 and int(net.queue.ptr) == 0 and int(net.steps_since_refresh) == 0
    with pytest.raises(ValueError, match="key_update"):
        _net(key_update="sometimes")


def test_moco_standardises_its_bottleneck_per_channel():
    net = _net("moco")
    assert net.whitening is not None and net.whitening.groups == 16 and net.config.local_weight == 0


def test_all_state_is_persistent_and_round_trips():
    net = _net("moco_zca")
    v1, v2, geometry = _batch()
    net.after_step(net(v1, v2, **geometry, case_ids=torch.tensor([0, 1])))
    state = net.state_dict()
    assert {"queue.keys", "queue.case_ids", "queue.ptr", "whitening.mean", "whitening.w", "whitening.cov",
            "whitening.step", "steps_since_refresh", "key_mean", "key_w"} <= set(state)
    fresh = _net("moco_zca")
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_pretrained_state_loads_strictly_into_the_planned_unet_encoder():
    net = _net()
    state = net.pretrained_state()
    target = _unet().state_dict()
    assert set(state) == {k for k in target if k.startswith("encoder.")}
    fresh = _unet()
    fresh.encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items()}, strict=True)


def test_patch_too_small_for_the_local_grid_is_named():
    with pytest.raises(ValueError, match=r"patch \[2, 16, 16\] is too small for the local-loss grid of 2 .* >= 3"):
        build_moco_network(_unet(), replace(method_config("moco_zca"), view_shift=0.5), 2, (2, 16, 16))


def test_under_bf16_autocast_the_whitening_stays_fp32_and_the_loss_finite():
    net = _net("moco_zca")
    _fill(net)
    v1, v2, geometry = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(v1, v2, **geometry, case_ids=torch.tensor([0, 1]))
    assert out["embeddings"]["whitened bottleneck"].dtype == torch.float32
    assert net.whitening.w.dtype == net.whitening.cov.dtype == torch.float32
    assert torch.isfinite(out["loss"])
    # Gradients are not asserted here: torch's bf16 CPU backward gave a non-finite gradient of the encoder's last conv
    # weight in 2 of 12 identical runs of plain moco as well (no whitening involved; the loss and the bottleneck's
    # gradient were finite and equal every time). The trainer skips such a step (test_pretrain_errors.py).


@pytest.mark.parametrize("method", ["moco", "moco_zca"])
def test_max_pooling_option_pools_the_whitened_or_raw_map_by_its_maximum(method):
    from nnssl_plugin.modules.whitening import apply_whitening

    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})
    net = build_moco_network(unet, replace(method_config(method), pooling="max", queue_size=64), 2, (8, 16, 16),
                             ranks=1).eval()
    x1, x2 = torch.randn(2, 1, 8, 16, 16), torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        out = net.pair_embeddings(x1, x2)
        bottleneck = net.encoder(x1)[-1]
    assert torch.equal(out["raw"], bottleneck.flatten(2).amax(2))
    if method == "moco_zca":
        whitened = apply_whitening(bottleneck, net.whitening.mean, net.whitening.w)
        assert torch.allclose(out["whitened"], whitened.flatten(2).amax(2))
    with pytest.raises(ValueError, match="pooling"):
        build_moco_network(unet, replace(method_config(method), pooling="gem"), 2, (8, 16, 16), 1)
