"""`nnssl_demo`: the plugin's whole story on the built-in CT phantom data: did pretraining help, and which method?

Stages: generate the phantom datasets; plan and preprocess the labelled one with nnU-Net's own
`nnUNetv2_plan_and_preprocess`; add the small CPU configuration; prepare the unlabelled one on the labelled one's
plans; pretrain `moco_zca` and `hier` (short) with --seeds seeds each; the dense probe (`nnssl_probe`) of every run
and of random initialisations (same seeds, same levels: the reference) on the labelled set's fold 0; export the
seed-0 runs; then nnU-Net's own `nnUNetv2_train` on a few-label fold as the proof that the trainers work (the linear
probe of the first method, fine-tuning of the last, the scratch baseline with the same schedule). The table leads
with what a CPU can resolve in minutes (the probe, mean ± sd over the seeds, in units of seed noise against random
init) and says so in one line where it cannot; nnU-Net's validation Dice follows, marked as one seed.

Everything lands under --work-dir (nnUNet_raw, nnUNet_preprocessed, nnUNet_results), never in a user's own nnU-Net
folders. The defaults fit a 2-core CPU in about ten minutes. The study behind docs/RESULTS.md is
studies/probe_study.py; on real data, the README's "Your own data: the journey" is the sequence of commands.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nnssl_plugin import trainer_names
from nnssl_plugin.config import METHODS
from nnssl_plugin.errors import NnsslError, cli_entry
from nnssl_plugin.evidence import ORGANS, dice_per_organ, probe_rows
from nnssl_plugin.paired import paired
from nnssl_plugin.ext_trainers import with_ext_trainer_folder
from nnssl_plugin.paths import console_script

PROG = "nnssl_demo"
MARKER = ".nnssl_demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="nnssl_demo_work", help="folder for all demo data (default ./nnssl_demo_work;"
                   " a previous demo there is replaced)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.add_argument("--num-unlabelled", type=int, default=24, help="unlabelled phantom cases (default 24)")
    p.add_argument("--num-labelled", type=int, default=12, help="labelled phantom cases (default 12)")
    p.add_argument("-np", type=int, default=2, help="processes for preprocessing (default 2)")
    p.add_argument("--epochs", type=int, default=4, help="pretraining epochs (default 4)")
    p.add_argument("--iters", type=int, default=25, help="pretraining iterations per epoch (default 25)")
    p.add_argument("--methods", nargs="+", default=["moco_zca", "hier"], choices=sorted(METHODS),
                   help="pretraining methods (default moco_zca hier)")
    p.add_argument("--seeds", type=int, default=2, help="pretraining and probe seeds per method, and random "
                   "initialisations of the reference (default 2; at least 2 give a spread)")
    p.add_argument("--voxels-per-class", type=int, default=1000, help="the probe's training voxels per class "
                   "(default 1000; nnssl_probe's own default is 2000)")
    p.add_argument("--labelled-cases", type=int, default=2, help="labelled training cases downstream (default 2)")
    # each nnU-Net run also pays nnU-Net's start-up (~14 s) and a CPU sliding-window validation (~25-35 s)
    p.add_argument("--ft-epochs", type=int, default=4, help="downstream epochs (default 4)")
    p.add_argument("--ft-iters", type=int, default=10, help="downstream iterations per epoch (default 10)")
    p.add_argument("--tta", action="store_true", help="validate with test-time mirroring (8x slower on a CPU)")
    p.add_argument("-device", default="cpu", help="device of every training (default cpu)")
    return p


STUDY = ("docs/RESULTS.md: the probe study (1,000 pretraining steps, 3 seeds, one fold), and the benchmark "
         "that decides as its seeds complete (studies/benchmark.py: the probe on all 5 folds of 30 labelled phantoms, "
         "paired seeds)")
SHORT = {"nnUNetTrainerSSLLinear": "linear probe", "nnUNetTrainerSSLInit": "fine-tune",
         "nnUNetTrainerSSLScratch": "scratch"}


def downstream_arms(methods: list[str]) -> list[tuple[str, str, str]]:
    """(method label, trainer, plans) of the nnU-Net runs that prove the trainers: the linear probe of the first
    method's export, fine-tuning of the last method's, and scratch on the target's own plans."""
    return [(methods[0], "nnUNetTrainerSSLLinear", f"nnsslPlans_{methods[0]}"),
            (methods[-1], "nnUNetTrainerSSLInit", f"nnsslPlans_{methods[-1]}"),
            ("scratch", "nnUNetTrainerSSLScratch", "nnUNetPlans")]


