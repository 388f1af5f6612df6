"""moco_zca's whitening (mean, W) reaches the pretrained-weights file and nnssl_export's source from checkpoints of
both layouts: old ones (buffers whitening.mean and whitening.w only, no queue case ids) and new ones (running
covariance and step counter as well)."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.config import method_config
from nnssl_plugin.config import default_recipe
from nnssl_plugin.export_sources import read_source
from nnssl_plugin.methods.moco.network import build_moco_network
from nnssl_plugin.pretrained import write_pretrained_weights

ARCHITECTURE = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16]}}
NEW_ONLY = ("whitening.cov", "whitening.step", "queue.case_ids")


def _unet():
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=False)


def _network():
    torch.manual_seed(0)
    return build_moco_network(_unet(), replace(method_config("moco_zca"), queue_size=64), 2, (8, 16, 16),
                              ranks=1)


def _trained_state(layout: str) -> dict[str, torch.Tensor]:
    net = _network().train()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # move the running whitening away from its initial (0, I)
        net.pair_embeddings(torch.randn(2, 1, 8, 16, 16, generator=g), torch.randn(2, 1, 8, 16, 16, generator=g))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert not torch.equal(state["whitening.w"][0], torch.eye(16))
    return {k: v for k, v in state.items() if k not in NEW_ONLY} if layout == "old" else state


@pytest.mark.parametrize("layout", ["old", "new"])
def test_export_source_from_a_checkpoint_carries_mean_and_w(tmp_path, layout):
    state = _trained_state(layout)
    checkpoint = {"network_weights": state, "trainer_name": "nnsslPretrainer_moco_zca_3epochs_10iters",
                  "init_args": {"plans": {"plans_name": "nnsslPretrainPlans",
                                          "configurations": {"3d_x": {"architecture": ARCHITECTURE}}},
                                "configuration": "3d_x"}, "current_epoch": 3}
    if layout == "new":
        checkpoint.update(nnssl_recipe={"lr": 0.01}, nnssl_method_options={"whitening_mode": "running"})
    torch.save(checkpoint, tmp_path / "checkpoint_final.pth")
    source = read_source(tmp_path / "checkpoint_final.pth")
    recorded = (None, None) if layout == "old" else ({"lr": 0.01}, {"whitening_mode": "running"})
    assert (source.provenance["recipe"], source.provenance["method_options"]) == recorded
    assert source.method == "moco_zca" and source.encoder_only
    assert torch.equal(source.whitening["mean"], state["whitening.mean"])
    assert torch.equal(source.whitening["w"], state["whitening.w"]) and source.whitening["groups"] == 1
    assert not any(k.startswith(("whitening.", "queue.")) for k in source.state)


@pytest.mark.parametrize("layout", ["new"])  # an older layout's state no longer loads into the network (refused)
def test_pretrained_weights_file_carries_the_loaded_mean_and_w(tmp_path, layout):
    state = _trained_state(layout)
    net = _network()
    net.load_state_dict(state)  # strict: old layouts are completed by the modules' load hooks
    trainer = SimpleNamespace(
        ssl_network=net, configuration_manager=SimpleNamespace(configuration={"architecture": ARCHITECTURE,
                                                                              "patch_size": [8, 16, 16]}),
        plans_manager=SimpleNamespace(plans_name="nnsslPretrainPlans", dataset_name="Dataset990_Phantom"),
        configuration_name="3d_x", num_input_channels=1, current_epoch=3, num_iterations_per_epoch=10,
        batch_size=2, seed=None, recipe=default_recipe("moco"), method_options={"whitening_mode": "hybrid"},
        nonfinite_steps=1)
    payload = safe_load(write_pretrained_weights(trainer, tmp_path / "ssl_weights.pth"))
    assert payload["training"]["recipe"] == default_recipe("moco").to_dict()
    assert payload["training"]["method_options"] == {"whitening_mode": "hybrid"}
    assert payload["training"]["nonfinite_steps_skipped"] == 1
    assert torch.equal(payload["whitening"]["mean"], state["whitening.mean"])
    assert torch.equal(payload["whitening"]["w"], state["whitening.w"])
    assert payload["whitening"]["groups"] == 1 and payload["whitening"]["eps"] == net.config.whitening_eps
