"""The pretraining run's per-epoch log: nnU-Net's LocalLogger with the SSL keys, checkpointed with the run."""
from __future__ import annotations

from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnssl_plugin.plots import plot_progress

# held-out evaluation (nnssl_plugin.heldout): None in epochs without an evaluation; erank: {representation: rank}
HELDOUT_KEYS = ("heldout_loss", "heldout_top1", "heldout_chance", "heldout_erank")
# online probe (nnssl_plugin.probe.online): mean Dice of the current weights and of the random-init reference, None in
# epochs without a probe
PROBE_KEYS = ("probe_dice", "probe_random_dice")
SSL_KEYS = ("top1_train", "top1_val", "erank", *HELDOUT_KEYS, *PROBE_KEYS)  # erank: {name: rank}


class SSLLocalLogger(LocalLogger):
    """Keys: nnU-Net's (train/val losses, lrs, epoch timestamps), the family's loss terms (`Family.loss_terms`, None
    in epochs without them) and SSL_KEYS; progress.png shows them."""

    def __init__(self, loss_terms: tuple[str, ...] = (), verbose: bool = False):
        super().__init__(verbose)
        for key in (*loss_terms, *SSL_KEYS):
            self.my_fantastic_logging[key] = []
        # what the figure needs beyond the logged values, set by the trainer (not checkpointed: recomputed each run)
        self.title = ""  # method, dataset, configuration
        self.rank_limits: dict[str, int] = {}  # representation -> largest possible effective rank
        self.term_starts: dict[str, float] = {}  # loss term -> x position (epochs) where it started

    def plot_progress_png(self, output_folder: str) -> None:
        plot_progress(self.my_fantastic_logging, f"{output_folder}/progress.png", self.title, self.rank_limits,
                      self.term_starts)


def log_heldout(logger, epoch: int, values: dict | None) -> None:
    """Log epoch `epoch`'s held-out values (`HeldoutEvaluator.evaluate`'s dict; None: no evaluation this epoch) under
    HELDOUT_KEYS. Call it every epoch; epochs before `epoch` that hold no entry (a resumed run that gets
    --eval-target only now) are filled with None, so every list keeps one entry per epoch."""
    _log_per_epoch(logger, epoch, {key: None if values is None else values[key[len("heldout_"):]]
                                   for key in HELDOUT_KEYS})


def log_probe(logger, epoch: int, values=None) -> None:
    """Log epoch `epoch`'s online probe (`OnlineProbe.evaluate`'s ProbeValues; None: no probe this epoch) under
    PROBE_KEYS, every epoch, earlier epochs without an entry filled with None (as `log_heldout`)."""
    _log_per_epoch(logger, epoch, {"probe_dice": None if values is None else values.dice,
                                   "probe_random_dice": None if values is None else values.random_dice})


def _log_per_epoch(logger, epoch: int, values: dict) -> None:
    """Log each key's value at `epoch` after filling the epochs before it that hold no entry with None; numbers as
    plain floats (loadable with weights_only), dicts of numbers likewise."""
    for key, value in values.items():
        logged = logger.get_value(key, step=None)
        logged.extend([None] * (epoch - len(logged)))
        if isinstance(value, dict):
            value = {name: float(v) for name, v in value.items()}
        elif value is not None:
            value = float(value)
        logger.log(key, value, epoch)
