"""The peak-memory log line: on a CPU the process's ru_maxrss in KiB (Linux), read independently here."""
import resource
import sys

import numpy as np
import pytest
import torch

from nnssl_plugin.memory import GIB, peak_memory_bytes, peak_memory_line


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_cpu_peak_is_ru_maxrss_and_grows_with_a_large_allocation():
    before, what = peak_memory_bytes(torch.device("cpu"))
    block = np.ones(300 * 2 ** 20 // 8)  # 300 MiB touched
    after, _ = peak_memory_bytes(torch.device("cpu"))
    assert after == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert after >= block.nbytes and "RSS" in what
    assert after >= before
    assert peak_memory_line(torch.device("cpu")).startswith(f"peak memory: {after / GIB:.2f} GiB")