class Stages:
    """Runs named stages in order and prints `[stage i/n] name (elapsed)` before each."""

    def __init__(self, names: list[str]):
        self.names, self.index, self.start = names, 0, time.time()

    def next(self) -> None:
        self.index += 1
        print(f"[stage {self.index}/{len(self.names)}] {self.names[self.index - 1]} "
              f"(elapsed {time.time() - self.start:.0f} s)", flush=True)


def _run(command: list[str], log_file: Path) -> None:
    """Run one nnU-Net command; its output goes to `log_file`, and its tail is shown if it fails."""
    env = os.environ.copy()
    if command[0].startswith("nnUNetv2_plan") and env.get("nnUNet_n_proc_DA") == "0":
        del env["nnUNet_n_proc_DA"]  # nnU-Net 2.8.1's planner calls torch.set_num_threads(n_proc_DA): 0 crashes it
    command = [console_script(command[0]), *command[1:]]
    with open(log_file, "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = log_file.read_text().strip().splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise NnsslError(f"'{' '.join(command)}' failed with exit code {code}; full log: {log_file}")


def _prepare_work_dir(work: Path) -> None:
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise NnsslError(f"{work} exists and is not a demo folder; pass another --work-dir")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("created by nnssl_demo; safe to delete\n")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / var).mkdir()
        os.environ[var] = str(work / var)
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds < 1:
        raise NnsslError(f"--seeds must be at least 1, got {args.seeds}")
    from nnssl_plugin.cli import cpu_config, demo_data, export, prepare, probe

    from nnssl_plugin.families import level_set_of_method

    work = Path(args.work_dir).resolve()
    methods = list(dict.fromkeys(args.methods))
    # the levels the probe reads for each method; random init is read at the same ones as the method it is compared to
    levels_of = {m: level_set_of_method(m) for m in methods}
    seeds = list(range(args.seed, args.seed + args.seeds))
    arms = downstream_arms(methods)
    stages = Stages(["generate CT phantoms (Dataset990 unlabelled, Dataset991 labelled)",
                     "nnUNetv2_plan_and_preprocess -d 991 -c 3d_fullres",
                     "nnssl_add_cpu_config -d 991 (configuration 3d_cpu)",
                     "nnssl_prepare -d 990 -t 991",
                     *[f"nnssl_pretrain -d 990 -m {m} -c 3d_cpu ({args.epochs} epochs x {args.iters} iterations, "
                       f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})" for m in methods],
                     f"nnssl_probe -d 991 -c 3d_cpu -f 0: {len(methods) * len(seeds)} run(s) and "
                     f"{len(set(levels_of.values())) * len(seeds)} random initialisation(s)",
                     f"nnssl_export -d 990 -m {{{','.join(dict.fromkeys(a[0] for a in arms[:-1]))}}} -t 991 (seed "
                     f"{seeds[0]})",
                     f"nnssl_fewshot_splits -d 991 -n {args.labelled_cases}",
                     f"nnUNetv2_train 991 3d_cpu: {len(arms)} runs ({args.ft_epochs} epochs x {args.ft_iters} "
                     f"iterations, {args.labelled_cases} labelled cases)",
                     "table"])
    _prepare_work_dir(work)
    logs = work / "logs"
    logs.mkdir()

    stages.next()
    _check(demo_data.main(["--seed", str(args.seed), "--num-unlabelled", str(args.num_unlabelled),
                           "--num-labelled", str(args.num_labelled)]))
    stages.next()
    _run(["nnUNetv2_plan_and_preprocess", "-d", "991", "-c", "3d_fullres", "-np", str(args.np), "-npfp",
          str(args.np), "--verify_dataset_integrity"], logs / "plan_and_preprocess_991.log")
    print(f"  nnU-Net's log: {logs / 'plan_and_preprocess_991.log'}")
    stages.next()
    _check(cpu_config.main(["-d", "991"]))
    stages.next()
    _check(prepare.main(["-d", "990", "-t", "991", "-np", str(args.np)]))
    results = work / "nnUNet_results"
    runs: dict[tuple[str, int], Path] = {}
    for method in methods:
        stages.next()
        for seed in seeds:
            _run(["nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", args.device, "--epochs",
                  str(args.epochs), "--iters", str(args.iters), "--seed", str(seed)],
                 logs / f"pretrain_{method}_seed{seed}.log")
            trainer = trainer_names.pretrainer(method, args.epochs, args.iters, seed)
            runs[method, seed] = (results / "Dataset990_PhantomUnlabelled" /
                                  trainer_names.run_folder(trainer, "nnsslPretrainPlans", "3d_cpu") /
                                  trainer_names.PRETRAINING_FOLD)
            print(f"  seed {seed}: {_last_epoch_line(runs[method, seed])}")
        print(f"  plot: {runs[method, seeds[0]] / 'progress.png'}")

    stages.next()
    scores: dict[str, list[list[float]]] = {}
    levels = dict(levels_of)
    probes = []  # random init first: each run's probe then reads its reference from the cache nnssl_probe keeps
    for level in dict.fromkeys(levels_of.values()):
        levels[f"random ({level})"] = level
        probes += [(f"random ({level})", ["random", "--levels-like", level], s) for s in seeds]
    probes += [(m, [str(runs[m, s])], s) for m in methods for s in seeds]
    inits = dict.fromkeys(init for init, _, _ in probes)
    scores.update({init: [] for init in sorted(inits, key=lambda i: i.startswith("random"))})  # the table: methods first
    for i, (init, source, seed) in enumerate(probes, 1):
        out = work / "probe" / f"{init.replace(' (', '_').rstrip(')')}_seed{seed}.json"
        with _to_log(logs / f"probe_{out.stem}.log"):
            _check(probe.main([*source, "-d", "991", "-c", "3d_cpu", "-f", "0", "-device", args.device, "--seed",
                               str(seed), "--voxels-per-class", str(args.voxels_per_class), "-o", str(out)]))
        scores.setdefault(init, []).append(_probe_scores(out))
        print(f"  [{i}/{len(probes)}] {init} seed {seed}: mean Dice {scores[init][-1][-1]:.3f} "
              f"(elapsed {time.time() - stages.start:.0f} s)", flush=True)

    stages.next()
    exported = list(dict.fromkeys(method for method, _, _ in arms[:-1]))
    with _to_log(logs / "export.log"):
        for method in exported:
            _check(export.main(["-d", "990", "-m", method, "-t", "991", "-c", "3d_cpu", "--run",
                                str(runs[method, seeds[0]].parent)]))
    print(f"  plans nnsslPlans_{{{','.join(exported)}}} of Dataset991 (log: {logs / 'export.log'})")
    stages.next()
    from nnssl_plugin.fewshot import add_fewshot_folds, labelled_identifiers

    target = work / "nnUNet_preprocessed" / "Dataset991_PhantomBTCV"
    fold = add_fewshot_folds(target, labelled_identifiers(target), [args.labelled_cases], 1, args.seed)[0]
    print(f"  fold {fold['fold']}: train on {', '.join(fold['train'])}; validate on {', '.join(fold['val'])}")
    stages.next()
    os.environ["nnUNet_extTrainer"] = with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer"))
    trained: dict[tuple[str, str], list[float]] = {}
    for i, (method, trainer, plans) in enumerate(arms, 1):
        name = trainer_names.downstream(trainer, args.ft_epochs, args.ft_iters, args.seed, no_tta=not args.tta)
        print(f"  [{i}/{len(arms)}] {method}: nnUNetv2_train 991 3d_cpu {fold['fold']} -tr {name} -p {plans} "
              f"(elapsed {time.time() - stages.start:.0f} s)", flush=True)
        _run(["nnUNetv2_train", "991", "3d_cpu", str(fold["fold"]), "-tr", name, "-p", plans, "-device", args.device],
             logs / f"train_{name}_{plans}.log")
        summary = (results / "Dataset991_PhantomBTCV" / trainer_names.run_folder(name, plans, "3d_cpu") /
                   trainer_names.fold_folder(fold['fold']) /
                   "validation" / "summary.json")
        trained[method, trainer] = dice_per_organ(summary)
    stages.next()
    table = demo_table(scores, levels, trained, args)
    print(table)
    (work / "demo_table.md").write_text(table + "\n")
    print(f"\ndone in {time.time() - stages.start:.0f} s. Table: {work / 'demo_table.md'}; logs: {logs}")
    print("On your own data: README, 'Your own data: the journey' (nnssl_prepare, nnssl_pretrain, nnssl_export, "
          "nnUNetv2_train -tr nnUNetTrainerSSLInit, nnssl_probe), on a GPU. "
          "To look at the demo's runs with nnU-Net's commands:")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"  export {var}={os.environ[var]}")
    return 0


