"""Voxel-wise NT-Xent (SimCLR's loss, Chen et al. 2020, applied per voxel as in Kats et al. 2024, arXiv 2401.06473).

Embeddings of 2k sampled voxels: e1[i] and e2[i] are the same physical voxel seen in the two views (positives);
every other voxel of both views is a negative. With z = [e1; e2] (2k, d), s_ab = z_a · z_b / τ:

    L = (1 / 2k) Σ_a −log( exp(s_{a,p(a)}) / Σ_{b ≠ a} exp(s_ab) ),   p(a) = the other view's copy of a

Symmetric in the two views by construction. Computed in fp32 under autocast.

`voxel_nt_xent_with_top1` (what `hier` and `voxel2vec` call) computes L and its gradient together, a block of rows
at a time (`_BlockwiseNTXent`): the (2k × 2k) logits are never held at once (64 MB for Kats et al.'s 1024 voxels ×
batch 2), which keeps each block in cache and halves the loss's cost on a CPU. The plain autograd form of the same
loss, the reference its tests compare it with, is in tests/losses/voxel_reference.py.

Shape: e1, e2 (k, d), L2-normalised; returns a scalar.
"""
from __future__ import annotations

import torch

from nnssl_plugin.ops.distributed import gather_with_grad, is_distributed


ROW_BLOCK = 512  # rows of logits per block: 512 x 4096 fp32 = 8 MB


class _BlockwiseNTXent(torch.autograd.Function):
    """Σ over rows of −log softmax(logits)[positive], rows × columns logits built a block of rows at a time; the
    gradient (softmax − one-hot, back through the two matmuls) is formed in the same pass and scaled in backward.
    Also returns the number of rows whose positive is the top candidate (no gradient)."""

    @staticmethod
    def forward(ctx, rows, columns, own, target, temperature: float):
        grad_rows, grad_columns = torch.empty_like(rows), torch.zeros_like(columns)
        total = rows.new_zeros(())
        correct = torch.zeros((), dtype=torch.long, device=rows.device)
        for start in range(0, rows.shape[0], ROW_BLOCK):
            block = slice(start, start + ROW_BLOCK)
            r = rows[block]  # (b, d)
            index = torch.arange(r.shape[0], device=rows.device)
            logits = r @ columns.T / temperature  # (b, M)
            logits[index, own[block]] = float("-inf")
            lse = torch.logsumexp(logits, dim=1)  # (b,)
            total += (lse - logits[index, target[block]]).sum()
            correct += (logits.argmax(dim=1) == target[block]).sum()
            g = torch.exp(logits - lse[:, None])  # softmax; the own column is exactly 0
            g[index, target[block]] -= 1.0  # dL/dlogits of each row's term
            grad_rows[block] = g @ columns / temperature
            grad_columns += g.T @ r / temperature
        ctx.save_for_backward(grad_rows, grad_columns)
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx, grad_total, grad_correct):
        grad_rows, grad_columns = ctx.saved_tensors
        return grad_rows * grad_total, grad_columns * grad_total, None, None, None


def voxel_nt_xent_with_top1(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.1, gather: bool = False
                            ) -> tuple[torch.Tensor, float]:
    """L and the pretext top-1 (rows whose positive is their most similar candidate). With `gather` under DDP the
    columns (negatives) are every rank's voxels, [E1_all; E2_all], and each rank returns its rows' share of the
    global mean (sum over its rows / (2K / world), K = Σ_r k_r): the ranks' losses average to the single-process
    loss of the whole batch even when ranks sample different numbers of voxels, and DDP's gradient averaging gives
    its gradient."""
    if e1.shape != e2.shape or e1.dim() != 2:
        raise ValueError(f"expects two (k, d) embeddings of equal shape, got {tuple(e1.shape)} and {tuple(e2.shape)}")
    k = e1.shape[0]
    with torch.autocast(device_type=e1.device.type, enabled=False):
        rows = torch.cat([e1, e2]).float()  # (2k, d)
        if gather and is_distributed():
            all1, offset, world = gather_with_grad(e1.float())
            all2, _, _ = gather_with_grad(e2.float())
            columns, total_k = torch.cat([all1, all2]), all1.shape[0]
        else:
            columns, offset, world, total_k = rows, 0, 1, k
        local = torch.arange(k, device=rows.device) + offset
        own, target = torch.cat([local, local + total_k]), torch.cat([local + total_k, local])
        loss_sum, correct = _BlockwiseNTXent.apply(rows, columns, own, target, temperature)
    return loss_sum / (2 * total_k / world), correct.item() / (2 * k)
