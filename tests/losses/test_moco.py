"""MoCo InfoNCE against an independent log-sum-exp computation and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.losses.moco import moco_infonce, moco_logits, top1_accuracy


def _unit(shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_equals_numpy_log_sum_exp():
    q, k, queue = _unit((5, 16), 0), _unit((5, 16), 1), _unit((40, 16), 2)
    t = 0.2
    qn, kn, mn = q.numpy(), k.numpy(), queue.numpy()
    expected = []
    for i in range(5):
        logits = np.concatenate([[qn[i] @ kn[i]], mn @ qn[i]]) / t
        expected.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
    assert moco_infonce(q, k, queue, t).item() == pytest.approx(np.mean(expected), rel=1e-6)


def test_equal_similarities_give_log_k_plus_one():
    """Query, key and all K = 31 queued keys identical: every logit equal, so the loss is log(K + 1)."""
    v = _unit((1, 8), 3)
    loss = moco_infonce(v.repeat(4, 1), v.repeat(4, 1), v.repeat(31, 1), 0.2)
    assert loss.item() == pytest.approx(math.log(32), rel=1e-6)


def test_key_and_queue_get_no_gradient():
    q = _unit((3, 8), 5).requires_grad_()
    k = _unit((3, 8), 6).requires_grad_()
    queue = _unit((10, 8), 7).requires_grad_()
    moco_infonce(q, k, queue).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_top1_counts_queries_whose_positive_wins():
    q = _unit((4, 8), 8)
    queue = -q[:2]  # negatives opposite to the first two queries
    logits = moco_logits(q, q, queue, 0.2)  # positives have similarity 1: always top
    assert top1_accuracy(logits) == 1.0
    assert top1_accuracy(moco_logits(q, -q, q, 0.2)) == 0.0