@contextlib.contextmanager
def _to_log(log_file: Path):
    """Send a stage's own prints (probe lines, export reports) to its log file instead of the terminal."""
    with open(log_file, "w") as log, contextlib.redirect_stdout(log):
        yield


def _probe_scores(record_file: Path) -> list[float]:
    """The probe's Dice per organ (NaN where there was nothing to score), then their mean, from its JSON."""
    from nnssl_plugin.io_utils import load_json

    record = load_json(record_file)
    values = [math.nan if v is None else float(v) for v in record["dice"].values()]
    return [*values, math.nan if record["mean_dice"] is None else float(record["mean_dice"])]


def demo_table(scores: dict[str, list[list[float]]], levels: dict[str, str],
               trained: dict[tuple[str, str], list[float]], args) -> str:
    """The probe table (mean ± sample sd over seeds, separation from random init on the same levels), one verdict
    line per method, then nnU-Net's validation Dice of the proof runs (one seed each)."""
    lines = [f"Dense probe (nnssl_probe) on Dataset991 fold 0 ({args.voxels_per_class} voxels per class), mean Dice "
             f"over the 13 organs; pretraining {args.epochs} x {args.iters} steps on {args.num_unlabelled} phantoms. "
             "Cells: mean ± sd (seeds); 'vs random init': the mean paired difference over the seeds (same seed, "
             "fold and voxels) with its 95 % interval.", "",
             *probe_rows(scores, levels), ""]
    for method, runs in scores.items():
        reference = scores.get(f"random ({levels[method]})") if not method.startswith("random") else None
        if reference is None:
            continue
        n = min(len(runs), len(reference))
        if n < 2:
            lines.append(f"{method}: one seed, no interval: the probe cannot say here whether it beats random init; "
                         f"see {STUDY}.")
            continue
        difference = paired([r[-1] for r in runs][:n], [r[-1] for r in reference][:n])
        if difference.above:
            lines.append(f"{method}: above random init on fold 0 at this budget: {difference.text()} over {n} seeds "
                         f"(95 % interval above 0).")
        else:
            lines.append(f"{method}: not shown above random init at this budget ({difference.text()} over {n} seeds: "
                         f"the 95 % interval reaches 0); longer runs: {STUDY}.")
    lines += ["", f"nnU-Net's validation Dice (summary.json) of the proof runs on {args.labelled_cases} labelled cases, "
              f"{args.ft_epochs} x {args.ft_iters} steps, ONE seed each: proof that nnUNetv2_train runs the trainers, "
              "not a comparison.", "",
              "| method | trainer | mean | " + " | ".join(ORGANS) + " |", "| --- | --- | --- |" + " --- |" * len(ORGANS)]
    for (method, trainer), values in trained.items():
        lines.append(f"| {method} | {SHORT[trainer]} | {values[-1]:.3f} | " +
                     " | ".join(f"{v:.3f}" for v in values[:-1]) + " |")
    return "\n".join(lines)


def _last_epoch_line(run: Path) -> str:
    """The last 'pretext top-1 ... effective rank ...' line of the run's nnU-Net training log."""
    logs = sorted(run.glob("training_log_*.txt"))
    lines = [line for line in logs[-1].read_text().splitlines() if "effective rank" in line] if logs else []
    return lines[-1].split(": ", 1)[-1] if lines else "(no epoch logged)"


def _check(code: int) -> None:
    if code:
        raise NnsslError("a demo stage failed (see the error above)")
