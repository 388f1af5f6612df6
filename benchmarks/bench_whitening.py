"""Cost of moco_zca's whitening per training step: the running statistics (this version) against the per-batch
eigendecomposition it replaced, forward + backward, at the bottleneck sizes of the phantom's plans.

    .venv/bin/python benchmarks/bench_whitening.py [--repeats 50]

Per-batch (before 2026-12-02): the channels split into the groups a batch's positions allowed (>= 2 samples per
channel), one differentiable eigh per group. Running (now): groups from the images behind the running estimate;
"running" mode one eigh per group without gradient, "hybrid" one with gradient for the step plus one for the buffers.
"""
from __future__ import annotations

import argparse

import torch
from bench_pretrain_step import _median_time  # noqa: E402 (benchmarks/ is on sys.path, as in bench_memory_patch)

from nnssl_plugin.modules.whitening import RunningWhitening, apply_whitening, whitening_groups
from nnssl_plugin.ops.whitening import zca_matrix


def _median_ms(fn, repeats: int) -> float:
    return 1000 * _median_time(fn, repeats, warmup=3)


def per_batch_step(x: torch.Tensor, groups: int) -> None:
    c = x.shape[1]
    flat = x.movedim(1, -1).reshape(-1, c)
    out = []
    for chunk in flat.split(c // groups, dim=1):
        w, mean = zca_matrix(chunk, 1e-3)
        out.append((chunk - mean) @ w)
    torch.cat(out, dim=1).mean(0).sum().backward()


def running_step(x: torch.Tensor, module: RunningWhitening) -> None:
    mean, w = module.statistics(x)
    apply_whitening(x.flatten(2).mean(2), mean, w).sum().backward()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; forward + backward, median ms")
    print("| bottleneck (batch 2) | per-batch (groups) | running (groups) | hybrid (groups) |")
    print("| --- | --- | --- | --- |")
    for name, c, spatial in (("3d_cpu: 80 ch, 2x3x3", 80, (2, 3, 3)), ("3d_fullres: 320 ch, 4x3x3", 320, (4, 3, 3))):
        x = torch.randn(2, c, *spatial, requires_grad=True)
        old_groups = next(g for g in range(1, c + 1) if c % g == 0 and x[0, 0].numel() * 2 >= 2 * (c // g))
        new_groups = whitening_groups(c, 2 / 0.01, 1.0)
        cells = [f"{_median_ms(lambda: per_batch_step(x, old_groups), args.repeats):.2f} ({old_groups})"]
        for mode in ("running", "hybrid"):
            module = RunningWhitening(c, new_groups, 1e-3, 0.01, mode).train()
            cells.append(f"{_median_ms(lambda: running_step(x, module), args.repeats):.2f} ({new_groups})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
