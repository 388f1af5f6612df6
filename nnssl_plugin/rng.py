"""Random streams: the one home of seeding a run, capturing and restoring every generator (python `random`, numpy's
global, torch's CPU, every CUDA device, MPS) and running a block on isolated streams.

`capture()` returns tensors, numbers and lists only (loadable with `torch.load(weights_only=True)`), so checkpoints
carry it. `restore(state, log)` sets every stream the state holds; a state captured with another number of CUDA
devices (a checkpoint resumed on another machine) restores the CPU streams and says so in one line through `log`.
"""
from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterator

import numpy as np
import torch

from nnssl_plugin.ops.distributed import rank


def seed_run(seed: int) -> int:
    """Seed Python, numpy and torch with seed + this process's DDP rank; returns the seed used."""
    seed = seed + rank()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    return seed


def capture() -> dict:
    """Every generator's state: "python", "numpy" (keys, pos, has_gauss, cached_gaussian), "torch" (CPU), and
    "cuda" (one state per device) / "mps" where those devices exist."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore(state: dict, log: Callable[[str], None] | None = None) -> None:
    """Set every stream `state` (from `capture`) holds. CUDA states are set when this machine has as many devices;
    otherwise (and for an MPS state without MPS) the CPU streams are restored and `log` gets one line."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(tuple(state["python"]) if isinstance(state["python"], list) else state["python"])
    cuda = state.get("cuda")
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda is not None and len(cuda) == here:
        torch.cuda.set_rng_state_all(cuda)
    elif cuda is not None and log is not None:
        log(f"random state of {len(cuda)} CUDA device(s) saved, {here} here: CPU streams restored, the CUDA streams "
            f"start from this run's seed")
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    elif "mps" in state and log is not None:
        log("random state of an MPS device saved, none here: CPU streams restored, MPS streams not")


@contextlib.contextmanager
def isolated(seed: int) -> Iterator[None]:
    """Inside the block every stream is seeded with `seed`; on exit all are restored, so the streams outside
    continue as if the block never ran."""
    saved = capture()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        restore(saved)
