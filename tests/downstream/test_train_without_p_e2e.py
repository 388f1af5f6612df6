"""`nnUNetv2_train 991 3d_cpu 0 -tr nnUNetTrainerSSL<...>` without -p, through nnU-Net's real console scripts: the
dataset's one fitting export is used and recorded in the run's plans.json, so `nnUNetv2_predict` without -p rebuilds
the same network (for SSLLinear, whose short run would cost another training and validation, nnU-Net's own
on_train_start/on_train_end and predictor in-process); several exports, none, and `-pretrained_weights` end the
command with one line, exit code 1 and no folder in nnUNet_results.

Each case has its own nnU-Net root with a copy of the phantom target (the session world's Dataset991 holds many
exports that other tests make), so the exports a case sees are exactly the ones it put there."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import NNUNET_VARS, World
from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.export_lookup import exports_in
from nnssl_plugin.ext_trainers import with_ext_trainer_folder

LAB = "Dataset991_PhantomBTCV"
EXPORT = "nnsslPlans_moco_zca"
SHORT = "1epochs_2iters_noTTA"


@pytest.fixture(autouse=True)
def _ext_trainer(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", with_ext_trainer_folder(None))


def _root(exported: World, root: Path, with_data: bool, exports: dict[str, str]) -> World:
    """An nnU-Net root whose Dataset991 holds the target's plans and dataset.json (and with `with_data` its
    preprocessed data, ground truth, splits and fingerprint), plus `exports`: plans name -> the world's export whose
    pretrain_info it carries (weights shared by name)."""
    source = exported.preprocessed / LAB
    folder = root / "nnUNet_preprocessed" / LAB
    if with_data:  # everything but the world's exports
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("nnssl*", "*_weights.pth"))
    else:
        folder.mkdir(parents=True)
        for name in ("nnUNetPlans.json", "dataset.json"):
            shutil.copy(source / name, folder)
    for name, original in exports.items():
        plans = json.loads((source / f"{original}.json").read_text())
        plans["plans_name"] = name
        (folder / f"{name}.json").write_text(json.dumps(plans))
        if not (folder / plans["pretrain_info"]["weights"]).exists():
            shutil.copy(source / plans["pretrain_info"]["weights"], folder)
    assert sorted(e.name for e in exports_in(folder)) == sorted(exports)
    (root / "nnUNet_raw").symlink_to(exported.raw)
    (root / "nnUNet_results").mkdir()
    return World(root)


@pytest.fixture(scope="module")
def solo(exported, tmp_path_factory) -> World:
    """Dataset991 with its data and exactly one export, the session's moco_zca one; fold 0 validates on one case
    (nnU-Net's final validation is most of a short run's time on a CPU)."""
    world = _root(exported, tmp_path_factory.mktemp("solo"), True, {EXPORT: EXPORT})
    cases = sorted(p.name[:-len(".nii.gz")] for p in (world.preprocessed / LAB / "gt_segmentations").iterdir())
    (world.preprocessed / LAB / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": cases[:1]}]))
    return world


def _one_error_line(result, trainer: str) -> str:
    """The refusal: exit code 1, no traceback, the last stderr line `<trainer>: error: ...`."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{trainer}: error: ")
    return line


def _nothing_created(world: World) -> None:
    assert list((world.root / "nnUNet_results").iterdir()) == [], "no run folder left behind"


@pytest.mark.slow
def test_fine_tune_predict_and_evaluate_without_p_use_the_only_export(solo, tmp_path):
    """The user's line, then nnUNetv2_predict without -p: it rebuilds the network (moco_zca's whitening) from the
    run's plans.json and loads the checkpoint strictly; nnUNetv2_evaluate_folder scores the prediction."""
    trainer = f"nnUNetTrainerSSLInit_{SHORT}"
    result = solo.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-device", "cpu")
    note = f"using the one export that fits configuration '3d_cpu', '{EXPORT}' (moco_zca"
    assert note in result.stdout
    run = solo.root / "nnUNet_results" / LAB / f"{trainer}__nnUNetPlans__3d_cpu"
    fold = run / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert note in log
    assert "pretrained tensors under ['encoder.stages']" in log and "bottleneck whitening applied" in log
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    info = json.loads((run / "plans.json").read_text())["pretrain_info"]
    assert info["export_plans"] == EXPORT and info["method"] == "moco_zca" and info["whitening_shape"]
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    shutil.copy(solo.raw / LAB / "imagesTr" / "phantom_000_0000.nii.gz", images)
    shutil.copy(solo.raw / LAB / "labelsTr" / "phantom_000.nii.gz", labels)
    solo.run("nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred"), "-d", "991", "-c", "3d_cpu",
             "-f", "0", "-tr", trainer, "-device", "cpu", "--disable_tta")
    solo.run("nnUNetv2_evaluate_folder", str(labels), str(tmp_path / "pred"), "-djfile",
             str(solo.raw / LAB / "dataset.json"), "-pfile", str(run / "plans.json"))
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert len(summary["mean"]) == 13
    _predictor_network_is_the_trained_one(solo, fold)


