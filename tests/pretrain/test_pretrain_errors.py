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
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"no update from a non-finite loss: {changed}"
    trainer.on_train_end()


def _started(trainer):
    trainer.on_train_start()
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    return trainer


def test_a_step_with_non_finite_gradients_is_skipped_counted_and_checkpointed(in_world, tmp_path, monkeypatch):
    trainer = _started(_trainer(in_world, "nnsslPretrainer_moco_zca_1epochs_2iters", tmp_path, monkeypatch))
    net = trainer.ssl_network
    first = next(net.encoder.parameters())
    first.register_hook(lambda grad: grad * float("nan"))  # as a NaN from eigh's backward would arrive
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    trainer.train_step(next(trainer.dataloader_train))  # moco_zca: the local term steps from the first batch
    assert trainer.nonfinite_steps == 1
    assert all(torch.equal(before[k], v) for k, v in net.encoder.state_dict().items()), "no NaN reached a weight"
    assert all(torch.isfinite(p).all() for p in net.parameters())
    trainer.save_checkpoint(str(tmp_path / "c.pth"))
    assert torch.load(tmp_path / "c.pth", weights_only=True)["nnssl_nonfinite_steps"] == 1
    trainer.on_train_end()


@pytest.mark.parametrize("edit,message", [(lambda c: c.pop("nnssl_recipe"), "from before per-method recipes"),
                                          (lambda c: c["nnssl_recipe"].update(lr=0.5), "was trained with recipe")])
def test_continue_refuses_an_old_checkpoint_or_one_of_another_recipe(in_world, tmp_path, monkeypatch, edit, message):
    trainer = _trainer(in_world, "nnsslPretrainer_hier_1epochs_2iters", tmp_path, monkeypatch)
    trainer.initialize()
    trainer.save_checkpoint(str(tmp_path / "c.pth"))
    checkpoint = torch.load(tmp_path / "c.pth", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, tmp_path / "c.pth")
    resumed = _trainer(in_world, "nnsslPretrainer_hier_1epochs_2iters", tmp_path, monkeypatch)
    with pytest.raises(NnsslError, match=message):
        resumed.load_checkpoint(str(tmp_path / "c.pth"))


def test_a_tagged_run_trains_with_its_recorded_recipe_and_options(in_world, tmp_path, monkeypatch):
    from nnssl_plugin.config import default_recipe
    from nnssl_plugin.recipe import build_recipe, run_tag
    from nnssl_plugin.run_record import write_run_record

    recipe, options = build_recipe(default_recipe("hier"), "nnunet", batch_size=3), {"restoration_weight": 2.0}
    name = f"nnsslPretrainer_hier_1epochs_2iters_r{run_tag(recipe, default_recipe('hier'), options)}"
    fold = tmp_path / UNL / f"{name}__nnsslPretrainPlans__3d_cpu" / "fold_all"
    write_run_record(fold, recipe, None, options)
    trainer = _trainer(in_world, name, tmp_path, monkeypatch)
    trainer.initialize()
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.optimizer.param_groups[0]["momentum"] == 0.99
    assert trainer.batch_size == 3 and trainer.ssl_network.config.restoration_weight == 2.0
    assert type(trainer).method_config.restoration_weight == 10.0, "the class's config is not changed"
