"""Soak: a long pretraining run on the phantom data with the resident memory of the whole process tree sampled
every minute. Memory must not grow beyond 10 % after the first epoch (the two-view loader, the voxel sampler and the
rank monitor must not leak). Not part of CI.

Usage (after `make demo`, which leaves the phantom datasets in ./nnssl_demo_work):
    .venv/bin/python benchmarks/soak.py [--work-dir nnssl_demo_work] [-m hier] [--minutes 30] [--interval 60]
Writes soak_<method>.csv (minute, epoch, rss_mb) in the work dir and prints a markdown summary. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of `pid` and all its descendants (data-loader workers included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
        except OSError:
            continue
        total += int(match.group(1)) if match else 0
    return total / 1024


def current_epoch(fold: Path) -> int | None:
    logs = sorted(fold.glob("training_log_*.txt"))
    if not logs:
        return None
    epochs = re.findall(r"Epoch (\d+) ?\n", logs[-1].read_text())
    return int(epochs[-1]) if epochs else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="nnssl_demo_work")
    p.add_argument("-m", default="hier")
    p.add_argument("-c", default="3d_cpu")
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--interval", type=float, default=60)
    p.add_argument("--iters", type=int, default=50)
    args = p.parse_args()
    work = Path(args.work_dir).resolve()
    if not (work / "nnUNet_preprocessed" / "Dataset990_PhantomUnlabelled").is_dir():
        raise SystemExit(f"{work} holds no prepared demo data; run `make demo` first")
    env = {**os.environ, **{v: str(work / v) for v in ("nnUNet_raw", "nnUNet_preprocessed")},
           "nnUNet_results": str(work / "soak_results")}
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "nnssl_pretrain"), "-d", "990", "-m", args.m, "-c", args.c, "-device", "cpu",
               "--epochs", "1000", "--iters", str(args.iters), "--seed", "0"]
    fold = (work / "soak_results" / "Dataset990_PhantomUnlabelled" /
            f"nnsslPretrainer_{args.m}_1000epochs_{args.iters}iters_seed0__nnsslPretrainPlans__{args.c}" / "fold_all")
    shutil.rmtree(fold.parent, ignore_errors=True)  # a fresh run each soak (nnssl_pretrain refuses a silent restart)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    rows, start = [], time.monotonic()
    try:
        while time.monotonic() - start < args.minutes * 60 and proc.poll() is None:
            time.sleep(args.interval)
            rows.append((round((time.monotonic() - start) / 60, 2), current_epoch(fold), round(tree_rss_mb(proc.pid), 1)))
            print(*rows[-1], flush=True, file=sys.stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with open(work / f"soak_{args.m}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["minute", "epoch", "rss_mb"])
        writer.writerows(rows)
    after_first = [r for r in rows if r[1] is not None and r[1] >= 1]
    if not after_first:
        print("the run did not finish its first epoch; nothing to compare")
        return 1
    base, peak = after_first[0][2], max(r[2] for r in after_first)
    print(f"| method | minutes | epochs | RSS after epoch 1 | max RSS later | growth (target <= 10 %) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {args.m} | {rows[-1][0]} | {rows[-1][1]} | {base:.0f} MB | {peak:.0f} MB | "
          f"{100 * (peak - base) / base:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
