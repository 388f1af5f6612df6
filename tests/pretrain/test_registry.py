"""Pretraining trainers are found by name through nnU-Net's own lookup and the extTrainer shim."""
from __future__ import annotations

import pickle

import pytest
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from nnssl_plugin.ext_trainers import ext_trainer_folder, with_ext_trainer_folder
from nnssl_plugin.pretrain import registry
from nnssl_plugin.pretrain.trainer import nnsslPretrainer


def test_names_carry_method_length_and_seed():
    assert registry.trainer_name("moco_zca", 3, 10, 1) == "nnsslPretrainer_moco_zca_3epochs_10iters_seed1"
    cls = registry.trainer_class("nnsslPretrainer_moco_zca_3epochs_10iters_seed1")
    assert issubclass(cls, nnsslPretrainer)
    assert (cls.method_config.method, cls.epochs, cls.iterations, cls.seed) == ("moco_zca", 3, 10, 1)
    plain = registry.trainer_class("nnsslPretrainer_moco")
    assert (plain.method_config.method, plain.epochs, plain.iterations, plain.seed) == ("moco", None, None, None)


def test_a_recipe_tag_is_the_last_part_of_the_name():
    assert registry.trainer_name("hier", 3, None, 0, "0a1b2c3d") == "nnsslPretrainer_hier_3epochs_seed0_r0a1b2c3d"
    cls = registry.trainer_class("nnsslPretrainer_hier_3epochs_seed0_r0a1b2c3d")
    assert (cls.method_config.method, cls.epochs, cls.seed, cls.recipe_tag) == ("hier", 3, 0, "0a1b2c3d")
    assert registry.trainer_class("nnsslPretrainer_hier_3epochs").recipe_tag is None


@pytest.mark.parametrize("name", ["nnsslPretrainer_mocoo", "nnsslPretrainer_moco_3iters_2epochs", "nnsslPretrainer_",
                                  "nnsslPretrainer_moco_rABCDEF12", "nnsslPretrainer_moco_r0a1b2c3d_seed1"])
def test_invalid_names_are_not_trainers(name):
    with pytest.raises(AttributeError):
        getattr(registry, name)


def test_classes_pickle_by_name():
    cls = registry.trainer_class("nnsslPretrainer_moco_2epochs")
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_nnunet_finds_variants_through_the_ext_trainer_shim(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", with_ext_trainer_folder("/some/user/folder"))
    found = recursive_find_trainer_class_by_name("nnsslPretrainer_moco_zca_7epochs_seed3")
    assert found is registry.trainer_class("nnsslPretrainer_moco_zca_7epochs_seed3")
    assert [p.name for p in ext_trainer_folder().iterdir() if p.suffix == ".py"] == ["nnssl_plugin_trainer_shim.py"]


def test_ext_trainer_value_keeps_the_users_folders_first():
    ours = str(ext_trainer_folder())
    assert with_ext_trainer_folder(None) == ours
    assert with_ext_trainer_folder("/a:/b") == f"/a:/b:{ours}"
    assert with_ext_trainer_folder(f"/a:{ours}") == f"/a:{ours}"


def test_method_is_read_from_a_trainer_name_by_longest_match():
    from nnssl_plugin.trainer_names import method_of

    assert method_of("nnsslPretrainer_moco_zca_3epochs") == "moco_zca"
    assert method_of("nnsslPretrainer_moco_seed2") == "moco"
    assert method_of("nnUNetTrainer") is None and method_of("nnUNetTrainerSSLInit_3epochs") is None


def test_downstream_no_tta_variant_turns_off_only_validation_mirroring():
    from nnssl_plugin.nnunet_trainers.registry import trainer_class as downstream

    cls = downstream("nnUNetTrainerSSLLinear_3epochs_noTTA")
    assert (cls.epochs, cls.validation_mirroring) == (3, False)
    assert downstream("nnUNetTrainerSSLLinear_3epochs").validation_mirroring is True
    with pytest.raises(AttributeError):
        downstream("nnUNetTrainerSSLLinear_noTTA_3epochs")
