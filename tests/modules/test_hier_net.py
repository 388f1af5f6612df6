"""The dense hierarchical network: pyramid = the U-Net's own decoder, level reads, restoration on a fixed [0, 1]
scale, weighted terms that add up, balanced gradients at init, gradients, export."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from scipy import ndimage
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.data.local_augment import hier_local_transforms
from nnssl_plugin.export import pretrained_prefixes, transfer
from nnssl_plugin.methods.hier.network import build_hier_network
from nnssl_plugin.modules.pyramid import level_strides, unet_pyramid
from nnssl_plugin.ops.correspondence import corresponding_voxels

STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]  # anisotropic: cumulative (1,1,1), (1,2,2), (2,4,4)
UNIT = [(-3.0, 3.0)]  # restoration range of the randn test inputs (one input channel)
CT_RANGE, CT_WINDOW = (-7.8, 1.6), (-1.5, 1.6)  # phantom-like z-scored CT: clip range (air..bone), soft tissue


def _hier(size=(8, 16, 16), config=None, unit_ranges=UNIT):
    return build_hier_network(_unet(), config or method_config("hier"), 1, STRIDES, size, unit_ranges=unit_ranges)


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
    net = _hier(size)
    x = _inputs(size=size)
    x["voxels1"][0] = torch.tensor([8, 17, 13])  # the last voxel: a partial cell at every coarse level
    out = net(**x)
    assert torch.isfinite(out["loss"]) and out["terms"]["loss_restore"] > 0


def test_projection_at_voxels_equals_a_1x1x1_convolution_of_the_whole_level():
    torch.manual_seed(1)
    net = _hier()
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
    hier = _hier()
    v2v = build_hier_network(_unet(), method_config("voxel2vec"), 1, STRIDES, (8, 16, 16))
    assert hier.head.net[0].in_features == 3 * 32 and hier.restoration is not None
    assert v2v.projections is None and v2v.head.net[0].in_features == 16 + 8 + 4 and v2v.restoration is None
    out = v2v(**{k: v for k, v in _inputs().items() if not k.startswith("clean")})
    assert set(out["terms"]) == {"loss_voxel"} and torch.isfinite(out["loss"])



def test_full_rank_projections_keep_every_levels_rank_and_the_papers_head_is_as_wide_as_its_input():
    """level_dim=0: each level (4, 8, 16 channels) is projected to the widest level's 16 channels, so every
    projection is injective (rank = the level's channels; at level_dim=4 the 8- and 16-channel levels drop to rank 4);
    hidden_dim=0: Kats et al.'s head, input width → input width → input width → out_dim."""
    torch.manual_seed(0)
    full = _hier(config=replace(method_config("hier"), level_dim=0, hidden_dim=0))
    cut = _hier(config=replace(method_config("hier"), level_dim=4))
    for net, ranks in ((full, [16, 8, 4]), (cut, [4, 4, 4])):  # levels coarse to fine: 16, 8, 4 channels
        assert [int(np.linalg.matrix_rank(lin.weight.detach().numpy())) for lin in net.projections] == ranks
    widths = [m.out_features for m in full.head.net if isinstance(m, nn.Linear)]
    assert full.head.net[0].in_features == 3 * 16 and widths == [48, 48, 128]


def test_frozen_projections_stay_at_their_random_init_while_everything_else_trains():
    torch.manual_seed(0)
    net = _hier(config=replace(method_config("hier"), train_level_projections=False))
    before = [lin.weight.detach().clone() for lin in net.projections]
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(**_inputs())["loss"].backward()
    optimiser.step()
    assert all(p.grad is None and not p.requires_grad for p in net.projections.parameters())
    assert all(torch.equal(lin.weight, b) for lin, b in zip(net.projections, before))
    assert net.head.net[0].weight.grad is not None and "frozen random" in net.summary()
    assert any(k.startswith("projections.") for k in net.state_dict())  # kept in the checkpoint: a resumed run
    #                                                                    continues with the same random maps


def test_kats_restoration_window_is_what_the_plan_builder_passes():
    from nnssl_plugin.modules.network_protocol import PlanContext
    plan = PlanContext(1, 2, (8, 16, 16), tuple(STRIDES), unit_ranges=((-7.8, 1.6),),
                       restoration_ranges=((-3.8, 2.2),))
    plans_window = type(_hier()).from_plan(_unet(), method_config("hier"), plan)
    kats = type(_hier()).from_plan(_unet(), replace(method_config("hier"), restoration_window="kats"), plan)
    assert (plans_window.unit_lo.item(), plans_window.unit_hi.item()) == pytest.approx((-7.8, 1.6))
    assert (kats.unit_lo.item(), kats.unit_hi.item()) == pytest.approx((-3.8, 2.2))


@pytest.mark.parametrize("field,value", [("shuffle", "paper"), ("level_dim", -1), ("pairs_per_case", 0),
                                         ("restoration_window", "hu")])
def test_a_bad_option_is_refused_in_one_line_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        replace(method_config("hier"), **{field: value})

def _with_input_as_finest_level(net):
    """Make the finest pyramid level carry the network input in channel 0 (the restoration head then sees x)."""
    finest = net.pyramid

    def pyramid(x):
        levels = finest(x)
        return [*levels[:-1], torch.cat([x, torch.zeros_like(levels[-1][:, 1:])], dim=1)]

    net.pyramid = pyramid
    return net


def test_restoration_predicts_the_clean_crop_mapped_by_the_given_range():
    lo, hi = -10.0, 10.0  # wide: the randn inputs are never clipped, so u is exactly affine here
    net = _with_input_as_finest_level(_hier(unit_ranges=[(lo, hi)]))
    net.restoration.weight.data.zero_()
    net.restoration.weight.data[0, 0] = 1.0 / (hi - lo)  # restored = u(view) = (view - lo) / (hi - lo)
    net.restoration.bias.data.fill_(-lo / (hi - lo))
    x = _inputs()
    identity = net(**{**x, "clean1": x["view1"], "clean2": x["view2"]})
    assert identity["terms"]["loss_restore"].item() == pytest.approx(0.0, abs=1e-10)
    corrupted = net(**x)
    u = lambda a: np.clip((np.concatenate(a) - lo) / (hi - lo), 0, 1)  # noqa: E731
    expected = 10.0 * np.mean((u([x["view1"], x["view2"]]) - u([x["clean1"], x["clean2"]])) ** 2)
    assert corrupted["terms"]["loss_restore"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("lo,hi", [(-1.0, 0.5), (-7.8, 1.6)])
def test_restoration_target_uses_the_given_range_not_the_crops_min_and_max(lo, hi):
    net = _with_input_as_finest_level(_hier(unit_ranges=[(lo, hi)]))
    net.restoration.weight.data.zero_()
    net.restoration.bias.data.fill_(0.25)  # a constant prediction: the loss reads the target directly
    x = _inputs()
    clean = np.concatenate([x["clean1"], x["clean2"]])
    expected = 10.0 * np.mean((0.25 - np.clip((clean - lo) / (hi - lo), 0, 1)) ** 2)  # clips at lo and hi
    assert net(**x)["terms"]["loss_restore"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["hier", "voxel2vec"])
def test_logged_terms_are_the_weighted_contributions_and_add_up_to_the_loss(method):
    config = replace(method_config(method), restoration_weight=3.0) if method == "hier" else method_config(method)
    net = _hier(config=config)
    out = net(**_inputs())
    assert torch.equal(out["loss"], sum(out["terms"].values()))
    if method == "hier":
        mse = torch.nn.functional.mse_loss(  # the MSE alone, recomputed from the head's output
            net.restoration(net.pyramid(torch.cat([_inputs()["view1"], _inputs()["view2"]]))[-1]),
            ((torch.cat([_inputs()["clean1"], _inputs()["clean2"]]) + 3) / 6).clamp(0, 1))
        torch.testing.assert_close(out["terms"]["loss_restore"], 3.0 * mse)


def test_hier_without_unit_ranges_is_refused_and_voxel2vec_needs_none():
    with pytest.raises(ValueError, match="unit_ranges=nnssl_plugin.intensity.unit_ranges"):
        _hier(unit_ranges=None)
    with pytest.raises(ValueError, match="one \\(lo, hi\\) range with lo < hi per input channel"):
        _hier(unit_ranges=[(1.0, -1.0)])
    assert _hier(config=method_config("voxel2vec"), unit_ranges=None).restoration is None


def test_unit_ranges_follow_the_device_and_stay_out_of_the_checkpoint():
    net = _hier(unit_ranges=[(-7.8, 1.6)])
    assert not any(k.startswith("unit_") for k in net.state_dict())
    torch.testing.assert_close(net.unit_lo, torch.tensor([-7.8]))
    torch.testing.assert_close(net.unit_hi, torch.tensor([1.6]))
    assert {name for name, _ in net.named_buffers()} >= {"unit_lo", "unit_hi"}


def _phantom_case(shape, rng) -> np.ndarray:
    """z-scored CT-like volume: air at the clip range's low end, fat, organs, bone at its high end, noise."""
    lo, hi = CT_RANGE
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = np.full(shape, lo, np.float32)
    body = (y / 0.9) ** 2 + (x / 0.8) ** 2 < 1
    vol[body] = -0.9
    for _ in range(4):
        c, r = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.15, 0.35)
        vol[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r) & body] = rng.uniform(0.2, 0.6)
    vol[((y + 0.6) ** 2 + x ** 2 < 0.02) & body] = hi
    vol = ndimage.gaussian_filter(vol, 0.6) + 0.1 * rng.standard_normal(shape)
    return np.clip(vol, lo, hi).astype(np.float32)


