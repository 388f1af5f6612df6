"""The held-out pretext on common views: a finished pretraining run scored on the same held-out crops as every other
method of its family, under each family member's views and under clean views, so that "its held-out loss ends lower"
compares one task, not each method on its own views (`nnssl_pretrain --eval-target` scores a run on its own views
only).

For a run of method m of family F, and for each view set V of {clean, every method of F with its default config, the
family's `common_views` (the papers' own views)}: the target's preprocessed cases (never pretrained on, as the
hook's) are drawn into `batches` two-view batches with the loader options of V (`Family.views` of V's config, never
the run's own options, one crop pair per case; clean = the first member's geometry without photometric or local
transforms), batch i inside an isolated
random stream seeded from (seed, i) (`heldout.draw_heldout_batches`), so every run of F, every seed, sees the same
crops, correspondences and negatives under V; then F's held-out evaluation (`Family.heldout`: the dense family's
voxel NT-Xent with 2V − 2 negatives per voxel, the MoCo family's InfoNCE over all held-out pairs) of m's network,
loaded from the run's checkpoint_final.pth (`weights_only=True`). Chance is ln(negatives + 1).

    python -m nnssl_plugin.cli.common_views <run fold_all> --target 991 -c 3d_cpu -device cpu -o out.json
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_common_views"
CLEAN = "clean"


def clean_options(options: dict) -> dict:
    """The loader options of a view set without its photometric and local transforms (geometry kept)."""
    return {**options, "view_transforms": None, "local_transforms": None}


def common_loader_options(options: dict) -> dict:
    """A view set's loader options with one crop pair per case (`pairs_per_case` 1), so that every view set draws
    the same held-out crops and negatives whatever the batch composition of the method behind it."""
    return {**options, "pairs_per_case": 1} if "pairs_per_case" in options else options


def common_view_sets(family_name: str, is_2d: bool, plans: dict, configuration: dict) -> dict[str, dict]:
    """name -> loader options of every view set a run of the family is scored on; the family's name is all it reads
    of the run, so every run of the family gets the same view sets whatever its own options."""
    from nnssl_plugin.config import METHODS, method_config, with_options
    from nnssl_plugin.families import FAMILIES

    family = FAMILIES[family_name]
    members = [m for m, c in METHODS.items() if c.family == family_name]
    configs = {CLEAN: method_config(members[0])}
    configs.update({member: method_config(member) for member in members})
    configs.update({name: with_options(method_config(member), dict(options))
                    for name, member, options in family.common_views})
    view_sets = {name: common_loader_options(family.views(c, is_2d, plans, configuration))
                 for name, c in configs.items()}
    view_sets[CLEAN] = clean_options(view_sets[CLEAN])
    return view_sets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished run's fold_all folder (checkpoint_final.pth, nnssl_run.json)")
    p.add_argument("--target", required=True, help="the labelled dataset whose cases are held out (as --eval-target)")
    p.add_argument("-c", default="3d_fullres", help="configuration of the run (default 3d_fullres)")
    p.add_argument("-p", default="nnsslPretrainPlans", help="the run's pretraining plans (default nnsslPretrainPlans)")
    p.add_argument("--batches", type=int, default=16, help="held-out batches per view set (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out crops (default 0, the hook's)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"))
    p.add_argument("-o", required=True, help="the JSON to write")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from nnssl_plugin.cli.pretrain import cpu_threads
    from nnssl_plugin.finished_run import heldout_view_batches, load_run_network, target_name
    from nnssl_plugin.io_utils import atomic_write_json
    from nnssl_plugin.rng import isolated

    if args.device == "cpu":
        torch.set_num_threads(cpu_threads())
    device = torch.device(args.device)
    run = Path(args.run)
    loaded = load_run_network(run, args.p, args.c, device)
    method, config, family, network = loaded.method, loaded.config, loaded.family, loaded.network
    is_2d = len(loaded.patch) == 2
    view_sets = common_view_sets(config.family, is_2d, loaded.plans, loaded.configuration)
    values = {}
    for name, loader_options in view_sets.items():
        batches = heldout_view_batches(args.target, loaded, args.c, loader_options, args.batches, args.seed)
        for batch in batches:  # the dense forward reads the clean crops for its restoration term only
            batch.setdefault("clean1", batch["view1"])
            batch.setdefault("clean2", batch["view2"])
        with isolated(args.seed):
            out = family.heldout(network, batches, device, None, "amp")
        values[name] = {"loss": out["loss"], "top1": out["top1"], "chance_loss": math.log(out["negatives"] + 1),
                        "chance_top1": out["chance"], "negatives": out["negatives"], "crops": out["crops"]}
        print(f"{PROG}: {method} on {name} views: loss {out['loss']:.4f} (chance {math.log(out['negatives'] + 1):.4f})"
              f", top-1 {out['top1']:.4f} (chance {out['chance']:.4f})")
    atomic_write_json(Path(args.o), {"format": "nnssl_common_views/1", "run": str(run), "method": method,
                                     "family": config.family, "target": target_name(args.target, loaded, args.c),
                                     "configuration": args.c, "batches": args.batches,
                                     "batch_size": loaded.batch_size, "seed": args.seed,
                                     "views": values})
    return 0


if __name__ == "__main__":
    sys.exit(main())
