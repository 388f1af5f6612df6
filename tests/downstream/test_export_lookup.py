"""Training without -p: which export a weights-loading trainer uses (`export_lookup`), and how the trainers end
nnU-Net's command when none, several, or `-pretrained_weights` is given (one line, exit 1, no folder created).

The selection is tested on small plans files; the trainers are nnU-Net's real classes, constructed in-process on a
private nnUNet_preprocessed holding the phantom target's plans and real exports (`nnssl_export --random-init`)."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export_lookup import exports_in, plans_with_export, select_export
from nnssl_plugin.nnunet_trainers.registry import trainer_class
from nnssl_plugin.nnunet_trainers.ssl_trainers import nnunet_train_arguments, pretrained_weights_argument
from nnssl_plugin.plans import resolve_configuration
from nnssl_plugin.pretrained import architecture_hash

LAB = "Dataset991_PhantomBTCV"
LOADING = ("nnUNetTrainerSSLInit_1epochs_2iters", "nnUNetTrainerSSLFrozenEncoder_1epochs_2iters",
           "nnUNetTrainerSSLLinear_1epochs_2iters")


# ----- the selection, on small plans files ---------------------------------------------------------------------------
def _plans(features=(8, 16)) -> dict:
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 2, "features_per_stage": list(features)}, "_kw_requires_import": []}
    return {"dataset_name": "Dataset991_Small", "plans_name": "nnUNetPlans",
            "configurations": {"3d_fullres": {"architecture": copy.deepcopy(arch), "patch_size": [16, 16, 16]},
                               "3d_cpu": {"inherits_from": "3d_fullres", "patch_size": [8, 8, 8]}}}


def _write_export(folder: Path, name: str, plans: dict, configuration: str = "3d_cpu", method: str = "moco") -> None:
    export = dict(copy.deepcopy(plans), plans_name=name)
    arch = resolve_configuration(plans, configuration)["architecture"]
    export["pretrain_info"] = {"weights": f"{name}_weights.pth", "sha256": "0" * 64, "method": method,
                               "configuration": configuration, "architecture_sha256": architecture_hash(arch)}
    (folder / f"{name}.json").write_text(json.dumps(export))


@pytest.fixture
def folder(tmp_path) -> Path:
    """A dataset folder holding the run's plans and JSON files that are not exports."""
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(_plans()))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": [], "val": []}]))
    (tmp_path / "broken.json").write_text("{not json")
    return tmp_path


def test_one_fitting_export_is_selected_and_joins_the_run_plans(folder):
    _write_export(folder, "nnsslPlans_moco", _plans())
    run = _plans()
    export = select_export(run, "3d_cpu", folder)
    assert export.name == "nnsslPlans_moco" and export.method == "moco"
    plans = plans_with_export(run, export)
    assert plans["plans_name"] == "nnUNetPlans", "the run's plans keep their name: nnU-Net's folders stay the same"
    assert plans["pretrain_info"] == {**export.plans["pretrain_info"], "export_plans": "nnsslPlans_moco"}
    assert "pretrain_info" not in run, "the caller's plans are not changed"


def test_only_plans_with_pretrain_info_are_exports(folder):
    _write_export(folder, "nnsslPlans_moco", _plans())
    assert [e.name for e in exports_in(folder)] == ["nnsslPlans_moco"]


def test_several_fitting_exports_are_listed_with_the_p_to_pass(folder):
    _write_export(folder, "nnsslPlans_moco", _plans())
    _write_export(folder, "nnsslPlans_random", _plans(), method="random")
    with pytest.raises(NnsslError) as error:
        select_export(_plans(), "3d_cpu", folder)
    message = str(error.value)
    assert "\n" not in message and "2 exports fit configuration '3d_cpu'" in message
    assert "-p nnsslPlans_moco (moco), -p nnsslPlans_random (random)" in message


def test_no_export_names_the_nnssl_export_command(folder):
    with pytest.raises(NnsslError) as error:
        select_export(_plans(), "3d_cpu", folder)
    assert str(error.value).endswith("no export fits configuration '3d_cpu'; run nnssl_export -d <pretraining "
                                     "dataset id> -m <method> -t 991 -c 3d_cpu first")


