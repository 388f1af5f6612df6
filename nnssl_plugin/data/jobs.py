"""Run one function over many cases, in this process or in worker processes, with a progress bar, handing each
result over as soon as it exists (so a caller can keep every finished case when a later one fails).

A worker that dies without raising (killed by the kernel for lack of memory, a segfault in a reader) breaks the
whole pool in `concurrent.futures`; here that becomes `WorkerDied` carrying how many jobs had finished, and the
jobs still running or queued are cancelled. Exceptions raised inside a job propagate unchanged.
"""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

from tqdm import tqdm


class WorkerDied(RuntimeError):
    """A worker process ended without returning (`finished` jobs had been handed over before)."""

    def __init__(self, finished: int, total: int):
        super().__init__(f"a worker process died after {finished} of {total} job(s)")
        self.finished, self.total = finished, total


def run_jobs(function: Callable, jobs: Sequence[tuple], num_processes: int, on_result: Callable[[object], None],
             description: str = "Preprocessing cases") -> None:
    """`on_result(function(*job))` for every job, in completion order. `num_processes <= 1`: in this process, in
    order. Otherwise a spawn pool of `num_processes` workers with at most 2 × num_processes jobs in flight (a
    broken pool then loses little queued work). A tqdm bar on stderr counts finished jobs, as nnU-Net's
    preprocessing shows one, when stderr is a terminal (a job log or a captured stderr gets none: its error stays
    one line). Raises WorkerDied if a worker process dies."""
    with tqdm(total=len(jobs), desc=description, file=sys.stderr, disable=None if jobs else True) as bar:
        if num_processes <= 1:
            for job in jobs:
                on_result(function(*job))
                bar.update(1)
            return
        finished = 0
        running = set()

        def hand_over_one_batch_of_finished() -> None:
            nonlocal finished, running
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                on_result(future.result())
                finished += 1
                bar.update(1)

        with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                for job in jobs:
                    running.add(pool.submit(function, *job))
                    if len(running) >= 2 * num_processes:
                        hand_over_one_batch_of_finished()
                while running:
                    hand_over_one_batch_of_finished()
            except BrokenProcessPool:
                for future in running:
                    future.cancel()
                raise WorkerDied(finished, len(jobs)) from None
