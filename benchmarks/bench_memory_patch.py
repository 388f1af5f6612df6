"""Peak memory of a pretraining step vs nnU-Net's supervised step, and how the step cost grows with the patch size.

Usage (after `make demo`, which leaves the phantom datasets in ./nnssl_demo_work):
    .venv/bin/python benchmarks/bench_memory_patch.py [--work-dir nnssl_demo_work] [-c 3d_cpu]
        [--patches 16x48x48 32x64x64 32x96x96] [--kinds supervised moco_zca hier] [--repeats 5]

Each (kind, patch) runs in its own fresh process on the same network (the configuration's architecture; only the
patch size is changed in memory), batch size and device:
  - step time: median over --repeats steps after 2 warm-up steps (nnUNetTrainer.train_step for `supervised`, the
    pretrainer's train_step for a method);
  - step memory: on CUDA, torch.cuda.max_memory_allocated during the steps minus the memory allocated before them;
    on CPU, the process's peak resident memory during the steps (VmHWM after resetting it through
    /proc/self/clear_refs, Linux) minus its resident memory before them, i.e. what the steps themselves add
    (activations, gradients, optimizer state, the allocator's growth) on top of the loaded trainer and batch.
Prints a markdown table with ratios against the supervised step at the same patch. Run on an idle machine.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretrain_step import _median_time, _trainer  # noqa: E402


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def measure(work: Path, configuration: str, kind: str, patch: list[int], repeats: int) -> dict:
    """One (kind, patch) in this process: step time and step memory."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnssl_plugin.pretrain.registry import trainer_class

    torch.manual_seed(0)
    pre = work / "nnUNet_preprocessed"
    if kind == "supervised":
        trainer = _trainer(nnUNetTrainer, pre / "Dataset991_PhantomBTCV", "nnUNetPlans", configuration, 0, patch)
    else:
        trainer = _trainer(trainer_class(f"nnsslPretrainer_{kind}"), pre / "Dataset990_PhantomUnlabelled",
                           "nnsslPretrainPlans", configuration, "all", patch)
    trainer.on_train_start()
    batch = next(trainer.dataloader_train)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        before = _status_kb("VmRSS") * 1024
    seconds = _median_time(lambda: trainer.train_step(batch), repeats)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kb("VmHWM") * 1024
    trainer.on_train_end()
    return {"ms": 1000 * seconds, "step_mb": (peak - before) / 2**20, "before_mb": before / 2**20,
            "batch": trainer.batch_size, "device": str(trainer.device)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="nnssl_demo_work")
    p.add_argument("-c", default="3d_cpu")
    p.add_argument("--patches", nargs="+", default=["16x48x48", "32x64x64", "32x96x96"])
    p.add_argument("--kinds", nargs="+", default=["supervised", "moco_zca", "hier"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", nargs=2, metavar=("KIND", "PATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.work_dir).resolve()
    if not (work / "nnUNet_preprocessed" / "Dataset990_PhantomUnlabelled").is_dir():
        raise SystemExit(f"{work} holds no prepared demo data; run `make demo` first")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(work / var)
    os.environ["nnUNet_n_proc_DA"] = "0"
    if args.child:
        kind, patch = args.child[0], [int(v) for v in args.child[1].split("x")]
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's trainers print their plans
            result = measure(work, args.c, kind, patch, args.repeats)
        print(json.dumps(result))
        return 0
    rows = {}
    for patch in args.patches:
        for kind in args.kinds:
            out = subprocess.run([sys.executable, __file__, "--work-dir", str(work), "-c", args.c, "--repeats",
                                  str(args.repeats), "--child", kind, patch], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{kind} {patch} failed:\n{out.stderr[-2000:]}")
            rows[patch, kind] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{patch} {kind}: {rows[patch, kind]}", file=sys.stderr, flush=True)
    first = rows[args.patches[0], args.kinds[0]]
    print(f"configuration {args.c} network, batch {first['batch']}, {first['device']}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} steps")
    print("| patch | " + " | ".join(f"{k} step" for k in args.kinds) + " | " +
          " | ".join(f"{k} step memory" for k in args.kinds) + " |")
    print("| --- |" + " --- |" * (2 * len(args.kinds)))
    for patch in args.patches:
        base = rows[patch, "supervised"] if "supervised" in args.kinds else None
        times = [f"{rows[patch, k]['ms']:.0f} ms" + (f" ({rows[patch, k]['ms'] / base['ms']:.2f}×)"
                                                     if base and k != "supervised" else "") for k in args.kinds]
        mems = [f"{rows[patch, k]['step_mb']:.0f} MB" + (f" ({rows[patch, k]['step_mb'] / base['step_mb']:.2f}×)"
                                                         if base and k != "supervised" else "") for k in args.kinds]
        print(f"| {patch} | " + " | ".join(times) + " | " + " | ".join(mems) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
