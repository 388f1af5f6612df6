"""Bad input to nnssl_export and the downstream trainers: one clear line, exit 1, nothing half-written."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.nnunet_trainers.registry import trainer_class

LAB = "Dataset991_PhantomBTCV"


def _run(argv, capsys):
    code = export_cli.main(argv)
    return code, capsys.readouterr().err.strip()


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_crafted_pickle_is_refused_never_executed(in_world, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "nnssl_adaptation_plan": _Exploit(str(marker))}, evil)
    code, err = _run(["-t", "991", "-c", "3d_cpu", "-d", "990", "-m", "moco", "--checkpoint", str(evil),
                      "--plans-name", "nnsslPlans_evil"], capsys)
    assert code == 1 and "cannot load" in err and "safely" in err
    assert not marker.exists()
    assert not (in_world.preprocessed / LAB / "nnsslPlans_evil.json").exists()


def test_architecture_mismatch_names_the_first_differing_field(in_world, tmp_path, capsys):
    src = tmp_path / "other.pth"
    torch.save({"network_weights": {}, "nnssl_adaptation_plan": {
        "architecture_plans": {"arch_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                               "arch_kwargs": {**_target_arch(in_world)["arch_kwargs"],
                                               "features_per_stage": [4, 8, 16, 32, 40]}},
        "pretrain_num_input_channels": 1}}, src)
    code, err = _run(["-t", "991", "-c", "3d_cpu", "-d", "990", "-m", "moco", "--checkpoint", str(src),
                      "--plans-name", "nnsslPlans_other"], capsys)
    assert code == 1 and "differs from the pretraining one at 'arch_kwargs.features_per_stage'" in err


def test_input_channel_mismatch(in_world, tmp_path, capsys):
    src = tmp_path / "two_channels.pth"
    torch.save({"network_weights": {}, "nnssl_adaptation_plan": {
        "architecture_plans": {"arch_class_name": _target_arch(in_world)["network_class_name"],
                               "arch_kwargs": _target_arch(in_world)["arch_kwargs"]},
        "pretrain_num_input_channels": 2}}, src)
    code, err = _run(["-t", "991", "-c", "3d_cpu", "-d", "990", "-m", "moco", "--checkpoint", str(src),
                      "--plans-name", "nnsslPlans_two"], capsys)
    assert code == 1 and "2 input channel(s), the target 1" in err


def test_no_run_of_the_method(in_world, capsys):
    code, err = _run(["-t", "991", "-c", "3d_cpu", "-d", "990", "-m", "moco", "--plans-name", "nnsslPlans_x"],
                     capsys)
    assert code == 1 and "run nnssl_pretrain -d 990 -m moco -c 3d_cpu first" in err


def test_several_runs_are_listed(in_world, capsys):
    results = in_world.root / "nnUNet_results" / "Dataset990_PhantomUnlabelled"
    for name in ("nnsslPretrainer_moco_1epochs__p__3d_cpu", "nnsslPretrainer_moco_2epochs__p__3d_cpu"):
        (results / name / "fold_all").mkdir(parents=True, exist_ok=True)
    code, err = _run(["-t", "991", "-c", "3d_cpu", "-d", "990", "-m", "moco"], capsys)
    assert code == 1 and "2 moco runs found" in err and "pick one with --run" in err
    for name in ("nnsslPretrainer_moco_1epochs__p__3d_cpu", "nnsslPretrainer_moco_2epochs__p__3d_cpu"):
        shutil.rmtree(results / name)


def test_runs_with_a_recipe_tag_are_found_and_another_method_is_not(tmp_path):
    from nnssl_plugin.cli.export import find_runs

    for name in ("nnsslPretrainer_moco_2epochs_r0a1b2c3d__p__3d_cpu", "nnsslPretrainer_moco__p__3d_cpu",
                 "nnsslPretrainer_moco_zca_r0a1b2c3d__p__3d_cpu", "nnsslPretrainer_moco_r0a1b2c3__p__3d_cpu"):
        (tmp_path / name / "fold_all").mkdir(parents=True)
    assert [p.parent.name for p in find_runs(tmp_path, "moco", "3d_cpu")] == [
        "nnsslPretrainer_moco_2epochs_r0a1b2c3d__p__3d_cpu", "nnsslPretrainer_moco__p__3d_cpu"]


def _target_arch(world):
    plans = json.loads((world.preprocessed / LAB / "nnUNetPlans.json").read_text())
    return plans["configurations"]["3d_cpu"]["architecture"]


def _random_export(world, name):
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", name, "--overwrite"]) == 0
    return json.loads((world.preprocessed / LAB / f"{name}.json").read_text())


def _trainer(world, plans, name="nnUNetTrainerSSLInit_1epochs_2iters"):
    plans = dict(plans, continue_training=False)
    dataset_json = json.loads((world.preprocessed / LAB / "dataset.json").read_text())
    return trainer_class(name)(plans, "3d_cpu", 0, dataset_json, torch.device("cpu"))


def test_loading_refuses_plans_without_pretrain_info(in_world):
    """The library call; the trainers look for a fitting export first (tests/downstream/test_export_lookup.py)."""
    from nnssl_plugin.export_loading import load_exported_weights

    plans = json.loads((in_world.preprocessed / LAB / "nnUNetPlans.json").read_text())
    with pytest.raises(NnsslError, match="plans 'nnUNetPlans' has no pretrain_info; run nnssl_export"):
        load_exported_weights(plans, _target_arch(in_world), 1, torch.nn.Module(), "3d_cpu")


@pytest.mark.parametrize("damage,message", [
    ("delete", "not found; rerun nnssl_export --overwrite"),
    ("truncate", "does not match the sha256"),
    ("replace", "does not match the sha256"),
])
def test_trainer_refuses_missing_truncated_or_changed_weights(in_world, damage, message):
    plans = _random_export(in_world, f"nnsslPlans_damaged_{damage}")
    weights = in_world.preprocessed / LAB / plans["pretrain_info"]["weights"]  # relative to the dataset folder
    if damage == "delete":
        os.remove(weights)
    elif damage == "truncate":
        data = open(weights, "rb").read()
        open(weights, "wb").write(data[: len(data) // 2])
    else:
        torch.save({"format": "nnssl_export/1"}, weights)
    with pytest.raises(NnsslError, match=message):
        _trainer(in_world, plans).initialize()
