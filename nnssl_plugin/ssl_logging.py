"""The pretraining run's per-epoch log: nnU-Net's LocalLogger with the SSL keys, checkpointed with the run."""
from __future__ import annotations

from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnssl_plugin.plots import plot_progress

LOSS_TERMS = ("loss_global", "loss_local", "loss_voxel", "loss_restore")  # None in epochs of methods without them
SSL_KEYS = (*LOSS_TERMS, "top1_train", "top1_val", "erank")  # erank: {representation name: effective rank}


class SSLLocalLogger(LocalLogger):
    """Keys: nnU-Net's (train/val losses, lrs, epoch timestamps) plus SSL_KEYS; progress.png shows them."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        for key in SSL_KEYS:
            self.my_fantastic_logging[key] = []

    def plot_progress_png(self, output_folder: str) -> None:
        plot_progress(self.my_fantastic_logging, f"{output_folder}/progress.png")
