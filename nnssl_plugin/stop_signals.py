"""A graceful stop of a pretraining run on SIGTERM, SIGUSR1 (what cluster schedulers send before they kill a job,
SLURM's `--signal` included) or Ctrl-C (SIGINT).

`StopSignals` installs handlers that only record the signal; the trainer asks `requested()` at each optimiser step
boundary and then stops: the run's last `checkpoint_latest.pth` (written after every epoch) is the resume point, so
`--c` continues bit for bit as after an uninterrupted epoch and nothing half-done is saved. A checkpoint write is never
interrupted by the signal (the handler returns at once). Installed before nnU-Net starts its data-loader workers, the
handlers are inherited by them (fork), so a signal sent to the whole job does not kill a worker under the main
process either. A second Ctrl-C raises KeyboardInterrupt at once. Under DDP every rank stops at the same step
(`requested` is all-reduced: a rank that saw no signal stops with the others).
"""
from __future__ import annotations

import signal
import threading

import torch

from nnssl_plugin.ops.distributed import all_reduce_max, is_distributed

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


class StopTraining(Exception):
    """Raised at a step boundary after a stop signal; carries the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Context manager: record SIGTERM/SIGUSR1/SIGINT while active, restore the previous handlers on exit.
    Outside the main thread (where Python cannot install handlers) it records nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the step to end
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()
        return False

    def requested(self, device: torch.device) -> int | None:
        """The signal to stop for (the largest signal number any rank saw under DDP), or None."""
        seen = self.signum or 0
        if is_distributed():
            seen = int(all_reduce_max(torch.tensor([seen], device=device)).item())
        return seen or None
