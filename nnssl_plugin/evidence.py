"""Seed statistics of the evidence study: mean ± sample sd over seeds, how far one arm rises above another in units
of seed noise, and nnU-Net's per-epoch pseudo-Dice curve of a training run.

    mean  = (1/n) Σ x_i,    sd = sqrt( Σ (x_i − mean)² / (n − 1) )            (sample sd, n ≥ 2)
    separation(a, b) = (mean_a − mean_b) / max(sd_a, sd_b)

"a beats b by more than 2 sd" (the evidence issue's target) is `separation(a, b) > 2`: the gap between the two
arms' means is larger than twice the larger of their seed-to-seed spreads. With equal means the separation is 0;
with no spread at all it is ±inf (or 0 for equal means) — a sign that the seeds did not vary, not of a large effect.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1 in the denominator; nan for a single value)."""
    if not values:
        raise ValueError("mean_sd of no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def separation(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean a − mean b) in units of the larger of the two sample sds."""
    (mean_a, sd_a), (mean_b, sd_b) = mean_sd(a), mean_sd(b)
    gap, noise = mean_a - mean_b, max(sd_a, sd_b)
    if math.isnan(noise):
        return math.nan
    if noise == 0:
        return 0.0 if gap == 0 else math.copysign(math.inf, gap)
    return gap / noise


def fmt(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± sd (n)' for a table cell."""
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f} ({len(values)})" if len(values) > 1 else f"{mean:.{digits}f} (1)"


def pseudo_dice_curve(fold_dir: Path) -> list[float]:
    """nnU-Net's per-epoch pseudo Dice on its validation batches (the progress.png curve), mean over the organs,
    read from the 'Pseudo dice [...]' lines of the run's training log."""
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    curve = []
    for line in (logs[-1].read_text().splitlines() if logs else []):
        if "Pseudo dice [" in line:  # numpy 2 prints np.float32(0.1), numpy 1 prints 0.1
            inside = line.split("Pseudo dice [", 1)[1].split("]", 1)[0].replace("np.float32", "")
            values = [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", inside)]
            curve.append(sum(values) / len(values) if values else math.nan)
    return curve


# the 13 BTCV organs in label order (1 … 13), short enough for a table header
ORGANS = ("spleen", "r.kidney", "l.kidney", "gallbl.", "esoph.", "liver", "stomach", "aorta", "IVC", "veins",
          "pancreas", "r.adr.", "l.adr.")


def dice_per_organ(summary: Path) -> list[float]:
    """nnU-Net's validation Dice of each of the 13 organs (label order), then their mean, from a summary.json."""
    import json

    record = json.loads(Path(summary).read_text())
    per_organ = [float(record["mean"][str(label)]["Dice"]) for label in range(1, len(ORGANS) + 1)]
    return [*per_organ, float(record["foreground_mean"]["Dice"])]


def probe_rows(scores: dict[str, list[list[float]]], levels: dict[str, str], folds: str = "fold 0") -> list[str]:
    """Markdown rows of a probe table: `scores[init]` holds one [Dice per organ …, mean] per seed (seeds in the same
    order for every init), `levels[init]` the level set it was read at; random init is named `random (<levels>)` and
    is every other row's reference: the mean paired difference over the seeds with its 95 % interval
    (nnssl_plugin.paired). `folds` says which folds each seed's score comes from."""
    from nnssl_plugin.paired import paired

    lines = ["| init | levels | seeds | folds | probe mean Dice | vs random init (paired, 95 % interval) | " +
             " | ".join(ORGANS) + " |", "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(ORGANS)]
    for init, runs in scores.items():
        means = [run[-1] for run in runs]
        reference = scores.get(f"random ({levels[init]})")
        versus = ""
        if not init.startswith("random") and reference:
            n = min(len(runs), len(reference))
            versus = paired(means[:n], [run[-1] for run in reference][:n]).text()
        organs = " | ".join(f"{mean_sd([run[j] for run in runs])[0]:.2f}" for j in range(len(ORGANS)))
        lines.append(f"| {init} | {levels[init]} | {len(runs)} | {folds} | {fmt(means)} | {versus} | {organs} |")
    return lines