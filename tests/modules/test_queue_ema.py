"""Key queue (FIFO, persistent, wrap-around), projector and EMA update against hand computations."""
from __future__ import annotations

import torch
from torch import nn

from nnssl_plugin.modules.ema import ema_update, frozen_copy_of
from nnssl_plugin.modules.projector import ProjectionHead
from nnssl_plugin.modules.queue import KeyQueue


def test_queue_is_fifo_and_wraps_around():
    queue = KeyQueue(dim=2, size=5)
    batches = [torch.full((2, 2), float(i)) for i in range(1, 4)]  # 6 keys into 5 rows
    for b in batches:
        queue.enqueue(b)
    assert queue.keys[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]  # row 0 overwritten by the 6th key
    assert int(queue.ptr) == 1


def test_queue_state_survives_a_state_dict_round_trip():
    queue = KeyQueue(dim=3, size=4, generator=torch.Generator().manual_seed(0))
    queue.enqueue(torch.ones(3, 3))
    restored = KeyQueue(dim=3, size=4)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and int(restored.ptr) == 3
    assert set(queue.state_dict()) == {"keys", "ptr"}


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