def _phantom_batch(rng, n=2, patch=(16, 32, 32), case=(24, 48, 48), v=256) -> dict:
    """Two overlapping crops per case, corrupted like `hier`'s views, with their corresponding voxels."""
    corrupt = hier_local_transforms(window=[CT_WINDOW])
    patch, case = np.array(patch), np.array(case)
    out = {k: [] for k in ("view1", "view2", "clean1", "clean2", "voxels1", "voxels2", "voxel_batch")}
    for j in range(n):
        vol = _phantom_case(tuple(case), rng)
        start1 = rng.integers(0, case - patch + 1)
        start2 = np.clip(start1 + rng.integers(-patch // 2, patch // 2 + 1), 0, case - patch)
        for k, start in ((1, start1), (2, start2)):
            crop = torch.from_numpy(vol[tuple(slice(s, s + p) for s, p in zip(start, patch))][None].copy())
            out[f"clean{k}"].append(crop.clone())
            out[f"view{k}"].append(corrupt(image=crop)["image"])
        a, b = corresponding_voxels(start1, start2, [False] * 3, [False] * 3, patch, v, rng=rng)
        out["voxels1"].append(torch.from_numpy(a))
        out["voxels2"].append(torch.from_numpy(b))
        out["voxel_batch"].append(torch.full((len(a),), j))
    return {k: torch.stack(x) if k.startswith(("view", "clean")) else torch.cat(x) for k, x in out.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_restoration_and_contrastive_gradients_on_the_unet_are_within_10x_at_init(seed):
    """Kats et al.'s ×10 on the [0, 1] scale: measured ratio restore / voxel ≈ 2-4 here (0.6-2 with a 5-stage
    8..80-feature U-Net); on z-scored intensities it was ~23×."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    net = build_hier_network(_unet(), method_config("hier"), 1, STRIDES, (16, 32, 32), unit_ranges=[CT_RANGE])
    out = net(**_phantom_batch(np.random.default_rng(seed)))
    unet_params = [p for k, p in net.named_parameters() if k.startswith(("encoder.", "decoder.")) and p.requires_grad]
    norms = {}
    for name in ("loss_voxel", "loss_restore"):
        grads = torch.autograd.grad(out["terms"][name], unet_params, retain_graph=True)
        norms[name] = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
    assert 0.1 < norms["loss_restore"] / norms["loss_voxel"] < 10.0, norms


def test_gradients_reach_encoder_decoder_projections_and_heads_but_not_seg_layers():
    net = _hier()
    net(**_inputs())["loss"].backward()
    for name, p in net.named_parameters():
        if name.startswith("decoder.seg_layers"):
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pretrained_state_loads_into_a_fresh_unet_through_the_export_prefixes():
    net = _hier()
    state = net.pretrained_state()
    assert not any(k.startswith(("decoder.seg_layers", "decoder.encoder", "projections", "head")) for k in state)
    target = _unet()
    loaded, report = transfer(target.state_dict(), state, pretrained_prefixes(target, encoder_only=False))
    target.load_state_dict(loaded)
    for key, value in state.items():
        assert torch.equal(target.state_dict()[key], value)
    assert report.fresh and all(k.startswith("decoder.seg_layers") for k in report.fresh)


def test_monitor_embeddings_name_every_level_and_the_concatenation():
    net = _hier()
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
