"""nnssl_add_cpu_config: a smaller configuration inheriting the planned one, on the same preprocessed data."""
from __future__ import annotations

import json

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl_plugin.cli import cpu_config as cpu_cli
from nnssl_plugin.errors import BadArgument, NnsslError
from nnssl_plugin.plans import add_cpu_configuration, cumulative_strides, resolve_configuration


def _plans(patch=(40, 160, 192), features=(32, 64, 128, 256, 320, 320)):
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    return {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": list(patch),
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": {"n_stages": 6, "features_per_stage": list(features),
                                         "strides": strides}}}}}


def test_cumulative_strides_multiply_per_axis():
    assert cumulative_strides(resolve_configuration(_plans(), "3d_fullres")) == [8, 32, 32]


def test_features_divided_and_patch_rounded_to_the_stride():
    new = add_cpu_configuration(_plans(), feature_divisor=4, patch_scale=0.5)
    config = new["configurations"]["3d_cpu"]
    assert config["inherits_from"] == "3d_fullres" and "data_identifier" not in config
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64, 80, 80]
    assert config["patch_size"] == [16, 64, 96]  # halved (20, 80, 96), rounded down to strides (8, 32, 32)
    resolved = resolve_configuration(new, "3d_cpu")
    assert resolved["data_identifier"] == "nnUNetPlans_3d_fullres" and resolved["batch_size"] == 2
    assert PlansManager(new).get_configuration("3d_cpu").patch_size == [16, 64, 96]


def test_explicit_patch_must_be_a_multiple_of_the_stride():
    with pytest.raises(NnsslError, match=r"cumulative stride \[8, 32, 32\]"):
        add_cpu_configuration(_plans(), patch_size=[16, 48, 64])
    new = add_cpu_configuration(_plans(), patch_size=[24, 128, 64], batch_size=3)
    assert new["configurations"]["3d_cpu"]["patch_size"] == [24, 128, 64]
    assert new["configurations"]["3d_cpu"]["batch_size"] == 3


def test_unknown_parent_configuration_is_named():
    with pytest.raises(NnsslError, match="configuration '3d_lowres' is not in plans"):
        add_cpu_configuration(_plans(), parent="3d_lowres")


BAD = [({"name": "3d_fullres"}, ["--name", "3d_fullres"], "name", "--name", "must differ from the parent"),
       ({"feature_divisor": 0}, ["--feature-divisor", "0"], "feature_divisor", "--feature-divisor",
        "at least 1, got 0"),
       ({"patch_size": [16, 64]}, ["--patch-size", "16", "64"], "patch_size", "--patch-size", "needs 3 values"),
       ({"batch_size": 0}, ["--batch-size", "0"], "batch_size", "--batch-size", "at least 1, got 0")]


@pytest.mark.parametrize("kwargs, argv, keyword, flag, problem", BAD, ids=[row[2] for row in BAD])
def test_the_library_names_its_keyword_and_the_command_its_flag(kwargs, argv, keyword, flag, problem, planned,
                                                                capsys):
    with pytest.raises(BadArgument, match=f"^{keyword} .*{problem}") as raised:
        add_cpu_configuration(_plans(), **kwargs)
    assert raised.value.parameter == keyword and "--" not in str(raised.value)
    before = planned.read_text()
    assert cpu_cli.main(["-d", "991", "--overwrite", *argv]) == 1
    err = capsys.readouterr().err
    assert f"{flag} " in err and problem in err and f"{keyword} " not in err.replace(flag, "")
    assert planned.read_text() == before


@pytest.fixture
def planned(world, fresh_world):
    """A private copy of the world's planned Dataset991 plans (these tests change the plans file)."""
    folder = fresh_world.preprocessed / "Dataset991_PhantomBTCV"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text((world.preprocessed / folder.name / "nnUNetPlans.json").read_text())
    return folder / "nnUNetPlans.json"


def test_cli_refuses_to_replace_without_overwrite(planned, capsys):
    plans_file = planned
    before = plans_file.read_text()
    assert cpu_cli.main(["-d", "991"]) == 1
    assert "already have a configuration '3d_cpu'" in capsys.readouterr().err
    assert plans_file.read_text() == before


def test_cli_adds_a_named_configuration(planned):
    plans_file = planned
    assert cpu_cli.main(["-d", "991", "--name", "3d_tiny", "--feature-divisor", "8"]) == 0
    plans = json.loads(plans_file.read_text())
    tiny = resolve_configuration(plans, "3d_tiny")
    full = resolve_configuration(plans, "3d_fullres")
    assert tiny["architecture"]["arch_kwargs"]["features_per_stage"] == \
           [max(2, -(-f // 8)) for f in full["architecture"]["arch_kwargs"]["features_per_stage"]]


# nnU-Net's own trainer and CLI on the configuration (nnUNetv2_train 991 3d_cpu ... -tr nnUNetTrainer_1epoch, with
# its final validation) are checked once, in tests/downstream/test_downstream_e2e.py
# (test_stock_nnunet_train_accepts_the_export_as_pretrained_weights): a second stock epoch here cost ~200 s of CI.
