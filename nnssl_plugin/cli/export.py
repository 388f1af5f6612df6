"""`nnssl_export`: a pretraining result -> weights file + `nnsslPlans_<method>` plans for a labelled target."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False)
    p.add_argument("-d", help="the pretraining dataset (id or name); not needed with --random-init or --checkpoint FILE")
    p.add_argument("-m", help="pretraining method (moco, moco_zca, ...); not needed with --random-init or --checkpoint FILE (read from the file)")
    p.add_argument("-t", required=True, help="the labelled target dataset (planned with nnU-Net)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="the target's plans (default nnUNetPlans)")
    p.add_argument("--run", default=None, help="the run folder (name or path) when several runs of -m exist")
    p.add_argument("--checkpoint", default="final",
                   help="final (the run's ssl_weights.pth), latest (checkpoint_latest.pth) or a file path "
                        "(also a MIC-DKFZ nnssl checkpoint)")
    p.add_argument("--plans-name", default=None, help="target plans name (default nnsslPlans_<method>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of that name")
    p.add_argument("--random-init", action="store_true",
                   help="export a freshly initialised network as method 'random' (the frozen-evaluation baseline)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    return p


def find_runs(results: Path, method: str, configuration: str) -> list[Path]:
    """Run folders of `method` (and only that method: moco does not match moco_zca) for `configuration`."""
    from nnssl_plugin.trainer_names import PRETRAINING_FOLD, is_pretraining_run_of

    if not results.is_dir():
        return []
    return sorted(p / PRETRAINING_FOLD for p in results.iterdir()
                  if p.is_dir() and is_pretraining_run_of(p.name, method, configuration))


def run_configurations(results: Path, method: str) -> list[str]:
    """The configurations that have a pretraining run of `method` in `results` (sorted, each once)."""
    from nnssl_plugin.trainer_names import is_pretraining_run_of

    if not results.is_dir():
        return []
    names = [p.name for p in results.iterdir() if p.is_dir() and "__" in p.name]
    return sorted({n.rsplit("__", 1)[-1] for n in names if is_pretraining_run_of(n, method, n.rsplit("__", 1)[-1])})


def no_run_message(results: Path, args) -> str:
    """One line for a -m without a run at -c: a run at another configuration is named with the -c to pass (not a
    new pretraining of days), else the pretraining command to run."""
    others = run_configurations(results, args.m)
    if others:
        options = " or ".join(f"-c {c}" for c in others)
        return (f"no {args.m} pretraining run for configuration '{args.c}' in {results}, but there is one for "
                f"{', '.join(others)}: pass {options} (nnssl_export -d {args.d} -m {args.m} -t {args.t} "
                f"-c {others[0]}), the configuration it was pretrained with")
    return (f"no {args.m} pretraining run for configuration '{args.c}' in {results}; run "
            f"nnssl_pretrain -d {args.d} -m {args.m} -c {args.c} first")


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from nnssl_plugin.export import build_planned_network, export_weights

    from nnssl_plugin.export_sources import Source, read_source
    from nnssl_plugin.io_utils import load_json
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder, results_folder
    from nnssl_plugin.plans import check_plans_name, load_plans, plans_path, resolve_configuration

    if args.plans_name is not None:
        check_plans_name(args.plans_name)  # before any work: it names the files written
    target = find_dataset_name(args.t, in_raw=False, in_preprocessed=True,
                               unprepared_hint="nnUNetv2_plan_and_preprocess -d {id}")
    target_plans = load_plans(target, args.p)
    resolve_configuration(target_plans, args.c)
    dataset_json = load_json(preprocessed_folder() / target / "dataset.json")
    source = None
    if args.random_init:
        method, source_dataset = "random", "none"
    else:
        a_file = args.checkpoint not in ("final", "latest")
        if not a_file and (not args.d or not args.m):
            raise NnsslError("-d and -m are required (or pass --checkpoint FILE, or --random-init for the random "
                             "baseline)")
        source_dataset = find_dataset_name(args.d, in_raw=False, in_preprocessed=True) if args.d else "external"
        source = read_source(_source_file(args, results_folder() / source_dataset))
        for warning in source.warnings:
            print(f"{PROG}: WARNING: {warning}", file=sys.stderr)
        method = args.m or source.method  # a file names its method (nnssl checkpoints: 'nnssl')
    plans_name = args.plans_name or f"nnsslPlans_{method}"
    out_plans = plans_path(target, plans_name)
    out_weights = out_plans.with_name(f"{plans_name}_weights.pth")
    if out_plans.exists() and not args.overwrite:
        raise NnsslError(f"{out_plans} already exists; pass --overwrite to replace it or --plans-name for another")

    if args.random_init:
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        torch.manual_seed(args.seed)
        pm = PlansManager(target_plans)
        channels = determine_num_input_channels(pm, pm.get_configuration(args.c), dataset_json)
        network = build_planned_network(target_plans, args.c, channels, dataset_json)
        state = {k: v for k, v in network.state_dict().items() if k.startswith("encoder.")}
        source = Source(method="random", state=state, encoder_only=True, architecture=None, num_input_channels=None,
                        provenance={"random_init_seed": args.seed})

    report = export_weights(source, target_plans, args.c, dataset_json, out_weights, out_plans, plans_name,
                            source_dataset)
    for warning in report.warnings:
        print(f"{PROG}: WARNING: {warning}", file=sys.stderr)
    print(f"transfer report: {report.summary(method)} (prefixes from the network class)")
    print(report.route_line)
    print(f"wrote {out_weights}\nwrote {out_plans}")
    target_id = int(target[7:10])
    print("next:\n  export nnUNet_extTrainer=$(nnssl_env --ext-trainer-path)\n"
          f"  nnUNetv2_train {target_id} {args.c} 0 -tr nnUNetTrainerSSLInit -p {plans_name}")
    return 0


def _source_file(args, results: Path) -> Path:
    if args.checkpoint not in ("final", "latest"):
        path = Path(args.checkpoint)
        if not path.is_file():
            raise NnsslError(f"--checkpoint {path} not found")
        return path
    if args.run:
        run = Path(args.run)
        run = run if run.is_dir() else results / args.run
        run = run / "fold_all" if (run / "fold_all").is_dir() else run
        if not run.is_dir():
            raise NnsslError(f"--run {args.run} not found under {results}")
    else:
        runs = find_runs(results, args.m, args.c)
        if not runs:
            raise NnsslError(no_run_message(results, args))
        if len(runs) > 1:
            names = ", ".join(r.parent.name for r in runs)
            raise NnsslError(f"{len(runs)} {args.m} runs found ({names}); pick one with --run")
        run = runs[0]
    from nnssl_plugin.pretrained import WEIGHTS_FILE, refuse_older_layout

    name = WEIGHTS_FILE if args.checkpoint == "final" else "checkpoint_latest.pth"
    if name == WEIGHTS_FILE:
        refuse_older_layout(run)
    if not (run / name).is_file():
        hint = "; the run has not finished: pass --checkpoint latest" if args.checkpoint == "final" else ""
        raise NnsslError(f"{run / name} not found{hint}")
    return run / name