def test_an_export_of_another_configuration_does_not_fit(folder):
    _write_export(folder, "nnsslPlans_full", _plans(), configuration="3d_fullres")
    with pytest.raises(NnsslError, match=r"\(nnsslPlans_full: exported for configuration '3d_fullres'\); run "
                                         r"nnssl_export .* -t 991 -c 3d_cpu first"):
        select_export(_plans(), "3d_cpu", folder)


def test_an_export_of_another_architecture_does_not_fit_and_names_the_field(folder):
    _write_export(folder, "nnsslPlans_wide", _plans(features=(16, 32)))
    _write_export(folder, "nnsslPlans_moco", _plans())
    assert select_export(_plans(), "3d_cpu", folder).name == "nnsslPlans_moco"
    (folder / "nnsslPlans_moco.json").unlink()
    with pytest.raises(NnsslError, match=r"nnsslPlans_wide: architecture differs at "
                                         r"'arch_kwargs.features_per_stage'"):
        select_export(_plans(), "3d_cpu", folder)


def test_other_run_plans_are_named_in_the_export_command(folder):
    run = dict(_plans(), plans_name="nnUNetResEncUNetMPlans")
    with pytest.raises(NnsslError, match=r"-t 991 -c 3d_cpu -p nnUNetResEncUNetMPlans first$"):
        select_export(run, "3d_cpu", folder)


def test_a_configuration_the_run_plans_lack_is_named(folder):
    with pytest.raises(NnsslError, match="configuration '3d_huge' is not in plans 'nnUNetPlans'"):
        select_export(_plans(), "3d_huge", folder)


# ----- nnU-Net's command line, as the trainers read it ----------------------------------------------------------------
def test_pretrained_weights_is_read_from_nnunets_train_command_only():
    assert pretrained_weights_argument(["/venv/bin/nnUNetv2_train", "991", "3d_cpu", "0", "-tr", "T",
                                        "-pretrained_weights", "/w.pth"]) == "/w.pth"
    assert pretrained_weights_argument(["nnUNetv2_train", "991", "3d_cpu", "0", "-pretrained_weights=/w.pth"]) \
        == "/w.pth"
    assert pretrained_weights_argument([".../nnunetv2/run/run_training.py", "1", "2d", "0",
                                        "-pretrained_weights", "x"]) == "x"
    assert pretrained_weights_argument(["nnUNetv2_train", "991", "3d_cpu", "0", "-p", "nnUNetPlans"]) is None
    assert pretrained_weights_argument(["pytest", "-pretrained_weights", "x"]) is None, "another program's flags"
    assert nnunet_train_arguments(["nnssl_sweep", "--val"]) is None


# ----- the trainers on a private nnUNet_preprocessed -----------------------------------------------------------------
@pytest.fixture(scope="module")
def exports_root(world, tmp_path_factory) -> Path:
    """The target's plans and dataset.json (no data: nothing here trains) and two real exports of 3d_cpu,
    'nnsslPlans_random' and 'nnsslPlans_random2', in a private nnUNet_preprocessed."""
    root = tmp_path_factory.mktemp("exports_root")
    folder = root / "nnUNet_preprocessed" / LAB
    folder.mkdir(parents=True)
    for name in ("nnUNetPlans.json", "dataset.json"):
        shutil.copy(world.preprocessed / LAB / name, folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_preprocessed", str(root / "nnUNet_preprocessed"))
        for name in ("nnsslPlans_random", "nnsslPlans_random2"):
            assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", name]) == 0
    return root


@pytest.fixture
def private(exports_root, tmp_path, monkeypatch) -> Path:
    """The dataset folder of a copy of `exports_root` (tests remove exports freely); results in tmp_path/results."""
    shutil.copytree(exports_root / "nnUNet_preprocessed", tmp_path / "nnUNet_preprocessed")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setattr("sys.argv", ["pytest"])
    return tmp_path / "nnUNet_preprocessed" / LAB


def _construct(folder: Path, name: str, plans_name: str = "nnUNetPlans", continue_training: bool = False):
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return trainer_class(name)(dict(plans, continue_training=continue_training), "3d_cpu", 0, dataset_json,
                               torch.device("cpu"))


def _refused(folder: Path, name: str, capsys) -> str:
    """The one stderr line of a trainer that refuses to start (exit code 1); nothing is created in nnUNet_results."""
    with pytest.raises(SystemExit) as stop:
        _construct(folder, name)
    assert stop.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), lines
    assert not (folder.parents[1] / "results").exists(), "nothing created before the refusal"
    return lines[0]


