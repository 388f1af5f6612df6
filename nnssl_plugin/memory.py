"""The peak memory a pretraining run logs each epoch (and the GPU check reads): on CUDA the most torch's caching
allocator has handed out on the device since the process started (`torch.cuda.max_memory_allocated`: tensors only,
not the allocator's reserve or the CUDA context); elsewhere the process's peak resident set (`ru_maxrss`: everything
the process ever held in RAM, Python and the data loader included)."""
from __future__ import annotations

import sys

import torch

GIB = 2 ** 30


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured) of the peak so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "CUDA tensors (max_memory_allocated)"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (rss if sys.platform == "darwin" else rss * 1024), "process peak RSS"


def peak_memory_line(device: torch.device) -> str:
    value, what = peak_memory_bytes(device)
    return f"peak memory: {value / GIB:.2f} GiB ({what})"
