"""Pretraining through nnU-Net's loop: a short moco_zca run writes every output; --c resumes exactly."""
from __future__ import annotations

import json
import math

import pytest
import torch

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.ext_trainers import with_ext_trainer_folder
from nnssl_plugin.pretrain import registry

UNL = "Dataset990_PhantomUnlabelled"
LAB = "Dataset991_PhantomBTCV"


@pytest.mark.slow
def test_short_moco_zca_run_writes_checkpoint_plots_log_and_weights(world):
    result = world.run("nnssl_pretrain", "-d", "990", "-m", "moco_zca", "-c", "3d_cpu", "-device", "cpu",
                       "--epochs", "3", "--iters", "10", "--c")
    assert "--c found no checkpoint" in result.stdout and "starting a fresh run" in result.stdout
    fold = (world.root / "nnUNet_results" / UNL /
            "nnsslPretrainer_moco_zca_3epochs_10iters__nnsslPretrainPlans__3d_cpu" / "fold_all")
    for name in ("checkpoint_final.pth", "progress.png", "ssl_weights.pth"):
        assert (fold / name).is_file(), name
    assert not (fold / "spectrum.png").exists()  # the rank of a few training-case crops: nnssl_spectrum's instead
    log_text = next(fold.glob("training_log_*.txt")).read_text()
    assert "effective rank: raw bottleneck" in log_text and "whitened bottleneck" in log_text
    assert "WARNING: this run (30 steps) is shorter than the warm-up (100 steps)" in log_text
    assert "nnssl_spectrum -d <labelled dataset> -c 3d_cpu --checkpoints" in log_text
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    log = checkpoint["logging"]
    if any(log["loss_global"]):  # MoCo's global term waits for real keys: its start is said once
        assert log_text.count("the 'loss_global' loss term starts now") == 1
    for key in ("train_losses", "val_losses", "loss_global", "loss_local"):
        assert len(log[key]) == 3 and all(math.isfinite(v) for v in log[key]), key
    assert len(log["erank"]) == 3 and all(set(e) == {"raw bottleneck", "whitened bottleneck"} for e in log["erank"])
    weights = torch.load(fold / "ssl_weights.pth", weights_only=True)
    assert weights["method"] == "moco_zca" and weights["pretrained_prefixes"] == ["encoder"]
    assert all(k.startswith("encoder.") for k in weights["network_weights"])
    groups, per, _ = weights["whitening"]["w"].shape
    assert groups * per == 80 and weights["whitening"]["mean"].shape == (groups, per)
    assert weights["plans"]["configuration"] == "3d_cpu" and weights["training"]["epochs"] == 3


