"""Loader workers that die with their parent.

nnU-Net's background augmenters (batchgenerators) start worker processes that inherit the pretraining run's
record-only stop handlers (`stop_signals`), so a SIGTERM to the whole job does not kill them mid-batch. But when the
main process is killed outright (SIGKILL, the OOM killer) nobody stops them: they are re-parented to init and keep
their memory. `DieWithParent` wraps the data loader's `set_thread_id`, the first call batchgenerators makes in each
worker, and there asks the kernel to SIGKILL the worker when its parent ends (Linux `prctl(PR_SET_PDEATHSIG)`, via
ctypes; SIGKILL cannot be caught, so the inherited handlers cannot keep it alive). Where prctl is not available a
daemon thread checks every second that the parent is still the one that started the worker. A parent already gone
before the call (a race) ends the worker at once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> str:
    """Arm this process to end when `parent_pid` ends; returns how ("prctl" or "watchdog")."""
    how = "watchdog"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                how = "prctl"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    if how == "watchdog":
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    return how


class DieWithParent:
    """A data loader's `set_thread_id`, which batchgenerators calls first in each worker, that arms
    `die_with_parent` there (never in the process that created it). Picklable: the bound method and a pid."""

    def __init__(self, set_thread_id: Callable[[int], None]):
        self.set_thread_id = set_thread_id
        self.parent_pid = os.getpid()

    def __call__(self, thread_id: int) -> None:
        if os.getpid() != self.parent_pid:
            die_with_parent(self.parent_pid)
        self.set_thread_id(thread_id)


def arm_workers_of(loader) -> None:
    """Make the workers batchgenerators starts for `loader` die with this process."""
    loader.set_thread_id = DieWithParent(loader.set_thread_id)
