"""Bad input to nnssl_pretrain: one clear line naming the fix, exit code 1."""
from __future__ import annotations

import json

import pytest
import torch

from nnssl_plugin.cli import pretrain as pretrain_cli
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.pretrain import registry

UNL = "Dataset990_PhantomUnlabelled"


def _run(argv, capsys):
    code = pretrain_cli.main(argv)
    return code, capsys.readouterr().err.strip()


def test_dataset_not_prepared(in_world, capsys):
    (in_world.preprocessed / "Dataset987_Raw").mkdir()
    code, err = _run(["-d", "987", "-m", "moco", "-device", "cpu"], capsys)
    assert code == 1 and "run nnssl_prepare -d 987 -t <your planned labelled dataset> first" in err


def test_configuration_not_in_plans(in_world, capsys):
    code, err = _run(["-d", "990", "-m", "moco", "-c", "3d_lowres_nope", "-device", "cpu"], capsys)
    assert code == 1 and "configuration '3d_lowres_nope' is not in plans 'nnsslPretrainPlans'" in err


def test_cuda_requested_without_cuda(in_world, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = _run(["-d", "990", "-m", "moco", "-c", "3d_cpu"], capsys)
    assert code == 1 and "pass -device cpu" in err


def _trainer(world, name, tmp_path, monkeypatch, edit=None):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    root = world.preprocessed / UNL
    plans = json.loads((root / "nnsslPretrainPlans.json").read_text())
    if edit:
        edit(plans)
    plans["continue_training"] = False
    dataset_json = json.loads((root / "dataset.json").read_text())
    return registry.trainer_class(name)(plans, "3d_cpu", "all", dataset_json, torch.device("cpu"))


def test_non_finite_loss_stops_with_the_epoch_and_leaves_checkpoints_alone(in_world, tmp_path, monkeypatch):
    trainer = _trainer(in_world, "nnsslPretrainer_moco_1epochs_2iters", tmp_path, monkeypatch)
    trainer.on_train_start()
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    batch = next(trainer.dataloader_train)
    batch["view1"][0, 0, 0, 0, 0] = float("nan")
    before = {k: v.clone() for k, v in trainer.ssl_network.state_dict().items()}
    with pytest.raises(NnsslError, match="non-finite SSL loss .* in epoch 0"):
        trainer.train_step(batch)
    after = trainer.ssl_network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "no update from a non-finite loss"
    trainer.on_train_end()
