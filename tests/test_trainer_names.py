"""The trainer-name grammar: every name the plugin formats parses back to its parts, both families; run folders of
one method are told from another's (moco is not moco_zca)."""
from __future__ import annotations

import pytest

from nnssl_plugin import trainer_names as tn


@pytest.mark.parametrize("name, parts", [
    ("nnsslPretrainer_moco_zca_3epochs_10iters_seed1", (tn.PRETRAINER, "moco_zca", 3, 10, 1, None, False)),
    ("nnsslPretrainer_hier_3epochs_seed0_r0a1b2c3d", (tn.PRETRAINER, "hier", 3, None, 0, "0a1b2c3d", False)),
    ("nnsslPretrainer_moco", (tn.PRETRAINER, "moco", None, None, None, None, False)),
    ("nnUNetTrainerSSLLinear_4epochs_10iters_seed0_noTTA", ("nnUNetTrainerSSLLinear", None, 4, 10, 0, None, True)),
    ("nnUNetTrainerSSLInit", ("nnUNetTrainerSSLInit", None, None, None, None, None, False)),
])
def test_parse_and_format_are_inverse(name, parts):
    parsed = tn.parse(name)
    assert (parsed.base, parsed.method, parsed.epochs, parsed.iterations, parsed.seed, parsed.recipe_tag,
            parsed.no_tta) == parts
    assert str(parsed) == name
    if parsed.base == tn.PRETRAINER:
        assert tn.pretrainer(parsed.method, parsed.epochs, parsed.iterations, parsed.seed, parsed.recipe_tag) == name
    else:
        assert tn.downstream(parsed.base, parsed.epochs, parsed.iterations, parsed.seed, parsed.no_tta) == name


@pytest.mark.parametrize("name", ["nnsslPretrainer_mocoo", "nnsslPretrainer_moco_3iters_2epochs", "nnsslPretrainer_",
                                  "nnsslPretrainer_moco_r0a1b2c3d_seed1", "nnsslPretrainer_moco_noTTA",
                                  "nnUNetTrainerSSLLinear_noTTA_3epochs", "nnUNetTrainerSSLInit_r0a1b2c3d",
                                  "nnUNetTrainer"])
def test_other_names_do_not_parse(name):
    assert tn.parse(name) is None


def test_unknown_parts_are_refused_when_formatting():
    with pytest.raises(KeyError, match="unknown method 'simclr'"):
        tn.pretrainer("simclr")
    with pytest.raises(KeyError, match="unknown downstream trainer"):
        tn.downstream("nnUNetTrainer")


def test_run_folders_of_a_method_and_configuration():
    run = tn.run_folder(tn.pretrainer("moco", 3, seed=0), "nnsslPretrainPlans", "3d_cpu")
    assert run == "nnsslPretrainer_moco_3epochs_seed0__nnsslPretrainPlans__3d_cpu"
    assert tn.is_pretraining_run_of(run, "moco", "3d_cpu")
    assert not tn.is_pretraining_run_of(run, "moco_zca", "3d_cpu")
    assert not tn.is_pretraining_run_of(run, "moco", "2d_cpu")
    assert not tn.is_pretraining_run_of(run.replace("_seed0", "_seedX"), "moco", "3d_cpu")
    assert tn.is_pretraining_run_of("nnsslPretrainer_moco_zca__Other__Plans__3d_cpu", "moco_zca", "3d_cpu")
