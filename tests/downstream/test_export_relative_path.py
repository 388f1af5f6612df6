"""The export names its weights relative to the dataset's folder: moving nnUNet_preprocessed keeps it loadable."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.export import weights_reference
from nnssl_plugin.export_loading import exported_weights_path
from nnssl_plugin.nnunet_trainers.registry import trainer_class

LAB = "Dataset991_PhantomBTCV"
TRAINER = "nnUNetTrainerSSLInit_1epochs_2iters"


def test_weights_inside_the_dataset_folder_are_named_relative_outside_absolute(tmp_path):
    folder = tmp_path / "nnUNet_preprocessed" / LAB
    assert weights_reference(folder / "nnsslPlans_hier_weights.pth", folder) == "nnsslPlans_hier_weights.pth"
    elsewhere = tmp_path / "weights" / "w.pth"
    assert weights_reference(elsewhere, folder) == str(elsewhere.resolve())


def test_absolute_and_relative_names_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pp"))
    relative = {"dataset_name": LAB, "pretrain_info": {"weights": "nnsslPlans_x_weights.pth"}}
    assert exported_weights_path(relative) == tmp_path / "pp" / LAB / "nnsslPlans_x_weights.pth"
    absolute = {"dataset_name": LAB, "pretrain_info": {"weights": "/old/root/nnsslPlans_x_weights.pth"}}
    assert exported_weights_path(absolute) == Path("/old/root/nnsslPlans_x_weights.pth")


def _initialize(plans: dict, dataset_folder: Path):
    dataset_json = json.loads((dataset_folder / "dataset.json").read_text())
    trainer = trainer_class(TRAINER)(dict(plans, continue_training=False), "3d_cpu", 0, dataset_json,
                                     torch.device("cpu"))
    trainer.initialize()
    return trainer


def test_export_still_loads_after_nnunet_preprocessed_is_moved(in_world, tmp_path, monkeypatch):
    name = "nnsslPlans_moved"
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", name,
                            "--overwrite"]) == 0
    old_folder = in_world.preprocessed / LAB
    plans = json.loads((old_folder / f"{name}.json").read_text())
    assert plans["pretrain_info"]["weights"] == f"{name}_weights.pth"  # no absolute path recorded

    new_root = tmp_path / "cluster"
    shutil.copytree(in_world.preprocessed, new_root / "nnUNet_preprocessed", symlinks=True)
    for moved in (f"{name}.json", f"{name}_weights.pth"):  # the old location is gone: only the copy can be read
        (old_folder / moved).unlink()
    monkeypatch.setenv("nnUNet_preprocessed", str(new_root / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(new_root / "nnUNet_results"))
    new_folder = new_root / "nnUNet_preprocessed" / LAB
    moved_plans = json.loads((new_folder / f"{name}.json").read_text())

    trainer = _initialize(moved_plans, new_folder)
    payload = torch.load(new_folder / f"{name}_weights.pth", weights_only=True)
    assert trainer.loaded_weights and all(torch.equal(v, payload["network_weights"][k])
                                          for k, v in trainer.loaded_weights.items())


def test_export_with_an_absolute_weights_path_still_loads(in_world, tmp_path, monkeypatch):
    """Exports written before relative names recorded the absolute path: they keep working unchanged."""
    name = "nnsslPlans_absolute"
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", name,
                            "--overwrite"]) == 0
    folder = in_world.preprocessed / LAB
    plans = json.loads((folder / f"{name}.json").read_text())
    elsewhere = tmp_path / "kept" / "weights.pth"
    elsewhere.parent.mkdir()
    shutil.move(folder / f"{name}_weights.pth", elsewhere)
    plans["pretrain_info"]["weights"] = str(elsewhere)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    assert _initialize(plans, folder).loaded_weights
