"""Loader workers stopped without a traceback (a clean stop on SIGTERM, or the end of a run).

batchgenerators' `NonDetMultiThreadedAugmenter` moves each batch from its worker processes to the main process
through a multiprocessing queue; torch tensors travel as shared memory whose file descriptor the receiving thread
(`results_loop`) fetches from the sending worker. `_finish` tells the workers to exit and then joins that thread: a
batch the thread is receiving at that moment refers to a worker that has just exited, so the fetch fails
(`ConnectionResetError`, or `FileNotFoundError` for a segment already gone) and Python prints the thread's
traceback (28 lines) after the run's clean stop line. The batch was being thrown away anyway.

`QuietlyFinishingAugmenter._finish` runs batchgenerators' own shutdown unchanged and drops only that: an OSError or
EOFError raised by this augmenter's own results thread while it is being finished. Any other exception, of any
thread, still reaches `threading.excepthook`.
"""
from __future__ import annotations

import threading

from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

SHUTDOWN_ERRORS = (OSError, EOFError)  # a batch's shared memory fetched from a worker that has exited


class QuietlyFinishingAugmenter(NonDetMultiThreadedAugmenter):
    """nnU-Net's multi-process augmenter whose shutdown drops its own results thread's failed last receive."""

    def _finish(self, timeout=10, force=False):
        thread = self.results_loop_thread
        if thread is None:
            return super()._finish(timeout, force)
        previous = threading.excepthook

        def hook(args) -> None:
            if args.thread is thread and isinstance(args.exc_value, SHUTDOWN_ERRORS):
                return  # the receive of a batch being discarded, cut off by the worker's exit
            previous(args)

        threading.excepthook = hook
        try:
            return super()._finish(timeout, force)
        finally:
            if threading.excepthook is hook:
                threading.excepthook = previous
