"""What both trainer stacks (pretraining, `nnssl_plugin.pretrain.trainer`; downstream,
`nnssl_plugin.nnunet_trainers.ssl_trainers`) do the same way: unwrap the network nnU-Net holds, and
restore nnU-Net's checkpoint state from an already safely loaded checkpoint.

- seeding a run is `nnssl_plugin.rng.seed_run` (the one home of random streams).
- `unwrap`: the module inside DDP's `.module` and torch.compile's `_orig_mod` (state-dict keys as planned).
- `restore_nnunet_state`: what nnU-Net 2.8.1's `nnUNetTrainer.load_checkpoint` does with a checkpoint's contents
  (weights with a DataParallel `module.` prefix stripped, epoch, logger, best EMA, mirroring axes, optimiser and loss
  scaler), for a dict read with `weights_only=True` (`checkpoints.load_checkpoint_file`): nnU-Net's own method
  would unpickle the file again without restriction, and patching `torch.load` around it would change a global.
"""
from __future__ import annotations

from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel


def unwrap(network: nn.Module) -> nn.Module:
    """The network without DDP and torch.compile wrappers."""
    if isinstance(network, DistributedDataParallel):
        network = network.module
    return network._orig_mod if isinstance(network, OptimizedModule) else network


def restore_nnunet_state(trainer, checkpoint: dict) -> None:
    """Load an nnU-Net-format checkpoint's contents into an initialised trainer: the downstream trainers' and the
    pretrainer's (which writes the same fields, its network being the pretraining network, and restores its own
    extras, recipe and RNG state, after this)."""
    network = unwrap(trainer.network)
    own_keys = network.state_dict().keys()
    weights = {(k[7:] if k not in own_keys and k.startswith("module.") else k): v
               for k, v in checkpoint["network_weights"].items()}
    trainer.my_init_kwargs = checkpoint["init_args"]
    trainer.current_epoch = checkpoint["current_epoch"]
    trainer.logger.load_checkpoint(checkpoint["logging"])
    trainer._best_ema = checkpoint["_best_ema"]
    trainer.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                              trainer.inference_allowed_mirroring_axes)
    network.load_state_dict(weights)
    trainer.optimizer.load_state_dict(checkpoint["optimizer_state"])
    if trainer.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
        trainer.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
