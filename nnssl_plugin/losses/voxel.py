"""Voxel-wise NT-Xent (SimCLR's loss, Chen et al. 2020, applied per voxel as in Kats et al. 2024, arXiv 2401.06473).

Embeddings of 2k sampled voxels: e1[i] and e2[i] are the same physical voxel seen in the two views (positives);
every other voxel of both views is a negative. With z = [e1; e2] (2k, d), s_ab = z_a · z_b / τ:

    L = (1 / 2k) Σ_a −log( exp(s_{a,p(a)}) / Σ_{b ≠ a} exp(s_ab) ),   p(a) = the other view's copy of a

Symmetric in the two views by construction. Computed in fp32 under autocast.

`voxel_nt_xent_with_top1` (what `hier` and `voxel2vec` call) computes L and its gradient together in blocks, so each
block stays in cache (the plain autograd form holds the whole (2k × 2k) logits, 64 MB for Kats et al.'s 1024 voxels ×
batch 2, several times over, and its log-sum-exp alone costs more than the products). In one process the logits
S = Z Zᵀ / τ are symmetric (`_SymmetricBlockwiseNTXent`): only the blocks on and above the diagonal are multiplied,
and with G = softmax − one-hot the gradient dL/dZ = (G + Gᵀ) Z / τ takes one product per block side, so the loss
costs 1.5 products of (2k × 2k × d) instead of 3 and one exp per logit; it keeps the two exps of each upper block
between its passes (the size of the whole logits: 64 MB at 2k = 4,096).
Under DDP the columns are every rank's voxels and the rows only this rank's (`_BlockwiseNTXent`, rows at a time).
The plain autograd form of the same loss, the reference its tests compare both with, is in
tests/losses/voxel_reference.py.

Shape: e1, e2 (k, d), L2-normalised; returns a scalar.
"""
from __future__ import annotations

import torch

from nnssl_plugin.ops.distributed import gather_with_grad, is_distributed


ROW_BLOCK = 512  # rows (and, in one process, columns) of logits per block: 512 x 512 fp32 = 1 MB


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


class _SymmetricBlockwiseNTXent(torch.autograd.Function):
    """The single-process loss over z = [e1; e2] (2k, d): the same sum and top-1 count as `_BlockwiseNTXent` with
    columns = rows, from the blocks S_IJ (J >= I) of the symmetric logits only. Row a's positive is p(a) = a ± k.

    1. S_IJ for J >= I (the self-similarity on the diagonal at −inf), and each row's maximum m_a over its row, read
       from S_IJ's rows for a in I and from its columns for a in J.
    2. r_a = Σ_b exp(S_ab − m_a), from the same blocks, each block keeping exp(S_IJ − m_I) and exp(S_IJ − m_J);
       lse_a = m_a + log r_a; the positive logit s_a,p(a) is a block entry; the loss Σ_a lse_a − s_a,p(a); row a is
       correct when s_a,p(a) = m_a.
    3. W = G + Gᵀ = P + Pᵀ − 2Y (P the row softmax, Y the symmetric pair indicator): on block (I, J),
       W_IJ[a, c] = exp(S_ac − m_a) / r_a + exp(S_ac − m_c) / r_c (the second is Pᵀ: S is symmetric), minus 2
       where c = p(a); then
       grad_I += W_IJ Z_J / τ and, off the diagonal, grad_J += W_IJᵀ Z_I / τ."""

    @staticmethod
    def forward(ctx, z, temperature: float):
        n = z.shape[0]
        k = n // 2
        starts = list(range(0, n, ROW_BLOCK))
        partner = torch.cat([torch.arange(k, n), torch.arange(0, k)]).to(z.device)  # p(a)
        blocks = {}  # (I, J) -> S_IJ, J >= I
        row_max = torch.full((n,), float("-inf"), dtype=z.dtype, device=z.device)
        positive = torch.empty_like(row_max)  # s_a,p(a), read from the blocks that give m_a (exact ties for top-1)
        for i in starts:
            zi = z[i:i + ROW_BLOCK]
            for j in starts[starts.index(i):]:
                s = zi @ z[j:j + ROW_BLOCK].T / temperature  # (bi, bj)
                if i == j:
                    s.fill_diagonal_(float("-inf"))
                blocks[i, j] = s
                bi, bj = s.shape
                row_max[i:i + bi] = torch.maximum(row_max[i:i + bi], s.max(dim=1).values)
                a = torch.arange(i, i + bi, device=z.device)
                inside = (partner[a] >= j) & (partner[a] < j + bj)
                positive[a[inside]] = s[a[inside] - i, partner[a[inside]] - j]
                if i != j:  # the rows of J read the block's columns
                    row_max[j:j + bj] = torch.maximum(row_max[j:j + bj], s.max(dim=0).values)
                    c = torch.arange(j, j + bj, device=z.device)
                    inside = (partner[c] >= i) & (partner[c] < i + bi)
                    positive[c[inside]] = s[partner[c[inside]] - i, c[inside] - j]
        row_sum = torch.zeros_like(row_max)
        for (i, j), s in blocks.items():  # S_IJ is replaced by exp(S_IJ − m_I) and exp(S_IJ − m_J)
            bi, bj = s.shape
            by_row = torch.exp(s - row_max[i:i + bi, None])
            row_sum[i:i + bi] += by_row.sum(dim=1)
            by_column = None
            if i != j:
                by_column = torch.exp(s - row_max[None, j:j + bj])
                row_sum[j:j + bj] += by_column.sum(dim=0)
            blocks[i, j] = (by_row, by_column)
        total = (row_max + torch.log(row_sum) - positive).sum()  # Σ_a lse_a − s_a,p(a)
        correct = (positive >= row_max).sum()
        inverse = 1.0 / row_sum
        grad = torch.zeros_like(z)
        for (i, j), (by_row, by_column) in blocks.items():
            bi, bj = by_row.shape
            p = by_row * inverse[i:i + bi, None]  # P_IJ, the row softmax
            w = p + p.T if i == j else p + by_column * inverse[None, j:j + bj]  # + P_JIᵀ
            a = torch.arange(i, i + bi, device=z.device)
            inside = (partner[a] >= j) & (partner[a] < j + bj)
            w[a[inside] - i, partner[a[inside]] - j] -= 2.0  # − (Y + Yᵀ) at the pairs
            grad[i:i + bi] += w @ z[j:j + bj]
            if i != j:
                grad[j:j + bj] += w.T @ z[i:i + bi]
        ctx.save_for_backward(grad / temperature)
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx, grad_total, grad_correct):
        (grad,) = ctx.saved_tensors
        return grad * grad_total, None


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
        if columns is rows:  # one process: symmetric logits
            loss_sum, correct = _SymmetricBlockwiseNTXent.apply(rows, temperature)
            return loss_sum / (2 * k), correct.item() / (2 * k)
        local = torch.arange(k, device=rows.device) + offset
        own, target = torch.cat([local, local + total_k]), torch.cat([local + total_k, local])
        loss_sum, correct = _BlockwiseNTXent.apply(rows, columns, own, target, temperature)
    return loss_sum / (2 * total_k / world), correct.item() / (2 * k)
