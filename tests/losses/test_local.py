"""Local region InfoNCE against a numpy log-sum-exp reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.losses.local import local_region_infonce


def _ce_numpy(logits):
    m = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
    return float(np.mean(lse - np.diag(logits)))


def test_equals_symmetric_numpy_cross_entropy():
    g = torch.Generator().manual_seed(0)
    d1 = F.normalize(torch.randn(6, 10, generator=g, dtype=torch.float64), dim=1)
    d2 = F.normalize(torch.randn(6, 10, generator=g, dtype=torch.float64), dim=1)
    logits = d1.numpy() @ d2.numpy().T / 0.2
    expected = 0.5 * (_ce_numpy(logits) + _ce_numpy(logits.T))
    assert local_region_infonce(d1, d2, 0.2).item() == pytest.approx(expected, rel=1e-6)


def test_identical_descriptors_for_all_regions_give_log_r():
    d = F.normalize(torch.ones(5, 4), dim=1)
    assert local_region_infonce(d, d).item() == pytest.approx(np.log(5), rel=1e-6)