@pytest.mark.parametrize("name", LOADING)
def test_every_loading_trainer_refuses_several_exports_in_one_line(private, name, capsys):
    line = _refused(private, name, capsys)
    assert "2 exports fit configuration '3d_cpu'" in line
    assert "-p nnsslPlans_random (random), -p nnsslPlans_random2 (random)" in line


@pytest.mark.parametrize("name", LOADING)
def test_every_loading_trainer_without_an_export_names_nnssl_export(private, name, capsys):
    for export in ("nnsslPlans_random", "nnsslPlans_random2"):
        (private / f"{export}.json").unlink()
    line = _refused(private, name, capsys)
    assert line.endswith("run nnssl_export -d <pretraining dataset id> -m <method> -t 991 -c 3d_cpu first")


def test_the_only_export_is_used_and_named_in_the_log(private, capsys):
    (private / "nnsslPlans_random2.json").unlink()
    trainer = _construct(private, "nnUNetTrainerSSLInit_1epochs_2iters")
    info = trainer.plans_manager.plans["pretrain_info"]
    assert trainer.plans_manager.plans_name == "nnUNetPlans" and info["export_plans"] == "nnsslPlans_random"
    assert trainer.output_folder.endswith("nnUNetTrainerSSLInit_1epochs_2iters__nnUNetPlans__3d_cpu/fold_0")
    note = "using the one export that fits configuration '3d_cpu', 'nnsslPlans_random' (random"
    assert note in capsys.readouterr().out and note in Path(trainer.log_file).read_text()


def test_scratch_needs_no_export(private):
    trainer = _construct(private, "nnUNetTrainerSSLScratch_1epochs_2iters")
    assert "pretrain_info" not in trainer.plans_manager.plans


def test_explicit_export_plans_need_no_lookup(private):
    trainer = _construct(private, "nnUNetTrainerSSLInit_1epochs_2iters", plans_name="nnsslPlans_random2")
    assert trainer.plans_manager.plans_name == "nnsslPlans_random2"
    assert "export_plans" not in trainer.plans_manager.plans["pretrain_info"]


def test_resuming_uses_the_export_the_run_recorded(private, capsys):
    """--c after a second export was added: the run's own plans.json decides, not the (now ambiguous) lookup."""
    name = "nnUNetTrainerSSLInit_1epochs_2iters"
    run = private.parents[1] / "results" / LAB / f"{name}__nnUNetPlans__3d_cpu"
    run.mkdir(parents=True)
    recorded = json.loads((private / "nnsslPlans_random2.json").read_text())["pretrain_info"]
    (run / "plans.json").write_text(json.dumps({"pretrain_info": {**recorded, "export_plans": "nnsslPlans_random2"}}))
    trainer = _construct(private, name, continue_training=True)
    assert trainer.plans_manager.plans["pretrain_info"]["export_plans"] == "nnsslPlans_random2"
    assert "continues with the export it recorded, 'nnsslPlans_random2'" in capsys.readouterr().out


@pytest.mark.parametrize("name", [*LOADING, "nnUNetTrainerSSLScratch_1epochs_2iters"])
def test_pretrained_weights_is_refused_at_once(private, name, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["nnUNetv2_train", "991", "3d_cpu", "0", "-tr", name, "-pretrained_weights",
                                     "/some/file.pth"])
    line = _refused(private, name, capsys)
    assert "-pretrained_weights is not taken by the plugin's trainers" in line
    assert "nnssl_export -d <pretraining dataset id> -m <method> -t 991 -c 3d_cpu --checkpoint /some/file.pth" in line
