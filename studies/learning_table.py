"""Does a pretraining run learn? One markdown row per finished run with the held-out hook on: held-out pretext loss,
top-1 and effective ranks at initialisation, at the first evaluation and at the end, plus the run's recipe and
method options (from its `nnssl_run.json`). The table of docs/RESULTS.md ("Recipes") is this script's output.

    python studies/learning_table.py <nnUNet_results>/Dataset990_PhantomUnlabelled

Runs are found as `nnsslPretrainer_*/fold_all` folders holding `checkpoint_final.pth` and `heldout_init.json`
(`nnssl_pretrain ... --eval-target D`); the logged held-out values come from the checkpoint's training log.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from nnssl_plugin.config import default_recipe
from nnssl_plugin.recipe import PRESETS


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _ranks(erank: dict | None) -> str:
    if not erank:
        return "–"
    return " / ".join(f"{v:.1f}" for v in erank.values())


def run_row(fold: Path) -> str | None:
    final, init = fold / "checkpoint_final.pth", fold / "heldout_init.json"
    if not final.is_file() or not init.is_file():
        return None
    log = torch.load(final, weights_only=True, map_location="cpu")["logging"]
    start = json.loads(init.read_text())
    record = json.loads((fold / "nnssl_run.json").read_text())
    evaluated = [e for e, v in enumerate(log["heldout_loss"]) if v is not None]
    first, last = evaluated[0], evaluated[-1]
    iterations = len(log["train_losses"])  # epochs; steps = epochs x iterations, in the run name
    name = fold.parent.name.split("__")[0]
    family = "hier" if "_hier_" in name or "_voxel2vec_" in name else "moco"
    recipe = record["recipe"]
    base, preset = default_recipe(family).to_dict(), "default"
    for preset_name, preset_recipe in PRESETS.items():
        if preset_recipe.to_dict() == recipe:
            base, preset = recipe, f"--recipe {preset_name}"
    changed = {k: v for k, v in recipe.items() if base[k] != v}
    parts = [f"{k}={v}" for k, v in {**changed, **record.get("method_options", {})}.items()]
    variant = ", ".join([preset] * (preset != "default" or not parts) + parts)
    get = lambda key, epoch: log[key][epoch]  # noqa: E731
    return (f"| {name} | {variant} | {iterations} | {start['chance']:.4f} | "
            f"{_fmt(start['loss'])} → {_fmt(get('heldout_loss', first))} → {_fmt(get('heldout_loss', last))} | "
            f"{_fmt(start['top1'])} → {_fmt(get('heldout_top1', last))} | "
            f"{_ranks(start['erank'])} → {_ranks(get('heldout_erank', last))} | "
            f"{_fmt(log['train_losses'][last])} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_results", type=Path, help="nnUNet_results/<pretraining dataset>")
    args = p.parse_args(argv)
    rows = [r for f in sorted(args.dataset_results.glob("nnsslPretrainer_*/fold_all")) if (r := run_row(f))]
    print("| run | recipe / options vs default | epochs | chance | held-out loss: init → first eval → end | "
          "held-out top-1: init → end | held-out eff. rank (raw / whitened): init → end | train loss at end |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
