"""`nnssl_probe`: Dice per organ of a linear probe on frozen features (a run, a weights file, an export or random
init), fitted on one fold's training cases and scored on its validation cases, in about a minute on a CPU."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_probe"


def build_parser() -> argparse.ArgumentParser:
    from nnssl_plugin.probe.dense import ProbeConfig

    defaults = ProbeConfig()
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False)
    p.add_argument("source", help="a run folder of nnssl_pretrain, a weights file (ssl_weights.pth, "
                                  "checkpoint_*.pth, an export's _weights.pth, a MIC-DKFZ nnssl checkpoint), an "
                                  "export's plans name of -d (nnsslPlans_<method>), or 'random'")
    p.add_argument("-d", required=True, help="the labelled target dataset (planned and preprocessed by nnU-Net)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="the target's plans (default nnUNetPlans)")
    p.add_argument("-f", default="0", help="fold of the target's splits_final.json (default 0), or 'all': nnU-Net's five "
                                           "cross-validation folds 0-4 (folds added after them, e.g. few-label folds, "
                                           "are left out), each case's features computed once for all folds")
    p.add_argument("--levels-like", default=None,
                   help="read the levels of this method (moco, moco_zca: encoder stages; hier, voxel2vec: bottleneck "
                        "and decoder stages) or level set (encoder, decoder); required for 'random', which has none "
                        "of its own: give the method it is compared with")
    p.add_argument("--voxels-per-class", type=int, default=defaults.voxels_per_class,
                   help=f"training voxels drawn per class (default {defaults.voxels_per_class})")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help=f"L2 weight decay of the regression (default {defaults.weight_decay:g})")
    p.add_argument("--train-cases", type=int, default=None, metavar="N",
                   help="fit on N of the fold's training cases (a seeded draw, nested over N for one --seed: the "
                        "label-efficiency curve); default all")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the voxel draw, of the --train-cases "
                                                                   "draw and of random init")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    p.add_argument("-o", default=None, help="the JSON to write (default: next to the probed file; for random init "
                                            "nnUNet_results/<dataset>/nnssl_probe/)")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from nnssl_plugin.cli.pretrain import cpu_threads
    from nnssl_plugin.io_utils import atomic_write_json
    from nnssl_plugin.modules.probe_levels import level_channels
    from nnssl_plugin.paths import results_folder
    from nnssl_plugin.probe.dense import ProbeConfig, run_dense_probe
    from nnssl_plugin.probe.report import default_json_path, organ_lines, probe_record
    from nnssl_plugin.probe.sources import RANDOM, load_frozen_source
    from nnssl_plugin.probe.target import load_target

    started = time.perf_counter()
    if args.voxels_per_class < 1:
        raise NnsslError(f"--voxels-per-class must be at least 1, got {args.voxels_per_class}")
    if not args.weight_decay > 0:
        raise NnsslError(f"--weight-decay must be > 0 (it makes the fit unique), got {args.weight_decay}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise NnsslError("CUDA is not available on this machine; pass -device cpu (or mps)")
    threads = torch.get_num_threads()
    if args.device == "cpu":
        threads = cpu_threads()
        torch.set_num_threads(threads)
    if args.f != "all" and not args.f.isdigit():
        raise NnsslError(f"-f {args.f!r}: pass a fold number of the target's splits (e.g. -f 0) or -f all")
    if args.f == "all":
        return _all_folds(args, started, threads)
    target = load_target(args.d, args.p, args.c, int(args.f))
    if args.train_cases is not None:
        from nnssl_plugin.probe.subset import nested_subset

        target.train = nested_subset(target.train, args.train_cases, args.seed)
    source = load_frozen_source(args.source, target.folder, target.plans, args.c, target.dataset_json,
                                target.num_input_channels, args.levels_like, args.seed)
    out = Path(args.o) if args.o else default_json_path(source, target, args.seed, results_folder(),
                                                        args.train_cases)
    features = sum(level_channels(source.unet, source.levels))
    print(f"{PROG}: {source.description}")
    print(f"{PROG}: {source.levels} levels ({features} features) of {source.method} on {target.name} {args.c} fold "
          f"{args.f}: {len(target.train)} training, {len(target.val)} validation case(s)")
    config = ProbeConfig(voxels_per_class=args.voxels_per_class, weight_decay=args.weight_decay, seed=args.seed)
    result = run_dense_probe(source.unet, source.levels, target.train, target.val, target.patch_size,
                             len(target.class_names), torch.device(args.device), target.ignore_label, config)
    for line in organ_lines(result, target):
        print(line)
    if not result.fit.converged:
        print(f"{PROG}: WARNING: the regression stopped after {result.fit.iterations} iterations with max |gradient| "
              f"{result.fit.gradient_max:.2e} > {config.tolerance:g}; raise --weight-decay for a better-conditioned "
              f"fit", file=sys.stderr)
    record = probe_record(args.source, source, target, result, config, args.levels_like, args.device, threads,
                          features)
    if args.source != RANDOM:
        reference = random_reference(args, target, source.levels, config, threads)
        record["random_init_reference"] = reference
        print(reference_line(record["mean_dice"], reference))
    result.seconds["total"] = time.perf_counter() - started
    record["seconds"]["total"] = round(result.seconds["total"], 3)
    atomic_write_json(out, record)
    cache = default_json_path(source, target, args.seed, results_folder(), args.train_cases)
    if args.source == RANDOM and out != cache:  # the reference later probes reuse
        atomic_write_json(cache, record)
    print(f"{PROG}: wrote {out} ({result.seconds['total']:.1f} s)")
    return 0


def reference_line(mean: float | None, reference: dict) -> str:
    """The probe's mean beside random init's on the same levels and seed: only a gap above it counts."""
    ref = reference["mean_dice"]
    if mean is None or ref is None:
        return f"{PROG}: random init on the same levels and seed: mean Dice {ref}"
    verdict = "above" if mean > ref else "NOT above"
    return (f"{PROG}: mean Dice {mean:.4f} vs random init on the same levels ({reference['levels']}) and seed "
            f"{reference['seed']}: {ref:.4f} ({mean - ref:+.4f}, {verdict} random init){reference['note']}")


def random_reference(args: argparse.Namespace, target, levels: str, config, threads: int) -> dict:
    """Random init's probe on the same target, fold, training cases, levels, seed and probe settings: read from its
    JSON in nnUNet_results/<dataset>/nnssl_probe/ when one with these settings exists (computed once, reused),
    else computed and written there."""
    import json

    import torch

    from nnssl_plugin.io_utils import atomic_write_json
    from nnssl_plugin.modules.probe_levels import level_channels
    from nnssl_plugin.paths import results_folder
    from nnssl_plugin.probe.dense import run_dense_probe
    from nnssl_plugin.probe.report import default_json_path, probe_record
    from nnssl_plugin.probe.sources import RANDOM, load_frozen_source

    source = load_frozen_source(RANDOM, target.folder, target.plans, args.c, target.dataset_json,
                                target.num_input_channels, levels, args.seed)
    path = default_json_path(source, target, args.seed, results_folder(), args.train_cases)
    wanted = {"voxels_per_class": config.voxels_per_class, "seed": config.seed, "levels": levels,
              "train_cases": [c.name for c in target.train], "val_cases": [c.name for c in target.val]}
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if (cached is not None and all(cached.get(k) == v for k, v in wanted.items())
            and cached.get("regression", {}).get("weight_decay") == config.weight_decay):
        return {"mean_dice": cached["mean_dice"], "levels": levels, "seed": args.seed, "file": str(path),
                "note": f" (cached: {path.name})"}
    started = time.perf_counter()
    result = run_dense_probe(source.unet, source.levels, target.train, target.val, target.patch_size,
                             len(target.class_names), torch.device(args.device), target.ignore_label, config)
    result.seconds["total"] = time.perf_counter() - started
    atomic_write_json(path, probe_record(RANDOM, source, target, result, config, levels, args.device, threads,
                                         sum(level_channels(source.unet, source.levels))))
    mean = None if math.isnan(result.mean_dice) else result.mean_dice
    return {"mean_dice": mean, "levels": levels, "seed": args.seed, "file": str(path),
            "note": f" (computed in {result.seconds['total']:.0f} s, cached for the next probe: {path})"}


def _all_folds(args: argparse.Namespace, started: float, threads: int) -> int:
    """`-f all`: the probe on nnU-Net's cross-validation folds of the target's splits (probe/folds.py; folds 0-4, as
    nnU-Net's own cross-validation averages, or every fold where the splits hold fewer; folds appended after them,
    such as nnssl_fewshot's few-label folds, overlap them and are left out), one JSON with a record per fold and the
    mean over the folds."""
    import math

    import torch

    from nnssl_plugin.io_utils import atomic_write_json
    from nnssl_plugin.modules.probe_levels import level_channels
    from nnssl_plugin.paths import results_folder
    from nnssl_plugin.probe.dense import ProbeConfig
    from nnssl_plugin.probe.folds import run_dense_probe_folds
    from nnssl_plugin.probe.report import default_json_path, organ_lines, probe_record
    from nnssl_plugin.probe.sources import RANDOM, load_frozen_source
    from nnssl_plugin.probe.target import CROSS_VALIDATION_FOLDS, load_target

    if args.train_cases is not None:
        raise NnsslError("--train-cases draws from one fold's training cases; pass -f <fold> with it, not -f all")
    first = load_target(args.d, args.p, args.c, 0)
    targets = [first, *(load_target(args.d, args.p, args.c, f)
                        for f in range(1, min(first.num_folds, CROSS_VALIDATION_FOLDS)))]
    source = load_frozen_source(args.source, first.folder, first.plans, args.c, first.dataset_json,
                                first.num_input_channels, args.levels_like, args.seed)
    out = Path(args.o) if args.o else default_json_path(source, first, args.seed, results_folder(), fold="all")
    features = sum(level_channels(source.unet, source.levels))
    print(f"{PROG}: {source.description}")
    print(f"{PROG}: {source.levels} levels ({features} features) of {source.method} on {first.name} {args.c}, "
          f"{len(targets)} folds of {first.splits}")
    config = ProbeConfig(voxels_per_class=args.voxels_per_class, weight_decay=args.weight_decay, seed=args.seed)
    results = run_dense_probe_folds(source.unet, source.levels, [(t.train, t.val) for t in targets],
                                    first.patch_size, len(first.class_names), torch.device(args.device),
                                    first.ignore_label, config)
    records = []
    for target, result in zip(targets, results):
        print(f"{PROG}: fold {target.fold} ({len(target.train)} training, {len(target.val)} validation cases): "
              f"{organ_lines(result, target)[-1].strip()}")
        if not result.fit.converged:
            print(f"{PROG}: WARNING: fold {target.fold}: the regression stopped after {result.fit.iterations} "
                  f"iterations with max |gradient| {result.fit.gradient_max:.2e} > {config.tolerance:g}; raise "
                  f"--weight-decay for a better-conditioned fit", file=sys.stderr)
        records.append(probe_record(args.source, source, target, result, config, args.levels_like, args.device,
                                    threads, features))
    means = [r["mean_dice"] for r in records if r["mean_dice"] is not None]
    mean = sum(means) / len(means) if means else math.nan
    print(f"{PROG}: mean over {len(means)} folds {mean:.4f}")
    summary = {"format": "nnssl_probe_folds/1", "source": args.source, "method": source.method,
               "levels": source.levels, "seed": args.seed, "dataset": first.name, "configuration": args.c,
               "voxels_per_class": config.voxels_per_class, "weight_decay": config.weight_decay,
               "val_cases": [[c.name for c in t.val] for t in targets], "folds": records,
               "mean_dice_over_folds": None if math.isnan(mean) else mean}
    random_source = source if args.source == RANDOM else load_frozen_source(
        RANDOM, first.folder, first.plans, args.c, first.dataset_json, first.num_input_channels, source.levels,
        args.seed)
    cache = default_json_path(random_source, first, args.seed, results_folder(), fold="all")
    if args.source != RANDOM:  # random init on the same levels, seed and folds: read once computed, else computed
        reference = _all_folds_reference(cache, summary, random_source, targets, config, args.device)
        summary["random_init_reference"] = reference
        print(reference_line(summary["mean_dice_over_folds"], {**reference, "levels": source.levels,
                                                               "seed": args.seed}))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(out, summary)
    if args.source == RANDOM and out != cache:  # the reference later all-fold probes reuse
        atomic_write_json(cache, summary)
    print(f"{PROG}: wrote {out} ({summary['seconds']:.1f} s)")
    return 0


def _all_folds_reference(cache: Path, summary: dict, random_source, targets, config, device: str) -> dict:
    """Random init's all-fold probe with the settings of `summary`: its JSON in nnUNet_results/<dataset>/nnssl_probe/
    when one with the same levels, seed, probe settings and folds exists, else computed and written there."""
    import json

    import torch

    from nnssl_plugin.io_utils import atomic_write_json
    from nnssl_plugin.probe.folds import run_dense_probe_folds
    from nnssl_plugin.probe.sources import RANDOM

    keys = ("levels", "seed", "voxels_per_class", "weight_decay", "val_cases")
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = None
    if cached is not None and all(cached.get(k) == summary[k] for k in keys):
        return {"mean_dice": cached["mean_dice_over_folds"], "file": str(cache), "note": f" (cached: {cache.name})"}
    results = run_dense_probe_folds(random_source.unet, random_source.levels, [(t.train, t.val) for t in targets],
                                    targets[0].patch_size, len(targets[0].class_names), torch.device(device),
                                    targets[0].ignore_label, config)
    means = [r.mean_dice for r in results if not math.isnan(r.mean_dice)]
    mean = sum(means) / len(means) if means else None
    atomic_write_json(cache, {**{k: summary[k] for k in keys}, "format": "nnssl_probe_folds/1", "source": RANDOM,
                              "method": RANDOM, "dataset": summary["dataset"],
                              "configuration": summary["configuration"],
                              "folds": [{"fold": t.fold, "mean_dice": None if math.isnan(r.mean_dice) else
                                         r.mean_dice} for t, r in zip(targets, results)],
                              "mean_dice_over_folds": mean})
    return {"mean_dice": mean, "file": str(cache), "note": ""}


if __name__ == "__main__":
    sys.exit(main())
