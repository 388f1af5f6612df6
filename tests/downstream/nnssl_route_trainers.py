"""Test-only trainers for nnU-Net's own nnssl route (tests/downstream/test_nnunet_nnssl_route.py).

Not imported by the plugin or by pytest: the test copies this file into the unpacked nnU-Net snapshot's
`nnunetv2/training/nnUNetTrainer/pretraining/`, the only place that route's `nnUNetv2_train_pretrained` looks
trainers up (it ignores `nnUNet_extTrainer`). The trainers are the route's own with a CPU-test length (the route's
defaults: 1,000 epochs with a 50-epoch warm-up) and one addition: right after the route has loaded the pretrained
weights, and before the first step, the network's state dict is saved as `initial_state.pth` in the output folder,
so the test can compare it with the export tensor by tensor.
"""
import os

import torch

from nnunetv2.training.nnUNetTrainer.pretraining.dynamicPretrainedTrainer import DynamicPretrainedTrainer
from nnunetv2.training.nnUNetTrainer.pretraining.pretrainedTrainer import PretrainedTrainer

EPOCHS = 1
ITERATIONS = 4  # steps per epoch: EPOCHS x ITERATIONS <= 10
INITIAL_STATE = "initial_state.pth"


def _shorten(trainer) -> None:
    trainer.num_epochs = EPOCHS
    trainer.num_iterations_per_epoch = ITERATIONS
    trainer.num_val_iterations_per_epoch = 1
    trainer.warmup_duration_whole_net = 1
    trainer.save_every = 1


def _save_initial_state(trainer) -> None:
    os.makedirs(trainer.output_folder, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in trainer.network.state_dict().items()}
    torch.save(state, os.path.join(trainer.output_folder, INITIAL_STATE))


class DynamicPretrainedTrainer_nnsslTest(DynamicPretrainedTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)

    def initialize(self):
        super().initialize()
        _save_initial_state(self)


class PretrainedTrainer_nnsslTest(PretrainedTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)

    def initialize(self):
        super().initialize()
        _save_initial_state(self)
