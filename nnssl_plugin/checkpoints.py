"""Checkpoint files: atomic writes, safe loads (`weights_only=True`, never arbitrary unpickling). The random states
they carry are `nnssl_plugin.rng`'s."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nnssl_plugin.disk_space import nbytes_of
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import atomic_write, fsync_folder, owned_or_orphaned, process_tag, settle_permissions


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temp file, fsync and rename (`atomic_write`): a reader never sees half a file."""
    atomic_write(path, lambda f: torch.save(obj, f), needed=nbytes_of(obj))


LATEST, FINAL, PREVIOUS = "checkpoint_latest.pth", "checkpoint_final.pth", "checkpoint_previous.pth"


def keep_previous(path: str | os.PathLike) -> None:
    """Before `checkpoint_latest.pth` is replaced, keep it as `checkpoint_previous.pth` (a hard link: no moment
    without a readable latest checkpoint, no copy of a large file)."""
    path = Path(path)
    if path.name != LATEST or not path.is_file():
        return
    previous = path.with_name(PREVIOUS)
    link = path.with_name(f".{PREVIOUS}.{process_tag()}.link")  # per process: two writers never share it
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # file systems without hard links
        shutil.copy2(path, link)
    os.replace(link, previous)


def save_checkpoint_file(obj: Any, path: str | os.PathLike) -> None:
    """A checkpoint written atomically (temp file, fsync, rename), the one it replaces kept as the previous.
    Temp files of this process and of a killed write of this host (SIGKILL leaves them) are removed first; another
    live process's are left alone (`owned_or_orphaned`)."""
    path = Path(path)
    for stale in [*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{PREVIOUS}.*.link")]:
        if owned_or_orphaned(stale.name):
            stale.unlink(missing_ok=True)
    keep_previous(path)
    atomic_torch_save(obj, path)


def publish_written_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically move a checkpoint that someone else wrote to `tmp` (nnU-Net's own save_checkpoint) to `path`."""
    with open(tmp, "rb+") as f:
        settle_permissions(f.fileno(), path)
        os.fsync(f.fileno())
    keep_previous(path)
    os.replace(tmp, path)
    fsync_folder(Path(path).parent)


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu",
                         log: Callable[[str], None] = print) -> Any:
    """`safe_load` of a checkpoint to resume from; if `checkpoint_latest/final.pth` is unreadable (truncated by a
    full disk or a copy, corrupt) and `checkpoint_previous.pth` exists, say so and resume from that one."""
    try:
        return safe_load(path, map_location)
    except NnsslError as e:
        previous = Path(path).with_name(PREVIOUS)
        if Path(path).name not in (LATEST, FINAL) or not previous.is_file():
            raise
        log(f"WARNING: {e}; resuming from {previous} instead: the epochs since it was written are trained again")
        return safe_load(previous, map_location)


def numpy_scalar_globals() -> list:
    """The numpy types nnU-Net's own checkpoints hold in their logger state (np.float64 values and the like):
    the explicit allow-list for `weights_only=True` loading."""
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    return [core.multiarray.scalar, np.dtype, *dtypes]


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True plus the numpy scalar allow-list; a file that is not a readable torch
    file (truncated, corrupt, or needing arbitrary code to unpickle) raises NnsslError naming it."""
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise NnsslError(f"{path} not found") from None
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in reason:  # torch's text suggests loading it unsafely; we never do
            raise NnsslError(f"cannot load {path} safely (it holds objects other than tensors and plain "
                             f"containers, which could run code when unpickled); refused: use weights files written "
                             f"by nnssl_plugin/nnU-Net") from None
        raise NnsslError(f"cannot load {path} safely ({reason}); it is truncated, corrupt or not a weights file "
                         f"written by nnssl_plugin/nnU-Net") from None
