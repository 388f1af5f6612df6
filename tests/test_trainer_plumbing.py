"""The plumbing both trainer stacks share: the unwrapped network, rank-offset seeding, and nnU-Net's checkpoint
contents restored from a dict (no unpickling, no global patched)."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from nnssl_plugin.rng import seed_run
from nnssl_plugin.trainer_plumbing import restore_nnunet_state, unwrap


def test_unwrap_strips_compile():
    net = nn.Linear(2, 2)
    assert unwrap(net) is net
    assert unwrap(torch.compile(net)) is net


def test_seed_run_seeds_python_numpy_and_torch_with_the_seed_outside_ddp():
    assert seed_run(5) == 5
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())


class _Logger:
    def load_checkpoint(self, logging):
        self.loaded = logging


class _Trainer:  # the attributes nnU-Net's load_checkpoint touches
    def __init__(self):
        self.network = torch.compile(nn.Linear(3, 2))
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.1, momentum=0.9)
        self.grad_scaler = None
        self.logger = _Logger()
        self.inference_allowed_mirroring_axes = (0, 1, 2)


def test_restore_loads_weights_state_and_counters_like_nnunet():
    source = _Trainer()
    source.network(torch.ones(4, 3)).sum().backward()
    source.optimizer.step()
    weights = {f"module.{k}": v.clone() for k, v in unwrap(source.network).state_dict().items()}  # DataParallel keys
    checkpoint = {"network_weights": weights, "optimizer_state": source.optimizer.state_dict(), "init_args": {"a": 1},
                  "current_epoch": 7, "logging": {"x": [1]}, "_best_ema": 0.5, "grad_scaler_state": None,
                  "inference_allowed_mirroring_axes": (0,)}
    target = _Trainer()
    restore_nnunet_state(target, checkpoint)
    for k, v in unwrap(target.network).state_dict().items():
        assert torch.equal(v, weights[f"module.{k}"])
    assert (target.current_epoch, target.my_init_kwargs, target._best_ema, target.logger.loaded,
            target.inference_allowed_mirroring_axes) == (7, {"a": 1}, 0.5, {"x": [1]}, (0,))
    state = target.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["momentum_buffer"], source.optimizer.state_dict()["state"][i]["momentum_buffer"])
               for i in state)
