"""The voxel NT-Xent's two forms, timed interleaved in one process: the symmetric upper-block form the plugin uses in
one process (`_SymmetricBlockwiseNTXent`) against the rows-at-a-time form DDP uses (`_BlockwiseNTXent`, here with
one rank's columns = its rows), forward + backward, on k random unit embeddings per view (2k rows of logits).

    .venv/bin/python benchmarks/bench_voxel_ntxent.py [--k 2048] [--dim 128] [--repeats 7] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import nnssl_plugin.losses.voxel as voxel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=2048, help="voxels per view (hier at 3d_cpu: 2 crops x 1024)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    e1 = F.normalize(torch.randn(args.k, args.dim, generator=g), dim=1)
    e2 = F.normalize(torch.randn(args.k, args.dim, generator=g), dim=1)
    k = args.k

    def symmetric():
        a, b = e1.clone().requires_grad_(True), e2.clone().requires_grad_(True)
        loss, _ = voxel.voxel_nt_xent_with_top1(a, b, 0.1)
        loss.backward()
        return loss.item(), a.grad

    def rows_at_a_time():
        a, b = e1.clone().requires_grad_(True), e2.clone().requires_grad_(True)
        z, local = torch.cat([a, b]), torch.arange(k)
        total, _ = voxel._BlockwiseNTXent.apply(z, z, torch.cat([local, local + k]), torch.cat([local + k, local]), 0.1)
        loss = total / (2 * k)
        loss.backward()
        return loss.item(), a.grad

    (ls, gs), (lr, gr) = symmetric(), rows_at_a_time()
    print(f"loss {ls:.6f} vs {lr:.6f}; largest gradient difference {(gs - gr).abs().max().item():.2e}")
    times = {"symmetric": [], "rows at a time": []}
    for _ in range(args.repeats):
        for name, fn in (("symmetric", symmetric), ("rows at a time", rows_at_a_time)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {n: sorted(v)[len(v) // 2] * 1e3 for n, v in times.items()}
    for name, ms in median.items():
        print(f"{name}: median {ms:.0f} ms (min {min(times[name]) * 1e3:.0f}) over {args.repeats}")
    print(f"ratio symmetric / rows at a time: {median['symmetric'] / median['rows at a time']:.2f} "
          f"(2k = {2 * k} rows, d = {args.dim}, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
