"""`nnssl_sweep`: fine-tune each export and a scratch baseline on few-label folds through `nnUNetv2_train` (a
progress line per run, nnU-Net's output in a log file per run), then collect every fold's summary.json into
label_efficiency.csv / .png (mean Dice vs labelled cases)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry
from nnssl_plugin.evidence import fmt

PROG = "nnssl_sweep"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False)
    p.add_argument("-d", required=True, help="the labelled target dataset")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("--plans", nargs="*", default=[], help="exported plans to fine-tune (e.g. nnsslPlans_hier)")
    p.add_argument("--baseline", choices=("scratch", "none"), default="scratch",
                   help="scratch: nnUNetTrainerSSLScratch (same schedule, random init) on the target's plans")
    p.add_argument("-p", default="nnUNetPlans", help="the target's own plans, for the baseline (default nnUNetPlans)")
    p.add_argument("-n", type=int, nargs="+", required=True, help="numbers of labelled training cases")
    p.add_argument("--repeats", type=int, default=3, help="seeded draws per number (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--trainer", default="nnUNetTrainerSSLInit",
                   help="trainer for the exports (default nnUNetTrainerSSLInit; e.g. nnUNetTrainerSSLLinear)")
    p.add_argument("--epochs", type=int, default=None, help="run length of every trainer (default nnU-Net's)")
    p.add_argument("--iters", type=int, default=None, help="iterations per epoch (default nnU-Net's)")
    p.add_argument("--no-tta", action="store_true",
                   help="final validation without test-time mirroring (trainer suffix _noTTA; 8x faster on a CPU)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    p.add_argument("-o", default=None, help="output folder (default nnUNet_results/<dataset>/nnssl_sweep_<c>)")
    p.add_argument("--verbose", action="store_true",
                   help="also show nnU-Net's output live (it always goes to <output folder>/logs/, one file per run)")
    p.add_argument("--dry-run", action="store_true", help="print the nnU-Net commands, run nothing, write nothing")
    return p


def _variant(trainer: str, epochs: int | None, iters: int | None, no_tta: bool) -> str:
    """The plugin's trainers by the plugin's grammar; any other trainer gets the same suffixes appended (the user's
    own variants must then exist under those names)."""
    from nnssl_plugin import trainer_names

    if trainer in trainer_names.DOWNSTREAM_BASES:
        return trainer_names.downstream(trainer, epochs or None, iters or None, None, no_tta)
    return (trainer + (f"_{epochs}epochs" if epochs else "") + (f"_{iters}iters" if iters else "")
            + ("_noTTA" if no_tta else ""))


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnssl_plugin.ext_trainers import with_ext_trainer_folder
    from nnssl_plugin.fewshot import add_fewshot_folds, labelled_identifiers
    from nnssl_plugin.paths import console_script, find_dataset_name, preprocessed_folder, results_folder
    from nnssl_plugin.sweep import collect, run_logged, sweep_runs, write_outputs

    if not args.plans and args.baseline == "none":
        raise NnsslError("nothing to run: give --plans and/or --baseline scratch")
    dataset = find_dataset_name(args.d, in_raw=False)
    folder = preprocessed_folder() / dataset
    for plans in [*args.plans, *([args.p] if args.baseline == "scratch" else [])]:
        if not (folder / f"{plans}.json").is_file():
            hint = f"nnssl_export ... -t {args.d}" if plans.startswith("nnsslPlans_") else \
                f"nnUNetv2_plan_and_preprocess -d {args.d}"
            raise NnsslError(f"{folder / (plans + '.json')} not found; run {hint} first")
    identifiers = labelled_identifiers(folder)
    folds = add_fewshot_folds(folder, identifiers, args.n, args.repeats, args.seed, write=not args.dry_run)
    runs = sweep_runs(folds, args.plans, _variant(args.trainer, args.epochs, args.iters, args.no_tta),
                      args.baseline, _variant("nnUNetTrainerSSLScratch", args.epochs, args.iters, args.no_tta), args.p)
    dataset_id = str(int(dataset[7:10]))
    commands = [[*run.command(dataset_id, args.c), "-device", args.device] for run in runs]
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return 0
    results = results_folder()
    out = Path(args.o) if args.o else results / dataset / f"nnssl_sweep_{args.c}"
    env = {**os.environ, "nnUNet_extTrainer": with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer"))}
    for i, (run, command) in enumerate(zip(runs, commands), 1):
        step = f"[{i}/{len(runs)}]"
        if (run.fold_folder(results, dataset, args.c) / "validation" / "summary.json").is_file():
            print(f"{step} done already: {shlex.join(command)}", flush=True)
            continue
        log = run.log_path(out, args.c)
        print(f"{step} {run.method} N={run.n} repeat {run.repeat}: {shlex.join(command)} (log: {log})", flush=True)
        code, last_line, seconds = run_logged([console_script(command[0]), *command[1:]], env, log,
                                              sys.stdout if args.verbose else None)
        if code != 0:
            raise NnsslError(f"'{shlex.join(command)}' failed with exit code {code} ({last_line or 'no output'}); "
                             f"its output is in {log}; fix that, then rerun nnssl_sweep to continue")
        row, _ = collect([run], results, dataset, args.c)
        dice = f"mean Dice {row[0].mean_dice:.4f}" if row else "no summary.json written"
        print(f"{step} finished in {seconds:.0f} s: {dice}", flush=True)
    rows, missing = collect(runs, results, dataset, args.c)
    if missing:
        raise NnsslError(f"{len(missing)} run(s) wrote no summary.json, e.g. fold {missing[0].fold} of "
                         f"{missing[0].trainer}; see {missing[0].log_path(out, args.c)}")
    csv_path, png_path = write_outputs(rows, out, f"{dataset} {args.c}: label efficiency")
    print("| method | " + " | ".join(f"N={n}" for n in args.n) + " |")
    print("| --- |" + " --- |" * len(args.n))
    for method in dict.fromkeys(r.method for r in rows):
        cells = [fmt([r.mean_dice for r in rows if r.method == method and r.n == n]) for n in args.n]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"csv: {csv_path}\nplot: {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
