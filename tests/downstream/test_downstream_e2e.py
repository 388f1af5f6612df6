"""Pretrain -> nnssl_export -> nnUNetv2_train (FrozenEncoder, Linear, Scratch, with -p <export plans>) through the real
CLIs on the phantom data (small CPU configuration). Fine-tuning (SSLInit) -> nnUNetv2_predict ->
nnUNetv2_evaluate_folder runs as the user's line, without -p: tests/downstream/test_train_without_p_e2e.py."""
from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.export import build_planned_network
from nnssl_plugin.ext_trainers import with_ext_trainer_folder
from nnssl_plugin.nnunet_trainers.registry import trainer_class

LAB = "Dataset991_PhantomBTCV"
RUN = "1epochs_4iters_seed0"  # the pretraining run of the session fixture `exported` (tests/conftest.py)
TRAIN = f"{RUN}_noTTA"  # downstream runs: no mirrored final validation (8x the forwards in 3d; not what they prove)


def _train(world, trainer, plans):
    result = world.run("nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-p", plans, "-device", "cpu")
    return result, world.root / "nnUNet_results" / LAB / f"{trainer}__{plans}__3d_cpu" / "fold_0"


@pytest.fixture(autouse=True)
def _ext_trainer(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", with_ext_trainer_folder(None))


def _exported_weights(world, plans="nnsslPlans_moco_zca"):
    return torch.load(world.preprocessed / LAB / f"{plans}_weights.pth", weights_only=True)


@pytest.mark.slow
def test_export_file_is_safe_complete_and_accepted_by_stock_pretrained_weights(exported):
    payload = _exported_weights(exported)
    assert payload["method"] == "moco_zca" and payload["pretrained_prefixes"] == ["encoder.stages"]
    assert payload["nnssl_adaptation_plan"]["key_to_encoder"] == "encoder.stages"
    plans = json.loads((exported.preprocessed / LAB / "nnsslPlans_moco_zca.json").read_text())
    info = plans["pretrain_info"]
    assert info["method"] == "moco_zca" and info["whitening"] and len(info["sha256"]) == 64
    dataset_json = json.loads((exported.preprocessed / LAB / "dataset.json").read_text())
    network = build_planned_network(plans, "3d_cpu", 1, dataset_json)
    load_pretrained_weights(network, exported.preprocessed / LAB / info["weights"], verbose=False)  # nnU-Net's own -pretrained_weights path
    for key, value in payload["network_weights"].items():
        if key.startswith("encoder."):
            assert torch.equal(network.state_dict()[key], value)


@pytest.mark.slow
def test_frozen_encoder_keeps_the_encoder_and_trains_the_decoder(exported):
    _, fold = _train(exported, f"nnUNetTrainerSSLFrozenEncoder_{TRAIN}", "nnsslPlans_moco_zca")
    trained = safe_load(fold / "checkpoint_final.pth")["network_weights"]
    exported_state = _exported_weights(exported)["network_weights"]
    encoder = [k for k in exported_state if k.startswith("encoder.")]
    assert all(torch.equal(trained[k], exported_state[k]) for k in encoder)
    decoder = [k for k in exported_state if k.startswith("decoder.") and not k.startswith("decoder.encoder.")]
    assert any(not torch.equal(trained[k], exported_state[k]) for k in decoder)


@pytest.mark.slow
def test_linear_probe_trains_only_the_probe_on_frozen_features(exported):
    _, fold = _train(exported, f"nnUNetTrainerSSLLinear_{TRAIN}", "nnsslPlans_random")
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "frozen pretrained tensors are bit-identical" in log
    trained = safe_load(fold / "checkpoint_final.pth")
    optimizer_params = sum(len(g["params"]) for g in trained["optimizer_state"]["param_groups"])
    assert optimizer_params == 2 * 5  # weight + bias of one 1x1x1 probe per encoder stage


def _in_process(world, name, plans_name="nnsslPlans_moco_zca"):
    plans = json.loads((world.preprocessed / LAB / f"{plans_name}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((world.preprocessed / LAB / "dataset.json").read_text())
    trainer = trainer_class(name)(plans, "3d_cpu", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    return trainer


@pytest.mark.slow
def test_ssl_init_network_equals_the_export_right_after_initialize(exported, in_world):
    trainer = _in_process(in_world, "nnUNetTrainerSSLInit_1epochs_4iters_seed3")
    payload = _exported_weights(exported)
    state = trainer.network.state_dict()
    for key, value in payload["network_weights"].items():
        if key.startswith("encoder."):
            assert torch.equal(state[key], value) and torch.equal(state["decoder." + key], value)
    assert torch.equal(state["bottleneck_whitening.w"], payload["whitening"]["w"])


@pytest.mark.slow
def test_scratch_starts_from_random_weights(exported, in_world):
    trainer = _in_process(in_world, "nnUNetTrainerSSLScratch_1epochs_4iters_seed3")
    exported_state = _exported_weights(exported)["network_weights"]
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert not torch.equal(trainer.network.state_dict()[key], exported_state[key])
    assert not hasattr(trainer.network, "bottleneck_whitening"), "Scratch never applies an export's whitening"


@pytest.mark.slow
def test_export_from_a_checkpoint_equals_export_from_the_weights_file(exported):
    run = (exported.root / "nnUNet_results" / "Dataset990_PhantomUnlabelled" /
           f"nnsslPretrainer_moco_zca_{RUN}__nnsslPretrainPlans__3d_cpu" / "fold_all")
    exported.run("nnssl_export", "-d", "990", "-m", "moco_zca", "-t", "991", "-c", "3d_cpu", "--checkpoint",
                 str(run / "checkpoint_final.pth"), "--plans-name", "nnsslPlans_fromckpt")
    a = _exported_weights(exported)
    b = _exported_weights(exported, "nnsslPlans_fromckpt")
    assert b["method"] == "moco_zca"
    for key, value in a["network_weights"].items():
        if key.startswith("encoder."):
            assert torch.equal(b["network_weights"][key], value), key
    assert torch.equal(a["whitening"]["w"], b["whitening"]["w"])


@pytest.mark.slow
def test_stock_nnunet_train_accepts_the_export_as_pretrained_weights(exported):
    """nnU-Net's own `-pretrained_weights` (stock nnUNetTrainer, one epoch on the CPU configuration): also the check
    that nnU-Net's own trainer, CLI and final validation accept the configuration nnssl_add_cpu_config added."""
    weights = exported.preprocessed / LAB / "nnsslPlans_moco_zca_weights.pth"
    result = exported.run("nnUNetv2_train", "991", "3d_cpu", "1", "-tr", "nnUNetTrainer_1epoch", "-device", "cpu",
                          "-pretrained_weights", str(weights))
    assert f"Loading pretrained weights from file  {weights}" in result.stdout
    fold = exported.root / "nnUNet_results" / LAB / "nnUNetTrainer_1epoch__nnUNetPlans__3d_cpu" / "fold_1"
    assert (fold / "checkpoint_final.pth").is_file()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert "mean" in summary and len(summary["mean"]) == 13
