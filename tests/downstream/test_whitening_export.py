"""moco_zca's whitening (mean, W), named by its family (`Family.whitening`), reaches the pretrained-weights file and
nnssl_export's source read from a checkpoint."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.config import method_config
from nnssl_plugin.export_sources import read_source
from nnssl_plugin.methods.moco.network import build_moco_network
from nnssl_plugin.families import family_of_method
from nnssl_plugin.pretrained import plans_identity, pretrained_payload, write_pretrained_weights

ARCHITECTURE = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16]}}


def _unet():
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 4, [2, 2], True, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=False)


def _network():
    torch.manual_seed(0)
    return build_moco_network(_unet(), replace(method_config("moco_zca"), queue_size=64), 2, (8, 16, 16),
                              ranks=1)


def _trained_state() -> dict[str, torch.Tensor]:
    net = _network().train()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # move the running whitening away from its initial (0, I)
        net.pair_embeddings(torch.randn(2, 1, 8, 16, 16, generator=g), torch.randn(2, 1, 8, 16, 16, generator=g))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert not torch.equal(state["whitening.w"][0], torch.eye(16))
    return state


def test_export_source_from_a_checkpoint_carries_mean_and_w(tmp_path):
    state = _trained_state()
    checkpoint = {"network_weights": state, "trainer_name": "nnsslPretrainer_moco_zca_3epochs_10iters",
                  "init_args": {"plans": {"plans_name": "nnsslPretrainPlans",
                                          "configurations": {"3d_x": {"architecture": ARCHITECTURE}}},
                                "configuration": "3d_x"}, "current_epoch": 3,
                  "nnssl_recipe": {"lr": 0.01}, "nnssl_method_options": {"whitening_mode": "running"}}
    torch.save(checkpoint, tmp_path / "checkpoint_final.pth")
    source = read_source(tmp_path / "checkpoint_final.pth")
    assert (source.provenance["recipe"], source.provenance["method_options"]) == ({"lr": 0.01},
                                                                                 {"whitening_mode": "running"})
    assert source.method == "moco_zca" and source.encoder_only
    assert torch.equal(source.whitening["mean"], state["whitening.mean"])
    assert torch.equal(source.whitening["w"], state["whitening.w"]) and source.whitening["groups"] == 1
    assert not any(k.startswith(("whitening.", "queue.")) for k in source.state)


def test_pretrained_weights_file_carries_the_loaded_mean_and_w(tmp_path):
    state = _trained_state()
    net = _network()
    net.load_state_dict(state)
    family = family_of_method("moco_zca")
    plans = plans_identity("nnsslPretrainPlans", "Dataset990_Phantom", "3d_x",
                           {"architecture": ARCHITECTURE, "patch_size": [8, 16, 16]})
    payload = safe_load(write_pretrained_weights(pretrained_payload(net, family, plans, 1, {"epochs": 3}),
                                                 tmp_path / "ssl_weights.pth"))
    assert payload["pretrained_prefixes"] == ["encoder"] and set(payload["network_weights"]) == set(
        k for k in state if k.startswith("encoder."))
    assert torch.equal(payload["whitening"]["mean"], state["whitening.mean"])
    assert torch.equal(payload["whitening"]["w"], state["whitening.w"])
    assert payload["whitening"]["groups"] == 1 and payload["whitening"]["eps"] == net.config.whitening_eps
    assert payload["whitening"]["batches"] == 3 and payload["whitening"]["mode"] == net.config.whitening_mode
