"""Key queue (FIFO, persistent, wrap-around, case ids and masks, size rule), projector and EMA update against hand
computations."""
from __future__ import annotations

import torch
from torch import nn

from nnssl_plugin.modules.ema import ema_update, frozen_copy_of
from nnssl_plugin.modules.projector import ProjectionHead
from nnssl_plugin.methods.moco.queue import NEVER_FILLED, UNKNOWN_CASE, KeyQueue, derived_queue_size


def test_queue_is_fifo_and_wraps_around():
    queue = KeyQueue(dim=2, size=5)
    batches = [torch.full((2, 2), float(i)) for i in range(1, 4)]  # 6 keys into 5 rows
    for b in batches:
        queue.enqueue(b)
    assert queue.keys[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]  # row 0 overwritten by the 6th key
    assert int(queue.ptr) == 1


def test_case_ids_follow_their_keys_and_unfilled_slots_stay_marked():
    queue = KeyQueue(dim=2, size=5)
    assert queue.case_ids.tolist() == [NEVER_FILLED] * 5 and queue.filled() == 0
    queue.enqueue(torch.ones(2, 2), torch.tensor([7, 8]))
    queue.enqueue(torch.ones(1, 2))  # no case id: a real key of an unknown case
    assert queue.case_ids.tolist() == [7, 8, UNKNOWN_CASE, NEVER_FILLED, NEVER_FILLED] and queue.filled() == 3
    queue.enqueue(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    assert queue.case_ids.tolist() == [3, 8, UNKNOWN_CASE, 1, 2] and queue.filled() == 5


def test_negative_mask_drops_unfilled_slots_and_the_querys_own_case():
    queue = KeyQueue(dim=2, size=4)
    queue.enqueue(torch.ones(3, 2), torch.tensor([5, 6, 5]))
    assert queue.negative_mask(None, 2).tolist() == [[True, True, True, False]] * 2
    assert queue.negative_mask(torch.tensor([5, 9]), 2).tolist() == [[False, True, False, False],
                                                                     [True, True, True, False]]


def test_derived_size_reproduces_moco_v2_and_scales_with_batch_and_momentum():
    assert derived_queue_size(0.999, 256, 0.256, 0) == 65536  # MoCo v2: 256 steps of keys at batch 256
    assert derived_queue_size(0.99, 2, 0.256, 0) == 51  # 25.6 steps at batch 2 with a 100-step EMA horizon
    assert derived_queue_size(0.99, 2, 0.256, 64) == 64  # the floor
    assert derived_queue_size(0.99, 2 * 4, 0.256, 64) == 205  # 4 DDP ranks: effective batch 8


def test_queue_state_survives_a_state_dict_round_trip():
    queue = KeyQueue(dim=3, size=4, generator=torch.Generator().manual_seed(0))
    queue.enqueue(torch.ones(3, 3))
    restored = KeyQueue(dim=3, size=4)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and int(restored.ptr) == 3
    assert torch.equal(restored.case_ids, queue.case_ids)
    assert set(queue.state_dict()) == {"keys", "case_ids", "ptr"}


def test_projector_outputs_unit_vectors_of_the_requested_size():
    out = ProjectionHead(16, hidden_dim=32, out_dim=8)(torch.randn(5, 16))
    assert out.shape == (5, 8) and torch.allclose(out.norm(dim=1), torch.ones(5))


def test_ema_moves_by_one_minus_momentum():
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    frozen_copy_of(source, target)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        source.weight.add_(1.0)
    before = target.weight.clone()
    ema_update(target, source, momentum=0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * source.weight)
