"""MIC-DKFZ nnssl checkpoints both ways, on fixtures laid out as nnssl writes them (read from nnssl's source:
github.com/MIC-DKFZ/nnssl at 19b10663833855d1999846f1ea4b6a69306d4f27 for the checkpoint and its
`nnssl_adaptation_plan`, 03f2cb88bfbbefea2956a138d2e2ada70c87999a for the ResEncL preset; nnU-Net's nnssl side at
887c02ee78088455497b47b4d0348598fc18f231): the architecture names resolved, class-valued kwargs compared by class,
a 1-channel stem adapted to N channels, and an export carrying what nnssl and nnU-Net's nnssl side read."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.nnssl_format import (adapt_input_channels, canonical_architecture, in_proj_keys,
                                       resolve_architecture)

LAB = "Dataset991_PhantomBTCV"
# nnssl's ResEncL preset (architecture_registry.get_res_enc_l at 03f2cb88…), written out here from the source
RESENC_L_FROM_NNSSL = {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                       "kernel_sizes": [[3, 3, 3]] * 6, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2],
                                                                     [2, 2, 2], [2, 2, 2]],
                       "n_blocks_per_stage": [1, 3, 4, 6, 6, 6], "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
                       "conv_bias": True, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                       "dropout_op_kwargs": None, "nonlin_kwargs": {"inplace": True}}


def test_the_resencl_preset_is_the_residual_encoder_unet_it_denotes():
    arch = resolve_architecture({"arch_class_name": "ResEncL", "arch_kwargs": None,
                                 "arch_kwargs_requiring_import": None})
    assert arch["network_class_name"] == "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    kwargs = canonical_architecture(arch)["arch_kwargs"]
    assert {k: kwargs[k] for k in RESENC_L_FROM_NNSSL} == RESENC_L_FROM_NNSSL
    assert (kwargs["conv_op"], kwargs["norm_op"], kwargs["nonlin"]) == (
        "torch.nn.modules.conv.Conv3d", "torch.nn.modules.instancenorm.InstanceNorm3d",
        "torch.nn.modules.activation.LeakyReLU")


def test_short_names_resolve_and_class_strings_compare_by_class():
    nnssl = resolve_architecture({"arch_class_name": "ResidualEncoderUNet",
                                  "arch_kwargs": {"nonlin": "torch.nn.modules.activation.LeakyReLU", "n_stages": 2},
                                  "arch_kwargs_requiring_import": ["nonlin"]})
    planned = {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
               "arch_kwargs": {"nonlin": "torch.nn.LeakyReLU", "n_stages": 2}, "_kw_requires_import": ["nonlin"]}
    assert canonical_architecture(nnssl) == canonical_architecture(planned)


@pytest.mark.parametrize("name", ["PrimusM", "NoSkipResEncL"])
def test_architectures_nnunet_plans_cannot_describe_are_refused_in_one_line(name):
    with pytest.raises(NnsslError, match=f"'{name}' is not a U-Net nnU-Net's plans describe"):
        resolve_architecture({"arch_class_name": name, "arch_kwargs": None})


def test_a_one_channel_stem_on_a_repeated_image_gives_the_pretrained_response():
    w = torch.randn(4, 1, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    adapted = adapt_input_channels(w, 3)
    assert adapted.shape == (4, 3, 3, 3, 3)
    torch.testing.assert_close(F.conv3d(x.repeat(1, 3, 1, 1, 1), adapted), F.conv3d(x, w))
    with pytest.raises(NnsslError, match="only a 1-channel pretraining"):
        adapt_input_channels(adapted, 2)


def _nnssl_checkpoint(path, state: dict, arch: dict, channels: int = 1) -> None:
    """A checkpoint as nnssl's AbstractBaseTrainer.save_checkpoint writes it (top-level keys and adaptation plan),
    with the dynamic architecture form nnssl's trainers write (short class name, class kwargs as dotted strings)."""
    kwargs = dict(arch["arch_kwargs"])
    kwargs["nonlin"] = "torch.nn.modules.activation.LeakyReLU"  # how nnssl serialises nn.LeakyReLU
    plan = {"architecture_plans": {"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": kwargs,
                                   "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"]},
            "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                              "configurations": {"onemmiso": {"spacing": [1, 1, 1], "patch_size": [160, 160, 160],
                                                              "normalization_schemes": ["ZScoreNormalization"]}}},
            "pretrain_num_input_channels": channels, "recommended_downstream_patchsize": (160, 160, 160),
            "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stem",
            "keys_to_in_proj": ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
            "key_to_lpe": None}
    torch.save({"network_weights": state, "optimizer_state": {}, "grad_scaler_state": None, "logging": {},
                "_best_ema": None, "current_epoch": 1000, "init_args": {}, "trainer_name": "BaseMAETrainer",
                "nnssl_adaptation_plan": plan}, path)


