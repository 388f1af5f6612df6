"""MoCo InfoNCE (with masked queue slots) against an independent log-sum-exp computation and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.losses.moco import moco_infonce_and_logits, moco_logits, top1_accuracy


def moco_infonce(q, k, queue, temperature=0.2, negative_mask=None):
    return moco_infonce_and_logits(q, k, queue, temperature, negative_mask)[0]


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
    loss, logits = moco_infonce_and_logits(q, k, queue, t)  # what MocoNetwork calls: the same loss, and its logits
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-6)
    np.testing.assert_allclose(logits[:, 0].numpy(), np.einsum("nd,nd->n", qn, kn) / t, rtol=1e-5)  # fp32
    np.testing.assert_allclose(logits[:, 1:].numpy(), qn @ mn.T / t, rtol=1e-5, atol=1e-6)


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


def test_masked_columns_do_not_change_the_loss():
    """Masking slots equals dropping them from the queue (numpy log-sum-exp over the kept ones)."""
    q, k, queue = _unit((4, 16), 10), _unit((4, 16), 11), _unit((12, 16), 12)
    mask = torch.rand(4, 12, generator=torch.Generator().manual_seed(13)) > 0.4
    t = 0.2
    expected = []
    for i in range(4):
        kept = queue.numpy()[mask[i].numpy()]
        logits = np.concatenate([[q[i].numpy() @ k[i].numpy()], kept @ q[i].numpy()]) / t
        expected.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
    assert moco_infonce(q, k, queue, t, mask).item() == pytest.approx(np.mean(expected), rel=1e-6)


def test_k_identical_unmasked_negatives_give_log_k_plus_one_whatever_the_masked_ones():
    v = _unit((1, 8), 14)
    queue = torch.cat([v.repeat(9, 1), _unit((20, 8), 15)])  # 9 equal to the positive, 20 others masked
    mask = torch.tensor([True] * 9 + [False] * 20).expand(3, -1)
    loss = moco_infonce(v.repeat(3, 1), v.repeat(3, 1), queue, 0.2, mask)
    assert loss.item() == pytest.approx(math.log(10), rel=1e-6)


def test_masked_logits_are_minus_inf_and_gradients_stay_finite():
    q = _unit((2, 8), 16).requires_grad_()
    mask = torch.tensor([[True, False, True], [False, False, False]])  # the second query has no negative at all
    logits = moco_logits(q, _unit((2, 8), 17), _unit((3, 8), 18), 0.2, mask)
    assert torch.isneginf(logits[0, 2]) and torch.isneginf(logits[1, 1:]).all() and torch.isfinite(logits[:, 0]).all()
    loss = moco_infonce(q, _unit((2, 8), 17), _unit((3, 8), 18), 0.2, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all()


def test_top1_ignores_masked_columns_and_counts_ties_as_misses():
    q = _unit((2, 8), 19)
    queue = torch.cat([q[:1], -q[:1]])  # slot 0 equals query 0 (beats any other positive), slot 1 opposite
    k = _unit((2, 8), 20)
    assert top1_accuracy(moco_logits(q, k, queue, 0.2)) <= 0.5  # query 0 loses to slot 0
    mask = torch.tensor([[False, True], [False, True]])
    masked = moco_logits(q, k, queue, 0.2, mask)
    expected = np.mean([(q[i] @ k[i]).item() > (q[i] @ queue[1]).item() for i in range(2)])
    assert top1_accuracy(masked) == expected
    assert top1_accuracy(moco_logits(q, q, q, 0.2)) == 0.0  # positive ties its own copy in the queue
