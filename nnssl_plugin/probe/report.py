"""What `nnssl_probe` prints (one line per organ, then the mean) and the JSON it writes next to the probed file."""
from __future__ import annotations

import math
import os
from pathlib import Path

from nnssl_plugin.probe.dense import ProbeConfig, ProbeResult
from nnssl_plugin.probe.sources import FrozenSource
from nnssl_plugin.probe.target import Target

FORMAT = "nnssl_probe/1"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def default_json_path(source: FrozenSource, target: Target, seed: int, results: Path | None,
                      train_cases: int | None = None, fold: int | str | None = None) -> Path:
    """`<file stem>.probe__<dataset>__<plans>__<configuration>__fold<F>[__n<N>]__<levels>__seed<K>.json` next to the
    probed file, i.e. in a pretraining run's folder (`__n<N>`: fitted on N training cases, `--train-cases`; `fold<F>`
    is `foldall` for `-f all`); for random init (`random.probe__…json`) and for a file inside nnUNet_preprocessed (an
    export's weights) in nnUNet_results/<dataset>/nnssl_probe/ (`results`): a probe never writes into
    nnUNet_preprocessed."""
    subset = "" if train_cases is None else f"__n{train_cases}"
    fold_tag = target.fold if fold is None else fold
    tag = (f"probe__{target.name}__{target.plans['plans_name']}__{target.configuration}__fold{fold_tag}{subset}__"
           f"{source.levels}__seed{seed}.json")
    if source.file is not None and not _inside_preprocessed(source.file):
        return source.file.parent / f"{source.file.stem}.{tag}"
    stem = source.file.stem if source.file is not None else "random"
    return results / target.name / "nnssl_probe" / f"{stem}.{tag}"


def _inside_preprocessed(path: Path) -> bool:
    root = os.environ.get("nnUNet_preprocessed")
    if not root:
        return False
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def organ_lines(result: ProbeResult, target: Target) -> list[str]:
    """`<id> <organ> <Dice>` per foreground class, then the mean over the organs with a score."""
    width = max(len(n) for n in target.class_names[1:])
    lines = [f"{k:>3} {name:<{width}}  {_format(d)}" for k, (name, d) in
             enumerate(zip(target.class_names[1:], result.dice), start=1)]
    scored = sum(not math.isnan(d) for d in result.dice)
    lines.append(f"    {'mean':<{width}}  {_format(result.mean_dice)}  ({scored} organs scored on "
                 f"{len(result.per_case)} validation case(s))")
    return lines


def _format(value: float) -> str:
    return "  nan" if math.isnan(value) else f"{value:.4f}"


def probe_record(text: str, source: FrozenSource, target: Target, result: ProbeResult, config: ProbeConfig,
                 levels_like: str | None, device: str, threads: int, features: int) -> dict:
    from nnssl_plugin.pretrained import package_versions

    names = target.class_names
    fit = result.fit
    return {
        "format": FORMAT,
        "source": text, "file": str(source.file) if source.file else None, "description": source.description,
        "method": source.method, "levels": source.levels, "own_levels": source.own_levels,
        "levels_like": levels_like, "whitened": source.whitened, "features": features,
        "dataset": target.name, "plans": target.plans["plans_name"], "configuration": target.configuration,
        "patch_size": target.patch_size, "fold": target.fold, "splits": target.splits,
        "train_cases": [c.name for c in target.train], "val_cases": [c.name for c in target.val],
        "voxels_per_class": config.voxels_per_class, "seed": config.seed, "tile_step_size": config.tile_step_size,
        "sampled_per_class": dict(zip(names, result.sampled_per_class)),
        "regression": {"model": "multinomial logistic regression on standardised features, full-batch L-BFGS (fp64)",
                       "weight_decay": config.weight_decay, "tolerance": config.tolerance,
                       "criterion": "max |gradient| of the weight-decayed mean cross-entropy <= tolerance",
                       "max_iterations": config.max_iterations, "iterations": fit.iterations, "loss": fit.loss,
                       "gradient_max": fit.gradient_max, "converged": fit.converged,
                       "classes_without_samples": [n for n, p in zip(names, fit.present.tolist()) if not p]},
        "dice": {n: _number(d) for n, d in zip(names[1:], result.dice)},
        "mean_dice": _number(result.mean_dice),
        "per_case": {case: {n: _number(d) for n, d in zip(names[1:], scores)}
                     for case, scores in result.per_case.items()},
        "scored_on": "the preprocessed grid of the configuration (nnU-Net's training spacing), no test-time mirroring",
        "device": device, "cpu_threads": threads, "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "versions": package_versions(),
    }
