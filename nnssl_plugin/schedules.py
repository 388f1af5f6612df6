"""Learning-rate schedules as small pure functions, with a scheduler that nnU-Net's loop steps once per epoch."""
from __future__ import annotations

import math

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


def recipe_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int, schedule: str) -> float:
    """Learning rate of optimiser step `step` (0-based) of `total_steps`: linear warm-up peak·(step+1)/warmup_steps,
    then over the remaining steps (t from 0 to 1) cosine peak·(1 + cos πt)/2, nnU-Net's poly peak·(1 − t)^0.9, or
    constant peak."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return peak_lr * (1.0 - t) ** 0.9
    if schedule == "constant":
        return peak_lr
    raise ValueError(f"unknown schedule '{schedule}'")


class StepwiseLRScheduler(_LRScheduler):
    """Per-optimiser-step schedule (`recipe_lr`) inside nnU-Net's per-epoch loop: nnU-Net calls `step(epoch)` at
    each epoch start, which sets the step counter to epoch × iterations (so `--c` resumes the schedule exactly);
    the trainer calls `advance()` after every optimiser step."""

    def __init__(self, optimizer: Optimizer, peak_lr: float, iterations_per_epoch: int, total_epochs: int,
                 warmup_steps: int, schedule: str):
        self.peak_lr, self.iterations, self.warmup_steps, self.schedule = (peak_lr, iterations_per_epoch,
                                                                           warmup_steps, schedule)
        self.total_steps = iterations_per_epoch * total_epochs
        self.global_step = 0
        super().__init__(optimizer, -1)

    def _set(self) -> None:
        lr = recipe_lr(self.global_step, self.total_steps, self.peak_lr, self.warmup_steps, self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    def step(self, current_step: int | None = None):  # nnU-Net: step(epoch) at each epoch start
        if current_step is not None and current_step >= 0:
            self.global_step = current_step * self.iterations
        self._set()

    def advance(self) -> None:
        self.global_step += 1
        self._set()


def warmup_line(peak_lr: float, warmup_steps: int, total_steps: int) -> str:
    """The one log line on the warm-up of `recipe_lr`: how long it is, and a warning when the run is shorter than
    the warm-up (the learning rate then never reaches its peak: it ends at peak·total/warmup)."""
    if warmup_steps <= 0:
        return f"learning rate: no warm-up, peak {peak_lr:g} from the first step"
    if total_steps < warmup_steps:
        last = recipe_lr(total_steps - 1, total_steps, peak_lr, warmup_steps, "constant")
        return (f"WARNING: this run ({total_steps} steps) is shorter than the warm-up ({warmup_steps} steps): the "
                f"learning rate never leaves the warm-up and ends at {last:.3g} instead of the peak {peak_lr:g}; run "
                f"longer (--epochs, --iters) or shorten the warm-up (--warmup)")
    return f"learning rate: linear warm-up over the first {warmup_steps} of {total_steps} steps to the peak {peak_lr:g}"
