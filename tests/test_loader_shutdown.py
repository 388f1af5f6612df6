"""Loader workers stopped without a traceback: the results thread's failed receive of a batch from a worker that has
just exited (ConnectionResetError / FileNotFoundError of torch's shared memory) is dropped while the augmenter is
finished; anything else still reaches threading.excepthook. Real batchgenerators augmenters with two real worker
processes; the failed receive is made certain by a queue whose `get` fails once the workers were told to exit, as
the real receive fails in that window."""
from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
from batchgenerators.dataloading.data_loader import DataLoader
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

from nnssl_plugin.loader_shutdown import QuietlyFinishingAugmenter


class Loader(DataLoader):
    def __init__(self):
        super().__init__(None, 1, 1, None, infinite=True)

    def generate_train_batch(self):
        return {"data": np.zeros((1, 8), np.float32)}


def _finish_with_a_failing_receive(cls, error: BaseException, monkeypatch) -> list:
    """Start `cls` with two workers, make its results thread's next receive fail with `error` once the workers are
    told to exit, finish it; returns what reached threading.excepthook."""
    reported = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))
    augmenter = cls(Loader(), None, num_processes=2, num_cached=2, wait_time=0.002)
    next(augmenter)
    abort = augmenter.abort_event

    def get(timeout=None):
        abort.wait(30)  # the workers are told to exit (_finish), then the receive fails
        raise error

    augmenter._queue.get = get  # the results thread looks `get` up on each receive
    try:  # take the batches it holds, so that it goes back to receiving (and waits in `get`)
        while True:
            augmenter.results_loop_queue.get(timeout=1)
    except queue.Empty:
        pass
    augmenter._finish()
    return reported


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   FileNotFoundError(2, "No such file or directory")], ids=["reset", "gone"])
def test_a_receive_cut_off_by_the_workers_exit_prints_nothing(error, monkeypatch):
    assert _finish_with_a_failing_receive(QuietlyFinishingAugmenter, error, monkeypatch) == []


def test_batchgenerators_own_augmenter_prints_it_so_the_test_sees_the_failure(monkeypatch):
    error = ConnectionResetError(104, "Connection reset by peer")
    assert _finish_with_a_failing_receive(NonDetMultiThreadedAugmenter, error, monkeypatch) == [error]


def test_any_other_error_of_the_results_thread_is_still_reported(monkeypatch):
    error = ValueError("a real bug")
    assert _finish_with_a_failing_receive(QuietlyFinishingAugmenter, error, monkeypatch) == [error]


def test_the_previous_hook_is_back_after_the_finish(monkeypatch):
    _finish_with_a_failing_receive(QuietlyFinishingAugmenter, EOFError(), monkeypatch)
    assert threading.excepthook.__name__ == "<lambda>", "the test's hook, not the finish's filter, is installed"