@pytest.mark.slow
def test_an_nnssl_checkpoint_exports_and_the_export_carries_what_nnssl_reads(world_resenc, tmp_path, monkeypatch):
    from nnssl_plugin.export import build_planned_network

    for name, value in world_resenc.env.items():
        if name.startswith("nnUNet_"):
            monkeypatch.setenv(name, value)
    plans = json.loads((world_resenc.preprocessed / LAB / "nnUNetResEncUNetMPlans.json").read_text())
    dataset_json = json.loads((world_resenc.preprocessed / LAB / "dataset.json").read_text())
    from nnssl_plugin.plans import resolve_configuration

    arch = resolve_configuration(plans, "3d_cpu")["architecture"]
    torch.manual_seed(3)
    pretrained = build_planned_network(plans, "3d_cpu", 1, dataset_json)
    _nnssl_checkpoint(tmp_path / "checkpoint_final.pth", pretrained.state_dict(), arch)
    world_resenc.run("nnssl_export", "-t", "991", "-c", "3d_cpu", "-p", "nnUNetResEncUNetMPlans", "--checkpoint",
                     str(tmp_path / "checkpoint_final.pth"), "--plans-name", "nnsslPlans_fromnnssl")
    out = json.loads((world_resenc.preprocessed / LAB / "nnsslPlans_fromnnssl.json").read_text())
    info = out["pretrain_info"]
    export = safe_load(world_resenc.preprocessed / LAB / info["weights"])
    encoder = [k for k in pretrained.state_dict() if k.startswith(("encoder.stem.", "encoder.stages."))]
    assert encoder and all(torch.equal(export["network_weights"][k], pretrained.state_dict()[k]) for k in encoder)
    plan = export["nnssl_adaptation_plan"]
    # what nnssl's AdaptationPlan.from_dict and nnU-Net's preprocess_like_nnssl read (887c02e…)
    assert plan["architecture_plans"]["arch_class_name"] == "ResidualEncoderUNet"
    assert plan["architecture_plans"]["arch_kwargs_requiring_import"] == ["conv_op", "norm_op", "nonlin"]
    configuration = next(iter(plan["pretrain_plan"]["configurations"].values()))
    assert configuration["spacing"] == [1, 1, 1] and configuration["patch_size"] == [160, 160, 160]
    assert plan["key_to_lpe"] is None and plan["keys_to_in_proj"][0].endswith(".conv")
    assert len(plan["recommended_downstream_patchsize"]) == 3 and plan["pretrain_num_input_channels"] == 1
    # what nnU-Net's nnssl-side trainer reads from the plans' pretrain_info
    for key in ("checkpoint_path", "checkpoint_name", "key_to_encoder", "key_to_stem", "keys_to_in_proj",
                "key_to_lpe", "pt_num_in_channels", "pt_used_patchsize", "pt_recommended_downstream_patchsize",
                "citations"):
        assert key in info, key
    assert info["key_to_stem"] == "encoder.stem" and info["pt_num_in_channels"] == 1

    # the other way: our export read as an nnssl checkpoint (its adaptation plan) exports again, bit for bit
    world_resenc.run("nnssl_export", "-t", "991", "-c", "3d_cpu", "-p", "nnUNetResEncUNetMPlans", "--checkpoint",
                     str(world_resenc.preprocessed / LAB / info["weights"]), "--plans-name", "nnsslPlans_again")
    again = json.loads((world_resenc.preprocessed / LAB / "nnsslPlans_again.json").read_text())["pretrain_info"]
    second = safe_load(world_resenc.preprocessed / LAB / again["weights"])
    for key, value in export["network_weights"].items():
        if key.startswith("encoder."):
            assert torch.equal(second["network_weights"][key], value), key


