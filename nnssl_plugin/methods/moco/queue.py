"""The MoCo queue of past keys (He et al. 2020, arXiv 1911.05722): a FIFO ring buffer of keys and the case each
came from, kept as persistent buffers, so `--c` restores it exactly.

Slots that were never written are marked (case id −1) and are no negatives; keys enqueued without a case id get
−2 (a real key of an unknown case). `negative_mask` says, per query, which slots are usable negatives: filled, and
not from the query's own case (a small unlabelled set otherwise fills the queue with false negatives).
Under DDP the keys and case ids of every rank are gathered before they are enqueued, so all ranks hold the same
queue (MoCo's `concat_all_gather`); without an initialised process group it is a plain single-process queue.

Shape: keys buffer (K, d), L2-normalised; case_ids buffer (K,) int64; ptr buffer () long, the next row to write.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnssl_plugin.ops.distributed import gather_from_all_ranks

NEVER_FILLED = -1  # case id of a slot no key was written to
UNKNOWN_CASE = -2  # case id of a key enqueued without one: a real negative for every query


def derived_queue_size(key_momentum: float, effective_batch: int, horizon_ratio: float, minimum: int) -> int:
    """MoCo v2's rule sized to the batch: the queue holds `horizon_ratio` x the key encoder's EMA horizon
    1/(1 − key_momentum) steps of keys (MoCo v2: 65536 keys / 256 batch = 256 steps vs 1000, ratio 0.256), so its
    oldest key comes from an encoder the EMA has not yet forgotten: max(minimum, round(ratio x horizon x batch))."""
    if not 0.0 <= key_momentum < 1.0:
        raise ValueError(f"key_momentum must be in [0, 1), found {key_momentum}; use e.g. 0.99")
    return max(int(minimum), round(horizon_ratio * effective_batch / (1.0 - key_momentum)))


class KeyQueue(nn.Module):
    def __init__(self, dim: int, size: int, generator: torch.Generator | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"the key queue needs at least 1 slot, found size {size}; leave queue_size unset to "
                             f"derive it from the batch and key_momentum")
        init = F.normalize(torch.randn(size, dim, generator=generator), dim=1)  # placeholders, masked until written
        self.register_buffer("keys", init)  # (K, d)
        self.register_buffer("case_ids", torch.full((size,), NEVER_FILLED, dtype=torch.long))  # (K,)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, case_ids: torch.Tensor | None = None) -> None:
        """Write the (all-gathered) keys (n, d) and their case ids (n,) at the pointer, wrapping around; the oldest
        keys are replaced. `case_ids=None`: the keys count as negatives for every query."""
        if case_ids is None:
            case_ids = torch.full((keys.shape[0],), UNKNOWN_CASE, dtype=torch.long, device=keys.device)
        if case_ids.shape != keys.shape[:1]:
            raise ValueError(f"enqueue expects one case id per key ({keys.shape[0]}), found shape "
                             f"{tuple(case_ids.shape)}; pass the batch's case_ids (n,)")
        keys = gather_from_all_ranks(keys.detach()).to(self.keys.dtype)  # (n * world, d)
        case_ids = gather_from_all_ranks(case_ids.to(device=keys.device, dtype=torch.long))  # (n * world,)
        size = self.keys.shape[0]
        if keys.shape[0] > size:
            keys, case_ids = keys[-size:], case_ids[-size:]
        n = keys.shape[0]
        rows = (self.ptr + torch.arange(n, device=self.keys.device)) % size
        self.keys[rows] = keys
        self.case_ids[rows] = case_ids.to(self.case_ids.device)
        self.ptr.copy_((self.ptr + n) % size)

    @torch.no_grad()
    def clear(self) -> None:
        """Mark every slot never filled (no negatives until new keys arrive) and restart at row 0."""
        self.case_ids.fill_(NEVER_FILLED)
        self.ptr.zero_()

    def filled(self) -> int:
        """How many slots hold real keys (a host sync)."""
        return int((self.case_ids != NEVER_FILLED).sum())

    def negative_mask(self, query_case_ids: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n, K) bool: True where a slot is a usable negative for the query (filled; not the query's case)."""
        valid = (self.case_ids != NEVER_FILLED).unsqueeze(0).expand(n, -1)  # (n, K)
        if query_case_ids is None:
            return valid
        same_case = self.case_ids.unsqueeze(0) == query_case_ids.to(self.case_ids.device).view(-1, 1)  # (n, K)
        return valid & ~same_case
