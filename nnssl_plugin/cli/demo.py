"""`nnssl_demo`: the plugin's whole story on the built-in CT phantom data: did pretraining help, and which method?

Stages: generate the phantom datasets; plan and preprocess the labelled one with nnU-Net's own
`nnUNetv2_plan_and_preprocess`; add the small CPU configuration; prepare the unlabelled one on the labelled one's
plans; pretrain `moco_zca` and `hier` (short); export both and a random-initialised network (the frozen
evaluations' baseline); add a few-label fold (few labelled training cases, fixed validation cases); train on it with
nnU-Net's `nnUNetv2_train`: for each export the linear probe and the frozen encoder, for each pretrained export the
fine-tuning trainer, and the scratch baseline with the same schedule; then a table of nnU-Net's validation Dice
(per organ and mean, from each fold's summary.json) with the number of seeds behind each number.

Everything lands under --work-dir (nnUNet_raw, nnUNet_preprocessed, nnUNet_results), never in a user's own nnU-Net
folders. The defaults fit a 2-core CPU in about a quarter of an hour; larger settings (-device cuda, more epochs,
iterations, labelled cases and seeds) reproduce the same study on a GPU.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nnssl_plugin.errors import NnsslError, cli_entry
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
    p.add_argument("--epochs", type=int, default=3, help="pretraining epochs (default 3)")
    p.add_argument("--iters", type=int, default=10, help="pretraining iterations per epoch (default 10)")
    p.add_argument("--methods", nargs="+", default=["moco_zca", "hier"], help="pretraining methods (default "
                   "moco_zca hier)")
    p.add_argument("--labelled-cases", type=int, default=2, help="labelled training cases downstream (default 2)")
    # 4 x 10 keeps `make demo` from a fresh clone (install included) under 15 minutes on a slow 2-core machine:
    # each of the 9 runs also pays nnU-Net's start-up (~14 s) and a CPU sliding-window validation (~25-35 s)
    p.add_argument("--ft-epochs", type=int, default=4, help="downstream epochs (default 4)")
    p.add_argument("--ft-iters", type=int, default=10, help="downstream iterations per epoch (default 10)")
    p.add_argument("--seeds", type=int, default=1, help="downstream seeds per arm (default 1)")
    p.add_argument("--tta", action="store_true", help="validate with test-time mirroring (8x slower on a CPU)")
    p.add_argument("-device", default="cpu", help="device of every training (default cpu)")
    return p


ORGANS = ("spleen", "r.kidney", "l.kidney", "gallbl.", "esoph.", "liver", "stomach", "aorta", "IVC", "veins",
          "pancreas", "r.adr.", "l.adr.")


def downstream_arms(methods: list[str]) -> list[tuple[str, str, str]]:
    """(method label, trainer, plans) of every downstream run: frozen evaluations of each export and of the
    random-initialised one, fine-tuning of each pretrained export, and scratch on the target's own plans."""
    arms = []
    for method in [*methods, "random"]:
        for trainer in ("nnUNetTrainerSSLLinear", "nnUNetTrainerSSLFrozenEncoder"):
            arms.append((method, trainer, f"nnsslPlans_{method}"))
    arms += [(method, "nnUNetTrainerSSLInit", f"nnsslPlans_{method}") for method in methods]
    arms.append(("scratch", "nnUNetTrainerSSLScratch", "nnUNetPlans"))
    return arms


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
    from nnssl_plugin.cli import cpu_config, demo_data, export, prepare

    work = Path(args.work_dir).resolve()
    arms = downstream_arms(args.methods)
    runs = [(arm, seed) for arm in arms for seed in range(args.seeds)]
    suffix = f"_{args.ft_epochs}epochs_{args.ft_iters}iters"
    stages = Stages(["generate CT phantoms (Dataset990 unlabelled, Dataset991 labelled)",
                     "nnUNetv2_plan_and_preprocess -d 991 -c 3d_fullres",
                     "nnssl_add_cpu_config -d 991 (configuration 3d_cpu)",
                     "nnssl_prepare -d 990 -t 991",
                     *[f"nnssl_pretrain -d 990 -m {m} -c 3d_cpu ({args.epochs} epochs x {args.iters} iterations)"
                       for m in args.methods],
                     f"nnssl_export -d 990 -m {{{','.join(args.methods)}}} -t 991, and --random-init",
                     f"nnssl_fewshot_splits -d 991 -n {args.labelled_cases}",
                     f"nnUNetv2_train 991 3d_cpu: {len(runs)} runs ({args.ft_epochs} epochs x {args.ft_iters} "
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
    for method in args.methods:
        stages.next()
        _run(["nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", args.device, "--epochs",
              str(args.epochs), "--iters", str(args.iters), "--seed", str(args.seed)], logs / f"pretrain_{method}.log")
        run = (results / "Dataset990_PhantomUnlabelled" / f"nnsslPretrainer_{method}_{args.epochs}epochs_"
               f"{args.iters}iters_seed{args.seed}__nnsslPretrainPlans__3d_cpu" / "fold_all")
        print(f"  {_last_epoch_line(run)}")
        print(f"  plots: {run / 'progress.png'}, {run / 'spectrum.png'}")
    stages.next()
    with _quiet(logs / "export.log"):
        for method in args.methods:
            _check(export.main(["-d", "990", "-m", method, "-t", "991", "-c", "3d_cpu"]))
        _check(export.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--seed", str(args.seed)]))
    print(f"  plans nnsslPlans_{{{','.join([*args.methods, 'random'])}}} of Dataset991 (log: {logs / 'export.log'})")
    stages.next()
    from nnssl_plugin.fewshot import add_fewshot_folds, labelled_identifiers

    target = work / "nnUNet_preprocessed" / "Dataset991_PhantomBTCV"
    fold = add_fewshot_folds(target, labelled_identifiers(target), [args.labelled_cases], 1, args.seed)[0]
    print(f"  fold {fold['fold']}: train on {', '.join(fold['train'])}; validate on {', '.join(fold['val'])}")
    stages.next()
    os.environ["nnUNet_extTrainer"] = _ext_trainer_path()
    scores: dict[tuple[str, str], list[list[float]]] = {}
    for i, ((method, trainer, plans), seed) in enumerate(runs, 1):
        name = f"{trainer}{suffix}_seed{seed}" + ("" if args.tta else "_noTTA")
        print(f"  [{i}/{len(runs)}] {method}: nnUNetv2_train 991 3d_cpu {fold['fold']} -tr {name} -p {plans} "
              f"(elapsed {time.time() - stages.start:.0f} s)", flush=True)
        _run(["nnUNetv2_train", "991", "3d_cpu", str(fold["fold"]), "-tr", name, "-p", plans, "-device", args.device],
             logs / f"train_{name}_{plans}.log")
        summary = (results / "Dataset991_PhantomBTCV" / f"{name}__{plans}__3d_cpu" / f"fold_{fold['fold']}" /
                   "validation" / "summary.json")
        scores.setdefault((method, trainer), []).append(_dice_per_organ(summary))
    stages.next()
    table = _table(scores, args.seeds)
    print(table)
    (work / "demo_table.md").write_text(table + "\n")
    print(f"\ndone in {time.time() - stages.start:.0f} s. Table: {work / 'demo_table.md'}; nnU-Net's logs: {logs}")
    print("Phantom numbers from a few minutes of CPU training say nothing about real CT; the same command with "
          "-device cuda and larger --epochs/--iters/--ft-epochs/--ft-iters/--labelled-cases/--seeds is the real study.")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"  export {var}={os.environ[var]}")
    return 0


def _ext_trainer_path() -> str:
    from nnssl_plugin.ext_trainers import with_ext_trainer_folder

    return with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer"))


class _quiet:
    """Send a stage's own prints (export reports, fold lists) to its log file instead of the terminal."""

    def __init__(self, log_file: Path):
        self.log_file = log_file

    def __enter__(self):
        import contextlib

        self._file = open(self.log_file, "w")
        self._redirect = contextlib.redirect_stdout(self._file)
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)
        self._file.close()
        return False


def _dice_per_organ(summary: Path) -> list[float]:
    """nnU-Net's validation Dice of each of the 13 organs (label order), then their mean."""
    from nnssl_plugin.io_utils import load_json

    mean = load_json(summary)["mean"]
    per_organ = [float(mean[str(label)]["Dice"]) for label in range(1, len(ORGANS) + 1)]
    return [*per_organ, float(load_json(summary)["foreground_mean"]["Dice"])]


def _table(scores: dict[tuple[str, str], list[list[float]]], seeds: int) -> str:
    import numpy as np

    short = {"nnUNetTrainerSSLLinear": "linear probe", "nnUNetTrainerSSLFrozenEncoder": "frozen encoder",
             "nnUNetTrainerSSLInit": "fine-tune", "nnUNetTrainerSSLScratch": "scratch"}
    lines = [f"Validation Dice (nnU-Net summary.json), mean over {seeds} seed(s)" +
             (" ± sd" if seeds > 1 else " (one seed: no spread measured)"),
             "| method | trainer | mean | " + " | ".join(ORGANS) + " |",
             "| --- | --- | --- |" + " --- |" * len(ORGANS)]
    for (method, trainer), runs in scores.items():
        values = np.array(runs)  # (seeds, 13 + 1)
        cell = (lambda j: f"{values[:, j].mean():.3f} ± {values[:, j].std():.3f}") if seeds > 1 else \
            (lambda j: f"{values[0, j]:.3f}")
        lines.append(f"| {method} | {short[trainer]} | **{cell(len(ORGANS))}** | "
                     + " | ".join(cell(j) for j in range(len(ORGANS))) + " |")
    return "\n".join(lines)


def _last_epoch_line(run: Path) -> str:
    """The last 'pretext top-1 ... effective rank ...' line of the run's nnU-Net training log."""
    logs = sorted(run.glob("training_log_*.txt"))
    lines = [line for line in logs[-1].read_text().splitlines() if "effective rank" in line] if logs else []
    return lines[-1].split(": ", 1)[-1] if lines else "(no epoch logged)"


def _check(code: int) -> None:
    if code:
        raise NnsslError("a demo stage failed (see the error above)")
