"""Voxel NT-Xent against an independent numpy log-sum-exp computation; symmetry; closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.losses.voxel import voxel_nt_xent_with_top1
from voxel_reference import nt_xent_from_logits, positive_top1, voxel_nt_xent_logits


def voxel_nt_xent(e1, e2, temperature=0.1):
    return voxel_nt_xent_with_top1(e1, e2, temperature)[0]


def _unit(shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def _numpy_nt_xent(e1, e2, t):
    z = np.concatenate([e1, e2])
    k = len(e1)
    total = 0.0
    for a in range(2 * k):
        p = a + k if a < k else a - k
        others = [b for b in range(2 * k) if b != a]
        s = np.array([z[a] @ z[b] / t for b in others])
        m = s.max()
        total += (np.log(np.exp(s - m).sum()) + m) - z[a] @ z[p] / t
    return total / (2 * k)


def test_equals_numpy_log_sum_exp():
    e1, e2 = _unit((7, 5), 0), _unit((7, 5), 1)
    assert voxel_nt_xent(e1, e2, 0.1).item() == pytest.approx(_numpy_nt_xent(e1.numpy(), e2.numpy(), 0.1), rel=1e-6)


def test_is_symmetric_in_the_views():
    e1, e2 = _unit((9, 4), 2), _unit((9, 4), 3)
    assert voxel_nt_xent(e1, e2).item() == pytest.approx(voxel_nt_xent(e2, e1).item(), rel=1e-6)  # fp32 sums


def test_identical_embeddings_everywhere_give_log_of_2k_minus_1():
    v = _unit((1, 3), 4).repeat(6, 1)
    assert voxel_nt_xent(v, v).item() == pytest.approx(math.log(11), rel=1e-6)


@pytest.mark.parametrize("block, k", [(5, 11), (4, 4), (64, 11), (3, 10), (7, 7)])
def test_blockwise_loss_gradient_and_top1_equal_the_plain_autograd_form(monkeypatch, block, k):
    """Single process: the symmetric blocks (partial last blocks, pairs inside one block, one block only, a block
    edge at k) against the whole logits and PyTorch's autograd."""
    import nnssl_plugin.losses.voxel as voxel

    monkeypatch.setattr(voxel, "ROW_BLOCK", block)
    e1, e2 = _unit((k, 6), 7), _unit((k, 6), 8)
    e2[: k // 3] = e1[: k // 3]  # some positives are their row's maximum: top-1 counts ties at the maximum
    _compare_with_reference(voxel.voxel_nt_xent_with_top1, e1, e2)


def test_row_blockwise_form_used_under_ddp_equals_the_plain_autograd_form(monkeypatch):
    """The rows-at-a-time form (DDP's, columns = every rank's voxels), here with one rank's columns = its rows."""
    import nnssl_plugin.losses.voxel as voxel

    monkeypatch.setattr(voxel, "ROW_BLOCK", 5)  # several blocks and a partial last one for 2k = 22 rows
    e1, e2 = _unit((11, 6), 7), _unit((11, 6), 8)

    def row_blockwise(a1, a2, temperature):
        k = a1.shape[0]
        rows = torch.cat([a1, a2])
        local = torch.arange(k)
        total, correct = voxel._BlockwiseNTXent.apply(rows, rows.clone(), torch.cat([local, local + k]),
                                                      torch.cat([local + k, local]), temperature)
        return total / (2 * k), correct.item() / (2 * k)

    _compare_with_reference(row_blockwise, e1, e2)


def _compare_with_reference(loss_fn, e1, e2):
    a1, a2 = e1.clone().requires_grad_(True), e2.clone().requires_grad_(True)
    loss, top1 = loss_fn(a1, a2, 0.2)
    loss.backward()
    b1, b2 = e1.clone().requires_grad_(True), e2.clone().requires_grad_(True)
    logits, target = voxel_nt_xent_logits(b1, b2, 0.2)
    reference = nt_xent_from_logits(logits, target)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(a1.grad, b1.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a2.grad, b2.grad, rtol=1e-5, atol=1e-7)
    assert top1 == pytest.approx(positive_top1(logits, target))
