"""A weights file far larger than its architecture's weights is refused before it is hashed or read.

An export holds one U-Net's tensors (the decoder's alias of the encoder stored once), a whitening of the bottleneck
channels at most (C + C² values) and a few kB of plans and provenance, so its size stays below the planned
network's state-dict bytes. A file more than `MAX_FACTOR` × those bytes (+ `SLACK` for the metadata of a very small
network) is not an export of these plans: hashing it (sha256 of a 2 GB file: seconds) and loading it would be
wasted, or worse. Measured: the phantom 3d_cpu U-Net's state dict is 11.7 MB (its decoder's encoder alias counted
twice), its export file 6.0 MB.
"""
from __future__ import annotations

import os

import torch

from nnssl_plugin.disk_space import size_text
from nnssl_plugin.errors import NnsslError

MAX_FACTOR = 2
SLACK = 1 << 20  # 1 MiB


def state_dict_bytes(module: torch.nn.Module) -> int:
    """Bytes of `module`'s state dict, every entry counted (aliases too: the bound stays generous)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def refuse_oversized(path: str | os.PathLike, module: torch.nn.Module, named_by: str) -> None:
    """NnsslError in one line when the file at `path` exceeds MAX_FACTOR × `module`'s state-dict bytes + SLACK."""
    size, expected = os.stat(path).st_size, state_dict_bytes(module)
    limit = MAX_FACTOR * expected + SLACK
    if size > limit:
        raise NnsslError(f"{path} (named by plans '{named_by}') is {size_text(size)}, more than {MAX_FACTOR} x the "
                         f"{size_text(expected)} of the architecture's weights it should hold (+ 1 MB): not read or "
                         f"hashed, it is not an export of these plans; rerun nnssl_export --overwrite")
