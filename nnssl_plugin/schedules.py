"""Learning-rate schedules as small pure functions, with a scheduler that nnU-Net's loop steps once per epoch."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler


def warmup_poly_lr(epoch: int, total_epochs: int, initial_lr: float, warmup_epochs: int,
                   exponent: float = 0.9) -> float:
    """Linear warm-up to `initial_lr` over `warmup_epochs` (epoch 0 gets initial/warmup), then nnU-Net's poly decay
    initial · (1 − t)^0.9 over the remaining epochs."""
    if epoch < warmup_epochs:
        return initial_lr * (epoch + 1) / warmup_epochs
    progress = (epoch - warmup_epochs) / max(1, total_epochs - warmup_epochs)
    return initial_lr * (1.0 - min(progress, 1.0)) ** exponent


class WarmupPolyLRScheduler(_LRScheduler):
    def __init__(self, optimizer: Optimizer, initial_lr: float, total_epochs: int, warmup_epochs: int):
        self.initial_lr, self.total_epochs, self.warmup_epochs = initial_lr, total_epochs, warmup_epochs
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None):  # nnU-Net calls step(epoch)
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = warmup_poly_lr(current_step, self.total_epochs, self.initial_lr, self.warmup_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)