def test_in_proj_keys_put_the_conv_alias_first():
    class Net(torch.nn.Module):
        keys_to_in_proj = ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")

    assert in_proj_keys(Net()) == ["encoder.stages.0.0.convs.0.conv", "encoder.stages.0.0.convs.0.all_modules.0"]


def test_a_one_channel_pretraining_transfers_to_a_two_channel_target():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnssl_plugin.export import pretrained_prefixes, transfer

    def unet(channels):
        return PlainConvUNet(channels, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], [1, 1, 1], 2, [1, 1],
                             False, torch.nn.InstanceNorm3d, {"affine": True}, None, None, torch.nn.LeakyReLU)

    torch.manual_seed(0)
    one, two = unet(1), unet(2)
    state, report = transfer(two.state_dict(), one.state_dict(), pretrained_prefixes(two, True), in_proj_keys(two))
    stem = in_proj_keys(two)[0] + ".weight"
    torch.testing.assert_close(state[stem], adapt_input_channels(one.state_dict()[stem], 2))
    assert stem in report.adapted and "adapted from 1 input channel" in report.summary()
    rest = [k for k in report.transferred if k not in report.adapted]
    assert rest and all(torch.equal(state[k], one.state_dict()[k]) for k in rest)


@pytest.mark.slow
def test_one_pretraining_exports_to_two_targets_and_warns_where_preprocessing_differs(exported, tmp_path):
    """The moco_zca run of the session's world exported to 991's own plans (preprocessed as the pretraining was:
    no warning) and to a second target plans whose spacing and normalisation differ (a warning line each)."""
    plans = json.loads((exported.preprocessed / LAB / "nnUNetPlans.json").read_text())
    other = json.loads(json.dumps(plans))
    other["plans_name"] = "nnUNetPlansOther"
    other["configurations"]["3d_fullres"]["spacing"] = [9.0, 3.0, 3.0]
    other["configurations"]["3d_fullres"]["normalization_schemes"] = ["ZScoreNormalization"]
    (exported.preprocessed / LAB / "nnUNetPlansOther.json").write_text(json.dumps(other))
    run = "nnsslPretrainer_moco_zca_1epochs_4iters_seed0__nnsslPretrainPlans__3d_cpu"
    results = []
    for plans_name, out in (("nnUNetPlans", "nnsslPlans_first"), ("nnUNetPlansOther", "nnsslPlans_second")):
        results.append(exported.run("nnssl_export", "-d", "990", "-m", "moco_zca", "-t", "991", "-c", "3d_cpu",
                                    "-p", plans_name, "--run", run, "--plans-name", out))
    assert "WARNING" not in results[0].stderr
    warnings = [line for line in results[1].stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2 and "spacing [9.0, 3.0, 3.0] differs" in warnings[0]
    assert "intensity normalisation ['ZScoreNormalization'] differs" in warnings[1]
    weights = [safe_load(exported.preprocessed / LAB / f"{name}_weights.pth")["network_weights"]
               for name in ("nnsslPlans_first", "nnsslPlans_second")]
    encoder = [k for k in weights[0] if k.startswith("encoder.")]
    assert encoder and all(torch.equal(weights[0][k], weights[1][k]) for k in encoder)
