"""The GPU check: every method pretrained on the phantom for a fixed number of steps with AMP and torch.compile,
then probed; prints step time, peak memory and probe Dice per method (a markdown table for docs/BENCHMARKS.md).

Each method runs as a user runs it, through the real command (module form, so that no console script is needed):

    nnssl_pretrain -d 990 -m <m> -c <C> -device <D> --epochs 2 --iters <S> --seed 0 --eval-target 991 --eval-every 2
                   --probe-every 2 [--bf16]                   with nnUNet_compile=1 (or 0 for methods not in --compile)

Epoch 1 holds the compilation and the warm-up; epoch 2's time / S is the step time reported (nnU-Net's epoch time:
its validation iterations, max(16, S / 5) forward passes, are included). The probe is the online
probe at the end (nnssl_probe's defaults: fold 0 of Dataset991, 2000 voxels per class) beside its random-init
reference on the same levels; peak memory is the run's last `peak memory:` log line (CUDA: max_memory_allocated).

On the GPU machine (torch there, nnU-Net not): benchmarks/gpu_bundle.sh here, then benchmarks/gpu_check.sh there
(docs/BENCHMARKS.md, "GPU check"). On a CPU the same code paths run at a tiny size in tests/test_gpu_check.py
(in fp32: a CPU without native bf16 emulates it about 60x slower; `--bf16` is tested there on one step):

    python benchmarks/gpu_check.py --work-dir <demo work dir> -c 3d_cpu -device cpu --steps 2 \
        --compile moco_zca hier
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("moco", "moco_zca", "hier", "voxel2vec")
RUNS = "Dataset990_PhantomUnlabelled"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default=None, help="folder holding nnUNet_preprocessed with Dataset990 prepared "
                   "and Dataset991 preprocessed (default: the nnUNet_* variables as set)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-device", default="cuda")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--steps", type=int, default=30, help="steps per epoch; two epochs are run (default 30)")
    p.add_argument("--compile", nargs="*", default=None, metavar="METHOD",
                   help="methods to run with torch.compile (default: every method; none with an empty list)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast instead of nnU-Net's fp16 AMP")
    p.add_argument("--out", default=None, help="also write the per-method records to this JSON")
    return p.parse_args(argv)


def last_float(pattern: str, text: str) -> float | None:
    found = re.findall(pattern, text)
    return float(found[-1]) if found else None


def check_method(args, method: str, compiled: bool) -> dict:
    env = {**os.environ, "nnUNet_compile": "1" if compiled else "0"}
    command = [sys.executable, "-m", "nnssl_plugin.cli.pretrain", "-d", "990", "-m", method, "-c", args.c, "-device",
               args.device, "--epochs", "2", "--iters", str(args.steps), "--seed", "0", "--eval-target", "991",
               "--eval-every", "2", "--probe-every", "2", *(["--bf16"] if args.bf16 else [])]
    start = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode:
        sys.exit(f"{method} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run = next(Path(os.environ["nnUNet_results"], RUNS).glob(
        f"nnsslPretrainer_{method}_2epochs_{args.steps}iters_seed0__nnsslPretrainPlans__{args.c}/fold_all"))
    log = sorted(run.glob("training_log_*.txt"))[-1].read_text()
    epochs = [float(t) for t in re.findall(r"Epoch time: ([\d.]+) s", log)]
    probes = sorted((run / "online_probe").glob("epoch_*.json"))
    probe = json.loads(probes[-1].read_text()) if probes else {}
    reference = json.loads((run / "online_probe" / "random_init.json").read_text())
    return {"method": method, "compiled": compiled and "Using torch.compile" in log, "precision": "bf16" if args.bf16
            else "amp", "epoch_seconds": epochs, "step_ms": 1000 * epochs[-1] / args.steps if epochs else None,
            "peak_gib": last_float(r"peak memory: ([\d.]+) GiB", log), "train_loss": last_float(r"train_loss ([-\d.]+)",
                                                                                              log),
            "probe_dice": probe.get("mean_dice"), "random_dice": reference.get("mean_dice"),
            "levels": reference.get("levels"), "wall_seconds": wall}


def main(argv=None) -> int:
    args = parse(argv)
    if args.work_dir:
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[var] = str(Path(args.work_dir).resolve() / var)
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    compiled = set(args.methods if args.compile is None else args.compile)
    import torch

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.device}, {torch.get_num_threads()} " \
                                                                        f"threads"
    records = []
    for method in args.methods:
        records.append(check_method(args, method, method in compiled))
        print(f"{method}: {records[-1]}", flush=True)
    lines = [f"{device}, torch {torch.__version__}, configuration {args.c}, 2 epochs x {args.steps} steps, "
             f"{'bf16 autocast' if args.bf16 else 'AMP (fp16)'}", "",
             "| method | compiled | epoch 1 s (compile + warm-up) | ms per step (epoch 2 / steps, validation incl.) | "
             "peak GiB | probe mean Dice | "
             "random init (same levels) | run wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        fmt = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(f"| {r['method']} | {'yes' if r['compiled'] else 'no'} | {fmt(r['epoch_seconds'][0], 1)} | "
                     f"{fmt(r['step_ms'], 1)} | {fmt(r['peak_gib'], 2)} | {fmt(r['probe_dice'])} | "
                     f"{fmt(r['random_dice'])} ({r['levels']}) | {r['wall_seconds']:.0f} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