def _trainer(world, name):
    root = world.preprocessed / UNL
    plans = json.loads((root / "nnsslPretrainPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((root / "dataset.json").read_text())
    return registry.trainer_class(name)(plans, "3d_cpu", "all", dataset_json, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("method,terms", [("hier", {"loss_voxel", "loss_restore"}), ("voxel2vec", {"loss_voxel"})])
def test_short_dense_runs_write_the_same_outputs_and_export_encoder_and_decoder(world, monkeypatch, method, terms):
    world.run("nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", "cpu", "--epochs", "2",
              "--iters", "4")
    fold = (world.root / "nnUNet_results" / UNL / f"nnsslPretrainer_{method}_2epochs_4iters__nnsslPretrainPlans__3d_cpu"
            / "fold_all")
    for name in ("checkpoint_final.pth", "progress.png", "ssl_weights.pth"):
        assert (fold / name).is_file(), name
    log = torch.load(fold / "checkpoint_final.pth", weights_only=True)["logging"]
    for key in ("loss_voxel", "loss_restore"):  # the family's terms (Family.loss_terms); another family's: not logged
        assert all((v is not None and math.isfinite(v)) == (key in terms) for v in log[key]), key
    assert "loss_global" not in log and "loss_local" not in log
    levels = {"level 0 (bottleneck)", "level 4 (decoder 4)", "concatenated"}
    assert all(levels <= set(e) and all(math.isfinite(r) and r > 0 for r in e.values()) for e in log["erank"])
    log_text = next(fold.glob("training_log_*.txt")).read_text()
    assert "voxel" in log_text and "effective rank: level 0 (bottleneck)" in log_text
    weights = torch.load(fold / "ssl_weights.pth", weights_only=True)
    assert weights["method"] == method and weights["pretrained_prefixes"] == ["encoder", "decoder"]
    keys = weights["network_weights"]
    assert any(k.startswith("decoder.stages.") for k in keys) and any(k.startswith("encoder.") for k in keys)
    assert not any(k.startswith(("decoder.seg_layers", "decoder.encoder", "head", "projections", "restoration"))
                   for k in keys)
    world.run("nnssl_export", "-d", "990", "-m", method, "-t", "991", "-c", "3d_cpu")
    plans = json.loads((world.preprocessed / "Dataset991_PhantomBTCV" / f"nnsslPlans_{method}.json").read_text())
    assert plans["pretrain_info"]["pretrained_prefixes"] == ["decoder.stages", "decoder.transpconvs", "encoder.stages"]
    if method == "hier":  # the linear probe reads the bottleneck and every decoder stage of the frozen U-Net
        trainer = "nnUNetTrainerSSLLinear_1epochs_4iters_noTTA"  # TTA is not what this proves
        monkeypatch.setenv("nnUNet_extTrainer", with_ext_trainer_folder(None))
        world.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-p", f"nnsslPlans_{method}", "-device",
                  "cpu")
        fold = world.root / "nnUNet_results" / LAB / f"{trainer}__nnsslPlans_{method}__3d_cpu" / "fold_0"
        log_text = next(fold.glob("training_log_*.txt")).read_text()
        assert "frozen pretrained tensors are bit-identical" in log_text and "decoder.transpconvs" in log_text
        checkpoint = safe_load(fold / "checkpoint_final.pth")  # nnU-Net's checkpoint: numpy scalars in its log
        assert sum(len(g["params"]) for g in checkpoint["optimizer_state"]["param_groups"]) == 2 * 5


@pytest.mark.parametrize("method", ["moco", "moco_zca", "moco_regions", "hier", "voxel2vec"])
def test_resume_from_a_checkpoint_gives_the_uninterrupted_next_step(in_world, tmp_path, monkeypatch, method):
    """Save after 2 steps; a fresh trainer that loads the checkpoint computes the same 3rd-step loss, and holds
    the same state (queue, pointer, key encoder and whitening buffers; U-Net, projections and heads)."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    name = f"nnsslPretrainer_{method}_2epochs_4iters_seed5"
    first = _trainer(in_world, name)
    first.on_train_start()
    first.on_epoch_start()
    first.on_train_epoch_start()
    for _ in range(2):
        first.train_step(next(first.dataloader_train))
    checkpoint = tmp_path / "checkpoint_latest.pth"
    first.save_checkpoint(str(checkpoint))
    saved_state = {k: v.clone() for k, v in first.ssl_network.state_dict().items()}
    expected = first.train_step(next(first.dataloader_train))
    first.on_train_end()

    second = _trainer(in_world, name)
    second.load_checkpoint(str(checkpoint))
    for key, value in second.ssl_network.state_dict().items():
        assert torch.equal(value, saved_state[key]), key
    if method.startswith("moco"):  # 2 steps x batch 2 keys, x 4 aligned regions (grid 1x2x2) per crop for moco_regions
        assert int(second.ssl_network.queue.ptr) == 2 * 2 * (4 if method == "moco_regions" else 1)
    second.on_train_start()
    second.on_epoch_start()
    second.on_train_epoch_start()
    got = second.train_step(next(second.dataloader_train))
    assert got["loss"] == expected["loss"]
    second.on_train_end()


@pytest.mark.slow
@pytest.mark.parametrize("fixture,plans,configuration,method", [
    ("world_2d", "nnsslPretrain2d", "2d_cpu", "moco_zca"),
    ("world_2d", "nnsslPretrain2d", "2d_cpu", "hier"),  # the dense family on 2d: in-plane voxel correspondences
    ("world_resenc", "nnsslPretrainResEnc", "3d_cpu", "moco_zca"),
])
def test_2d_and_residual_encoder_plans_pretrain(request, fixture, plans, configuration, method):
    w = request.getfixturevalue(fixture)
    w.run("nnssl_pretrain", "-d", "990", "-m", method, "-c", configuration, "-p", plans, "-device", "cpu",
          "--epochs", "1", "--iters", "4")
    fold = w.root / "nnUNet_results" / UNL / f"nnsslPretrainer_{method}_1epochs_4iters__{plans}__{configuration}" / \
        "fold_all"
    weights = torch.load(fold / "ssl_weights.pth", weights_only=True)
    arch = json.loads((w.preprocessed / UNL / f"{plans}.json").read_text())
    assert weights["plans"]["architecture"]["network_class_name"] == \
        (arch["configurations"][configuration].get("architecture") or
         arch["configurations"][arch["configurations"][configuration]["inherits_from"]]["architecture"]
         )["network_class_name"]
    assert all(torch.isfinite(v).all() for v in weights["network_weights"].values() if v.is_floating_point())