def _predictor_network_is_the_trained_one(world: World, fold: Path) -> None:
    """nnUNetv2_predict's network (rebuilt from the run's plans.json by the trainer class, checkpoint loaded
    strictly) computes encoder -> exported whitening -> decoder with the trained weights."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnssl_plugin.export import build_planned_network

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, verbose=False)
    predictor.initialize_from_trained_model_folder(str(fold.parent), (0,), "checkpoint_final.pth")
    network = predictor.network
    network.load_state_dict(predictor.list_of_parameters[0])
    trained = safe_load(fold / "checkpoint_final.pth")["network_weights"]
    whitening = safe_load(world.preprocessed / LAB / f"{EXPORT}_weights.pth")["whitening"]
    assert torch.equal(trained["bottleneck_whitening.w"], whitening["w"]), "whitening stays frozen in training"
    plain = build_planned_network(json.loads((fold.parent / "plans.json").read_text()), "3d_cpu", 1,
                                  json.loads((fold.parent / "dataset.json").read_text()))
    plain.load_state_dict({k: v for k, v in trained.items() if not k.startswith("bottleneck_")})
    x = torch.randn(1, 1, 16, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        skips = plain.encoder(x)
        b = skips[-1]
        groups, per, _ = whitening["w"].shape
        flat = b.movedim(1, -1).reshape(-1, groups * per)
        white = torch.cat([(flat[:, g * per:(g + 1) * per] - whitening["mean"][g]) @ whitening["w"][g]
                           for g in range(groups)], dim=1).reshape(1, *b.shape[2:], groups * per).movedim(-1, 1)
        expected = plain.decoder([*skips[:-1], white])
        got = network.eval()(x)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_linear_run_without_p_is_rebuilt_by_nnunets_predictor(solo, monkeypatch):
    """SSLLinear without -p: nnU-Net's own on_train_start (writes the run's plans.json) and on_train_end (writes
    checkpoint_final.pth) in-process, no epoch in between; nnU-Net's predictor then rebuilds the probe network around
    the whitened U-Net from that plans.json and loads the checkpoint strictly."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnssl_plugin.modules.probe import LinearProbeNetwork
    from nnssl_plugin.nnunet_trainers.registry import trainer_class

    for variable in NNUNET_VARS:
        monkeypatch.setenv(variable, str(solo.root / variable))
    monkeypatch.setattr("sys.argv", ["pytest"])
    name = "nnUNetTrainerSSLLinear_1epochs_1iters"
    plans = json.loads((solo.preprocessed / LAB / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((solo.preprocessed / LAB / "dataset.json").read_text())
    trainer = trainer_class(name)(dict(plans, continue_training=False), "3d_cpu", 0, dataset_json,
                                  torch.device("cpu"))
    trainer.on_train_start()
    trainer.on_train_end()
    run = Path(trainer.output_folder_base)
    assert json.loads((run / "plans.json").read_text())["pretrain_info"]["export_plans"] == EXPORT
    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, verbose=False)
    predictor.initialize_from_trained_model_folder(str(run), (0,), "checkpoint_final.pth")
    network = predictor.network
    assert isinstance(network, LinearProbeNetwork) and network.levels == "encoder"
    trained = safe_load(run / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert any(k.startswith("probes.") for k in trained) and "unet.bottleneck_whitening.w" in trained
    assert all(torch.equal(v, trained[k]) for k, v in network.state_dict().items())


@pytest.mark.slow
def test_several_fitting_exports_end_with_one_line_listing_them(exported, tmp_path):
    world = _root(exported, tmp_path, False, {EXPORT: EXPORT, "nnsslPlans_random": "nnsslPlans_random"})
    trainer = f"nnUNetTrainerSSLInit_{SHORT}"
    line = _one_error_line(world.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-device", "cpu",
                                     check=False), trainer)
    assert line.endswith(f"2 exports fit configuration '3d_cpu': pass the one to train with: -p {EXPORT} "
                         f"(moco_zca), -p nnsslPlans_random (random)")
    _nothing_created(world)


@pytest.mark.slow
def test_no_export_ends_with_one_line_naming_nnssl_export(exported, tmp_path):
    world = _root(exported, tmp_path, False, {})
    trainer = f"nnUNetTrainerSSLFrozenEncoder_{SHORT}"
    line = _one_error_line(world.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-device", "cpu",
                                     check=False), trainer)
    assert line.endswith("run nnssl_export -d <pretraining dataset id> -m <method> -t 991 -c 3d_cpu first")
    _nothing_created(world)


@pytest.mark.slow
def test_pretrained_weights_is_refused_before_anything_is_read_or_created(exported, tmp_path):
    """Even with the export's plans and its own weights file (which stock nnUNetTrainer accepts)."""
    world = _root(exported, tmp_path, False, {EXPORT: EXPORT})
    weights = world.preprocessed / LAB / f"{EXPORT}_weights.pth"
    trainer = f"nnUNetTrainerSSLInit_{SHORT}"
    result = world.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-p", EXPORT, "-device", "cpu",
                       "-pretrained_weights", str(weights), check=False)
    line = _one_error_line(result, trainer)
    assert f"nnU-Net would unpickle {weights} without restriction" in line
    assert "Loading pretrained weights" not in result.stdout
    _nothing_created(world)
