"""Test-only trainers for nnU-Net's own nnssl route (tests/downstream/test_nnunet_nnssl_route.py).

Not imported by the plugin or by pytest: the test copies this file into the unpacked nnU-Net snapshot's
`nnunetv2/training/nnUNetTrainer/pretraining/`, the only place that route's `nnUNetv2_train_pretrained` looks
trainers up (it ignores `nnUNet_extTrainer`). The trainers are the route's own with a CPU-test length (the route's
defaults: 1,000 epochs with a 50-epoch warm-up) and one addition: right after the route has loaded the pretrained
weights, and before the first step, the network's state dict is saved as `initial_state.pth` in the output folder,
so the test can compare it with the export tensor by tensor. And the final validation is replaced by what
`nnUNetv2_predict` would do, which fails on the route's trainers (docs/NNSSL_ROUTE.md): nnU-Net's predictor on
the raw images of the fold's held-out cases, from preprocessing to the exported segmentation, in this process
(`predict_from_files_sequential`: no worker processes to start, the costly part of a CPU test's validation) and
without mirroring (one forward per window instead of eight; as the route's own `_nomirroring` trainers).
"""
import os

import torch

from nnunetv2.training.nnUNetTrainer.pretraining.dynamicPretrainedTrainer import DynamicPretrainedTrainer
from nnunetv2.training.nnUNetTrainer.pretraining.pretrainedTrainer import PretrainedTrainer

EPOCHS = 1
ITERATIONS = 4  # steps per epoch: EPOCHS x ITERATIONS <= 10
INITIAL_STATE = "initial_state.pth"
PREDICTED = "predicted"  # the held-out cases' segmentations, <case>.nii.gz, in the output folder


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


def _predict_held_out(trainer) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    _, held_out = trainer.do_split()
    trainer.network.eval()
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=trainer.device,
                                allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()], trainer.dataset_json, type(trainer).__name__,
                                    None)
    raw = get_filenames_of_train_images_and_targets(os.path.join(nnUNet_raw, trainer.plans_manager.dataset_name),
                                                    trainer.dataset_json)
    out = os.path.join(trainer.output_folder, PREDICTED)
    os.makedirs(out, exist_ok=True)
    predictor.predict_from_files_sequential([raw[k]["images"] for k in held_out],
                                            [os.path.join(out, k) for k in held_out])
    trainer.print_to_log_file(f"predicted {len(held_out)} held-out case(s) into {out}")


class _ShortRunWithHeldOutPrediction:
    """What both test trainers add to the route's trainer: the short schedule, the initial state saved, the held-out
    case predicted in place of the final validation."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)

    def initialize(self):
        super().initialize()
        _save_initial_state(self)

    def perform_actual_validation(self, save_probabilities: bool = False):
        _predict_held_out(self)


class DynamicPretrainedTrainer_nnsslTest(_ShortRunWithHeldOutPrediction, DynamicPretrainedTrainer):
    pass


class PretrainedTrainer_nnsslTest(_ShortRunWithHeldOutPrediction, PretrainedTrainer):
    pass
