"""Wall-clock cost of one `nnssl_probe` per checkpoint (the budget: at most a minute at 3d_cpu on the phantom on 2
CPU cores), measured through the console script as a user runs it (Python start-up and imports included).

Usage (after `make demo`, which leaves the phantom datasets and pretraining runs in ./nnssl_demo_work):
    .venv/bin/python benchmarks/bench_probe.py [--work-dir nnssl_demo_work] [-d 991] [-c 3d_cpu] [-f 0]
                                               [--repeats 1] [SOURCE ...]
    .venv/bin/python benchmarks/bench_probe.py --online RUN_FOLDER   # a run of nnssl_pretrain ... --probe-every K
SOURCE defaults to every pretraining run of configuration -c under nnUNet_results/Dataset990_* plus random init
read like `hier` (decoder levels) and like `moco` (encoder stages). Each probe writes its JSON to a temporary
folder (the work dir is left as it was). Prints a markdown table: wall time (median over repeats), the probe's own
split into features / fit / prediction, the regression's iterations, the mean Dice, the machine's load average.

`--online RUN_FOLDER` instead reads a finished run's online probe (`online_probe/*.json`, written by `nnssl_pretrain
--probe-every K`) and its epoch times (`checkpoint_final.pth`): one row per probe, its wall time (writing and loading
the weights included) and that time relative to the mean pretraining epoch (training and validation iterations; the
held-out evaluation and the probe come after an epoch's end timestamp).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def default_sources(results: Path, configuration: str) -> list[list[str]]:
    runs = sorted(p for p in results.glob(f"Dataset990_*/nnsslPretrainer_*__{configuration}")
                  if any((p / "fold_all" / f).is_file() for f in ("ssl_weights.pth", "pretrained_weights.pth")))
    return [[str(r)] for r in runs] + [["random", "--levels-like", "hier"], ["random", "--levels-like", "moco"]]


def probe_once(source: list[str], args, env: dict, out: Path) -> tuple[float, dict]:
    command = [str(Path(sys.executable).parent / "nnssl_probe"), *source, "-d", args.d, "-c", args.c, "-f",
               str(args.f), "-device", "cpu", "-o", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return wall, json.loads(out.read_text())


def online_table(run: Path) -> list[str]:
    """The online probe's rows of a run folder (or its fold_all)."""
    import torch

    fold = run / "fold_all" if (run / "fold_all").is_dir() else run
    records = sorted((fold / "online_probe").glob("*.json"), key=lambda p: (p.name != "random_init.json", p.name))
    if not records or not (fold / "checkpoint_final.pth").is_file():
        raise SystemExit(f"{fold} holds no online_probe/*.json or no checkpoint_final.pth; run nnssl_pretrain with "
                         f"--eval-target D --probe-every K to the end first")
    log = torch.load(fold / "checkpoint_final.pth", weights_only=True)["logging"]
    epochs = [end - start for start, end in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]
    mean_epoch = statistics.mean(epochs)
    rows = [f"{fold}: {len(epochs)} epochs of {mean_epoch:.1f} s on average (training and validation "
            f"iterations), {os.cpu_count()} CPUs\n",
            "| probe | levels (features) | wall s | features / fit / prediction s | L-BFGS iterations | mean Dice | "
            "wall / mean epoch |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for path in records:
        record = json.loads(path.read_text())
        seconds, online = record["seconds"], record["online"]
        name = f"after epoch {online['epoch']}" if "epoch" in online else "random init (at the start)"
        rows.append(f"| {name} | {record['levels']} ({record['features']}) | {online['seconds']:.1f} | "
                    f"{seconds['features']:.1f} / {seconds['fit']:.1f} / {seconds['prediction']:.1f} | "
                    f"{record['regression']['iterations']} | {record['mean_dice']:.3f} | "
                    f"{online['seconds'] / mean_epoch:.2f} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", help="run folders, weights files, export plans names or 'random'")
    p.add_argument("--work-dir", default="nnssl_demo_work")
    p.add_argument("-d", default="991")
    p.add_argument("-c", default="3d_cpu")
    p.add_argument("-f", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--online", default=None, metavar="RUN_FOLDER",
                   help="report the online probe of this nnssl_pretrain run instead (no probe is run)")
    args = p.parse_args()
    if args.online is not None:
        print("\n".join(online_table(Path(args.online))))
        return 0
    work = Path(args.work_dir).resolve()
    if not (work / "nnUNet_preprocessed").is_dir():
        raise SystemExit(f"{work} holds no nnU-Net folders; run `make demo` first (or pass --work-dir)")
    env = {**os.environ, **{v: str(work / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    sources = [[s] for s in args.sources] or default_sources(work / "nnUNet_results", args.c)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, source in enumerate(sources):
            walls, record = [], None
            for r in range(args.repeats):
                load = os.getloadavg()[0]
                wall, record = probe_once(source, args, env, Path(tmp) / f"probe_{i}_{r}.json")
                walls.append(wall)
            seconds = record["seconds"]
            name = Path(source[0]).name if source[0] != "random" else " ".join(source)
            rows.append(f"| {name} | {record['levels']} ({record['features']}) | {statistics.median(walls):.1f} | "
                        f"{seconds['features']:.1f} / {seconds['fit']:.1f} / {seconds['prediction']:.1f} | "
                        f"{record['regression']['iterations']} | {record['mean_dice']:.3f} | {load:.1f} |")
    threads = record["cpu_threads"]
    print(f"nnssl_probe -d {args.d} -c {args.c} -f {args.f} -device cpu: {len(record['train_cases'])} training, "
          f"{len(record['val_cases'])} validation cases, {record['voxels_per_class']} voxels per class, "
          f"{threads} torch CPU threads, {os.cpu_count()} CPUs\n")
    print("| source | levels (features) | wall s | features / fit / prediction s | L-BFGS iterations | mean Dice | "
          "load before |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
