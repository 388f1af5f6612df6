"""The multi-seed phantom study of the evidence issue: does each pretraining method beat a random-initialised encoder
under frozen evaluation, does `hier` beat `voxel2vec` by linear probe, what does `moco_zca` do to the collapse
measurement compared with `moco` — each as mean ± sd over seeds, with the separation in units of seed noise.

Every number comes from the plugin's and nnU-Net's real commands on the phantom datasets of a `nnssl_demo` work dir
(Dataset990 prepared, Dataset991 planned with the `3d_cpu` configuration):

  for seed s and method m:  nnssl_pretrain -d 990 -m m -c 3d_cpu --epochs E --iters I --seed s
                            nnssl_export -d 990 -m m -t 991 -c 3d_cpu --run <that run> --plans-name nnsslPlans_m_s<s>
                            nnssl_export -t 991 -c 3d_cpu --random-init --seed s --plans-name nnsslPlans_random_s<s>
  for every export and trainer T in {Linear, FrozenEncoder}:
      nnUNetv2_train 991 3d_cpu 0 -tr nnUNetTrainerSSL<T>_<e>epochs_<i>iters_seed<s>_noTTA -p nnsslPlans_m_s<s>
      (e: --ft-epochs for the linear probe, --frozen-epochs for the frozen encoder)
  (--finetune m ...) nnUNetv2_train ... -tr nnUNetTrainerSSLInit_<F>epochs_<i>iters_seed<s>_noTTA -p nnsslPlans_m_s<s>
                     and ... -tr nnUNetTrainerSSLScratch_<F>epochs_<i>iters_seed<s>_noTTA -p nnUNetPlans
                     (F: --finetune-epochs)
  nnssl_spectrum -d 991 -c 3d_cpu --checkpoints <every ssl_weights.pth>
  (--label-efficiency) nnssl_sweep -d 991 -c 3d_cpu --trainer nnUNetTrainerSSLLinear --plans <hier, random of seed 0>
                       --baseline none -n ... --repeats 3

Seed s drives the pretraining, the random initialisation and the downstream training of its arm; the phantom data
and fold 0 (nnU-Net's own 5-fold split: 9 training, 3 validation cases) are the same for every arm. Each step is
skipped when its output exists, so an interrupted study resumes where it stopped. Writes study_results.json and
study_report.md (markdown tables) into the work dir. Not part of CI: on 2 CPU cores (2026-12-01) the pretraining took
65 minutes, the linear-probe arm 26, the frozen-encoder arm at --frozen-epochs 30 62, the label-efficiency sweep 28.

Usage: .venv/bin/python studies/phantom_study.py --work-dir nnssl_demo_work [--seeds 0 1 2] [--label-efficiency]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from study_steps import run, use_work_dir

from nnssl_plugin import trainer_names
from nnssl_plugin.evidence import ORGANS, dice_per_organ, fmt, mean_sd, pseudo_dice_curve, separation

TRAINERS = {"linear probe": "nnUNetTrainerSSLLinear", "frozen encoder": "nnUNetTrainerSSLFrozenEncoder"}
UNLABELLED, TARGET = "Dataset990_PhantomUnlabelled", "Dataset991_PhantomBTCV"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="nnssl_demo_work", help="a nnssl_demo work dir (default ./nnssl_demo_work)")
    p.add_argument("--methods", nargs="+", default=["moco", "moco_zca", "hier", "voxel2vec"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8, help="pretraining epochs (default 8)")
    p.add_argument("--iters", type=int, default=50, help="pretraining iterations per epoch (default 50)")
    p.add_argument("--ft-epochs", type=int, default=15, help="downstream epochs (default 15)")
    p.add_argument("--ft-iters", type=int, default=20, help="downstream iterations per epoch (default 20)")
    p.add_argument("--fold", type=int, default=0, help="downstream fold (default 0: 9 training, 3 validation cases)")
    p.add_argument("--patches", type=int, default=64, help="patches for nnssl_spectrum (default 64)")
    p.add_argument("--label-efficiency", action="store_true", help="also the linear-probe label-efficiency sweep")
    p.add_argument("-n", type=int, nargs="+", default=[1, 3], help="labelled cases of the sweep (default 1 3)")
    p.add_argument("--finetune", nargs="*", default=[], help="also fine-tune these methods' exports "
                   "(nnUNetTrainerSSLInit) and the scratch baseline, same schedule and seeds")
    p.add_argument("--frozen-epochs", type=int, help="epochs of the frozen-encoder arm (default --ft-epochs): its "
                   "decoder starts from random weights and needs longer than a linear probe")
    p.add_argument("--finetune-epochs", type=int, help="epochs of the fine-tuning arm (default --ft-epochs): "
                   "fine-tuning needs longer than a frozen evaluation before the organs switch on")
    p.add_argument("--trainers", nargs="*", choices=sorted(TRAINERS), default=sorted(TRAINERS),
                   help="frozen evaluations to run (default both; none with an empty list)")
    p.add_argument("-device", default="cpu")
    return p.parse_args()


def main() -> int:
    args = parse()
    work = Path(args.work_dir).resolve()
    use_work_dir(work)
    results, preprocessed = work / "nnUNet_results", work / "nnUNet_preprocessed" / TARGET
    logs = work / "study_logs"
    logs.mkdir(exist_ok=True)
    start = time.time()

    weights: dict[tuple[str, int], Path] = {}
    for seed in args.seeds:
        for method in args.methods:
            name = trainer_names.pretrainer(method, args.epochs, args.iters, seed)
            run_dir = results / UNLABELLED / f"{name}__nnsslPretrainPlans__3d_cpu"
            weights[method, seed] = run_dir / "fold_all" / "ssl_weights.pth"
            print(f"[{time.time() - start:.0f} s] pretrain {method} seed {seed}", flush=True)
            if not weights[method, seed].is_file():  # an interrupted run resumes (nnssl_pretrain refuses a restart)
                resume = ["--c"] if any((run_dir / "fold_all" / f).is_file()
                                        for f in ("checkpoint_latest.pth", "checkpoint_final.pth")) else []
                run(["nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", args.device, "--epochs",
                     str(args.epochs), "--iters", str(args.iters), "--seed", str(seed), *resume],
                    logs / f"pretrain_{method}_{seed}.log")
            if not (preprocessed / f"nnsslPlans_{method}_s{seed}.json").is_file():
                run(["nnssl_export", "-d", "990", "-m", method, "-t", "991", "-c", "3d_cpu", "--run", str(run_dir),
                     "--plans-name", f"nnsslPlans_{method}_s{seed}"], logs / f"export_{method}_{seed}.log")
        if not (preprocessed / f"nnsslPlans_random_s{seed}.json").is_file():
            run(["nnssl_export", "-t", "991", "-c", "3d_cpu", "--random-init", "--seed", str(seed), "--plans-name",
                 f"nnsslPlans_random_s{seed}"], logs / f"export_random_{seed}.log")

    args.frozen_epochs = args.frozen_epochs or args.ft_epochs
    arms = [(label, trainer, [*args.methods, "random"], args.frozen_epochs if label == "frozen encoder" else
             args.ft_epochs) for label, trainer in TRAINERS.items() if label in args.trainers]
    if args.finetune:
        args.finetune_epochs = args.finetune_epochs or args.ft_epochs
        arms.append(("fine-tune", "nnUNetTrainerSSLInit", args.finetune, args.finetune_epochs))
        arms.append(("fine-tune", "nnUNetTrainerSSLScratch", ["scratch"], args.finetune_epochs))
    dice: dict[str, dict[str, list[list[float]]]] = {}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    epochs = {label: n for label, _, _, n in arms}
    for label, trainer, methods, n_epochs in arms:
        for seed in args.seeds:
            for method in methods:
                variant = trainer_names.downstream(trainer, n_epochs, args.ft_iters, seed, no_tta=True)
                plans = "nnUNetPlans" if method == "scratch" else f"nnsslPlans_{method}_s{seed}"
                fold_dir = results / TARGET / f"{variant}__{plans}__3d_cpu" / f"fold_{args.fold}"
                summary = fold_dir / "validation" / "summary.json"
                print(f"[{time.time() - start:.0f} s] {label} {method} seed {seed}", flush=True)
                if not summary.is_file():
                    run(["nnUNetv2_train", "991", "3d_cpu", str(args.fold), "-tr", variant, "-p", plans, "-device",
                         args.device], logs / f"train_{variant}_{plans}.log")
                dice.setdefault(label, {}).setdefault(method, []).append(dice_per_organ(summary))
                curves.setdefault(label, {}).setdefault(method, []).append(pseudo_dice_curve(fold_dir))
                write_report(work, args, dice, None, None, curves, epochs)

    spectrum_dir = work / "study_spectrum"
    if not (spectrum_dir / "spectrum.json").is_file():
        print(f"[{time.time() - start:.0f} s] spectrum", flush=True)
        run(["nnssl_spectrum", "-d", "991", "-c", "3d_cpu", "--patches", str(args.patches), "-o", str(spectrum_dir),
             "--checkpoints", *[str(weights[m, s]) for m in args.methods for s in args.seeds]], logs / "spectrum.log")
    spectrum = json.loads((spectrum_dir / "spectrum.json").read_text())
    ranks = {r["name"]: r["effective_rank"] for r in spectrum["results"]}
    pretext = {f"{m} seed {s}": last_pretext(weights[m, s].parent) for m in args.methods for s in args.seeds}
    write_report(work, args, dice, ranks, pretext, curves, epochs)

    if args.label_efficiency:
        print(f"[{time.time() - start:.0f} s] label-efficiency sweep (linear probe)", flush=True)
        run(["nnssl_sweep", "-d", "991", "-c", "3d_cpu", "--trainer", "nnUNetTrainerSSLLinear", "--plans",
             f"nnsslPlans_hier_s{args.seeds[0]}", f"nnsslPlans_random_s{args.seeds[0]}", "--baseline", "none", "-n",
             *map(str, args.n), "--repeats", "3", "--epochs", str(args.ft_epochs), "--iters", str(args.ft_iters),
             "--no-tta", "-device", args.device, "-o", str(work / "study_label_efficiency")], logs / "sweep.log")
        print((logs / "sweep.log").read_text())
    print(f"done in {time.time() - start:.0f} s: {work / 'study_report.md'}")
    return 0


def last_pretext(fold_dir: Path) -> str:
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    lines = [line for line in logs[-1].read_text().splitlines() if "pretext top-1" in line] if logs else []
    return lines[-1].split(": ", 1)[-1].strip() if lines else "(none)"


def write_report(work: Path, args, dice, ranks, pretext, curves, epochs) -> None:
    """study_results.json (every per-seed number) and study_report.md (the tables)."""
    (work / "study_results.json").write_text(json.dumps({"args": vars(args), "dice": dice, "effective_rank": ranks,
                                                         "pretext": pretext, "pseudo_dice": curves}, indent=1))
    schedule = ", ".join(f"{label} {n} x {args.ft_iters}" for label, n in epochs.items())
    lines = [f"Pretraining {args.epochs} epochs x {args.iters} iterations (3d_cpu, batch 2); downstream "
             f"{schedule} on fold {args.fold}; seeds {args.seeds}. Mean Dice over the 13 "
             "organs (nnU-Net summary.json foreground_mean), mean ± sd (n) over seeds; 'vs random' = (mean − mean "
             "of the baseline: random init, or scratch for fine-tuning) / larger sd.", ""]
    for label, by_method in dice.items():
        lines += [f"### {label}", "", "| init | mean Dice | vs baseline (sd) | " + " | ".join(ORGANS) + " |",
                  "| --- | --- | --- |" + " --- |" * len(ORGANS)]
        baseline = "random" if "random" in by_method else "scratch"
        base = [r[-1] for r in by_method.get(baseline, [])]
        for method, rows in by_method.items():
            means = [r[-1] for r in rows]
            sep = f"{separation(means, base):+.1f}" if method != baseline and len(base) > 1 and len(means) > 1 else ""
            organs = " | ".join(f"{mean_sd([r[j] for r in rows])[0]:.2f}" for j in range(len(ORGANS)))
            lines.append(f"| {method} | {fmt(means)} | {sep} | {organs} |")
        lines.append("")
        marks = sorted({*range(4, epochs[label], 5), epochs[label] - 1})  # every 5th epoch and the last
        lines += [f"{label}: nnU-Net's pseudo Dice (mean over organs) at epochs {[e + 1 for e in marks]}", ""]
        for method, runs in curves.get(label, {}).items():
            cells = [fmt([c[e] for c in runs if len(c) > e], 2) for e in marks]
            lines.append(f"- {method}: " + ", ".join(cells))
        lines.append("")
    if ranks:
        lines += ["### effective rank of the pooled bottleneck (nnssl_spectrum)", "", "| representation | effective "
                  "rank |", "| --- | --- |"] + [f"| {name} | {value:.2f} |" for name, value in ranks.items()] + [""]
    if pretext:
        lines += ["### last pretraining epoch", ""] + [f"- {k}: {v}" for k, v in pretext.items()] + [""]
    (work / "study_report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
