"""The probe study's fine-tuning arm, on the `2d_cpu` configuration, where a CPU can train nnU-Net far enough to
compare curves: does starting nnU-Net's own training from a pretrained network (`nnUNetTrainerSSLInit`) beat the same
schedule from random weights (`nnUNetTrainerSSLScratch`) with 1 or 2 labelled cases?

Every step is a real command, run in the probe study's work dir after its probes (`probe_study.py --finetune-2d`):

  nnUNetv2_preprocess -d 991 -c 2d                       (Dataset991's own 2d configuration, planned by nnU-Net)
  nnssl_add_cpu_config -d 991 -c 2d --name 2d_cpu --batch-size B
  nnssl_prepare -d 990 -t 991 -c 2d --plans-name nnsslPretrain2d
  for m in the methods: nnssl_pretrain -d 990 -m m -c 2d_cpu -p nnsslPretrain2d -device cpu --epochs E --iters I
                            --seed s --eval-target 991 --eval-every K
                        nnssl_export -d 990 -m m -t 991 -c 2d_cpu --run <that run> --plans-name nnsslPlans_<m>_2d
  nnssl_sweep -d 991 -c 2d_cpu --plans nnsslPlans_<m>_2d ... --baseline scratch -n 1 2 --repeats R
              --epochs FE --iters FI --no-tta -device cpu
  nnssl_probe <each 2d run> -d 991 -c 2d_cpu -f 0 -device cpu --seed s   (and random init at the same levels)

The sweep's folds (nnssl_plugin.fewshot) draw N of fold 0's training cases per repeat and all validate on fold 0's
validation cases, so every cell is scored on the same 3 cases. Each finished step is skipped on a rerun, and the sweep
skips every run with a summary.json. The report, finetune_2d.md (+ finetune_2d.json, finetune_2d_curves.png with
--plot), gives nnU-Net's final validation Dice (summary.json foreground mean) and its per-epoch pseudo Dice.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from study_steps import once, run

from nnssl_plugin import trainer_names
from nnssl_plugin.evidence import fmt, mean_sd, pseudo_dice_curve, separation
from nnssl_plugin.families import level_set_of_method

PLANS_2D = "nnsslPretrain2d"


def add_arguments(p) -> None:
    g = p.add_argument_group("the 2d fine-tuning arm (--finetune-2d)")
    g.add_argument("--finetune-2d", action="store_true", help="after the probes, the 2d fine-tuning arm")
    g.add_argument("--ft-methods", nargs="+", default=["hier", "moco_zca"], help="methods pretrained on 2d_cpu")
    g.add_argument("--ft-n", type=int, nargs="+", default=[1, 2], help="labelled training cases (default 1 2)")
    g.add_argument("--ft-repeats", type=int, default=3, help="seeded draws per N (default 3)")
    g.add_argument("--ft-epochs", type=int, default=125, help="fine-tuning epochs (default 125: 2,500 "
                   "steps with --ft-iters 20; 1,000 found the liver only)")
    g.add_argument("--ft-iters", type=int, default=20, help="iterations per fine-tuning epoch (default 20)")
    g.add_argument("--batch-2d", type=int, default=4, help="batch size of the 2d_cpu configuration (default 4)")


def run_name(method: str, args) -> str:
    return trainer_names.run_folder(trainer_names.pretrainer(method, args.epochs, args.iters, args.seeds[0]), PLANS_2D,
                                    "2d_cpu")


def finetune_2d(work: Path, args, logs: Path, started: float) -> None:
    stamps = work / "study_stamps"
    once(stamps / "preprocess_2d", ["nnUNetv2_preprocess", "-d", "991", "-c", "2d", "-np", "2"],
         logs / "preprocess_2d.log", started)
    once(stamps / "cpu_config_2d", ["nnssl_add_cpu_config", "-d", "991", "-c", "2d", "--name", "2d_cpu",
                                    "--batch-size", str(args.batch_2d)], logs / "cpu_config_2d.log", started)
    once(stamps / "prepare_2d", ["nnssl_prepare", "-d", "990", "-t", "991", "-c", "2d", "--plans-name", PLANS_2D,
                                 "-np", "2"], logs / "prepare_2d.log", started)
    results = work / "nnUNet_results" / "Dataset990_PhantomUnlabelled"
    for method in args.ft_methods:
        fold = results / run_name(method, args) / "fold_all"
        if not (fold / "checkpoint_final.pth").is_file():
            resume = ["--c"] if (fold / "checkpoint_latest.pth").is_file() else []
            print(f"pretrain {method} on 2d_cpu{' (resumed)' if resume else ''}", flush=True)
            run(["nnssl_pretrain", "-d", "990", "-m", method, "-c", "2d_cpu", "-p", PLANS_2D, "-device", "cpu",
                 "--epochs", str(args.epochs), "--iters", str(args.iters), "--seed", str(args.seeds[0]),
                 "--eval-target", "991", "--eval-every", str(args.eval_every), *resume],
                logs / f"pretrain_2d_{method}.log", started)
        once(stamps / f"export_2d_{method}", ["nnssl_export", "-d", "990", "-m", method, "-t", "991", "-c", "2d_cpu",
                                             "--run", run_name(method, args), "--plans-name",
                                             f"nnsslPlans_{method}_2d"], logs / f"export_2d_{method}.log", started)
    once(stamps / "sweep_2d", ["nnssl_sweep", "-d", "991", "-c", "2d_cpu", "--plans",
                               *[f"nnsslPlans_{m}_2d" for m in args.ft_methods], "--baseline", "scratch", "-n",
                               *map(str, args.ft_n), "--repeats", str(args.ft_repeats), "--epochs",
                               str(args.ft_epochs), "--iters", str(args.ft_iters), "--no-tta", "-device", "cpu",
                               "-o", str(work / "study_finetune_2d")], logs / "sweep_2d.log", started)
    levels = {level_set_of_method(m) for m in args.ft_methods}
    for init in [*args.ft_methods, *[f"random_{level}" for level in ("encoder", "decoder") if level in levels]]:
        out = work / "study_probe_2d" / f"{init}.json"
        if not out.is_file():
            source = ["random", "--levels-like", init.split("_", 1)[1]] if init.startswith("random_") else \
                [str(results / run_name(init, args) / "fold_all")]
            run(["nnssl_probe", *source, "-d", "991", "-c", "2d_cpu", "-f", "0", "-device", "cpu", "--seed",
                 str(args.seeds[0]), "-o", str(out)], logs / f"probe_2d_{init}.log", started)
    report_2d(work, args)


def report_2d(work: Path, args) -> None:
    """finetune_2d.json / .md from the sweep's label_efficiency.csv and each fold's training log."""
    table = work / "study_finetune_2d" / "label_efficiency.csv"
    if not table.is_file():
        return
    with open(table) as f:
        rows = list(csv.DictReader(f))
    cells: dict[str, dict[int, list[float]]] = {}
    curves: dict[str, dict[int, list[list[float]]]] = {}
    for r in rows:
        init, n = r["method"].removesuffix("_2d"), int(r["n"])
        cells.setdefault(init, {}).setdefault(n, []).append(float(r["mean_dice"]))
        curves.setdefault(init, {}).setdefault(n, []).append(pseudo_dice_curve(Path(r["summary"]).parent.parent))
    (work / "finetune_2d.json").write_text(json.dumps({"final_dice": cells, "pseudo_dice": curves}, indent=1))
    ns = sorted({int(r["n"]) for r in rows})
    lines = [f"Fine-tuning on 2d_cpu (batch {args.batch_2d}): pretraining {args.epochs} x {args.iters} on 2d_cpu, "
             f"seed {args.seeds[0]}; nnU-Net training {args.ft_epochs} epochs x {args.ft_iters} iterations from the "
             f"export (nnUNetTrainerSSLInit) or random weights (nnUNetTrainerSSLScratch), N labelled cases drawn from "
             f"fold 0's training cases ({args.ft_repeats} draws per N), validated on fold 0's 3 validation cases "
             "without mirroring. Final Dice: summary.json foreground mean, mean ± sample sd (n draws); "
             "'vs scratch' = (mean − scratch mean) / larger sd.", "",
             "| init | " + " | ".join(f"N = {n} | vs scratch" for n in ns) + " |",
             "| --- |" + " --- | --- |" * len(ns)]
    for init, by_n in cells.items():
        row = []
        for n in ns:
            v, base = by_n.get(n, []), cells.get("scratch", {}).get(n, [])
            sep = f"{separation(v, base):+.1f}" if init != "scratch" and len(v) > 1 and len(base) > 1 else ""
            row += [fmt(v) if v else "–", sep]
        lines.append(f"| {init} | " + " | ".join(row) + " |")
    every = max(5, args.ft_epochs // 5)  # about five points per curve, and the last epoch
    marks = sorted({*range(every - 1, args.ft_epochs, every), args.ft_epochs - 1})
    lines += ["", f"nnU-Net's pseudo Dice (mean over organs, mean over draws) at epochs {[e + 1 for e in marks]}:", ""]
    for init, by_n in curves.items():
        for n in ns:
            runs = by_n.get(n, [])
            values = [[c[e] for c in runs if len(c) > e and not math.isnan(c[e])] for e in marks]
            lines.append(f"- {init}, N = {n}: " + ", ".join(f"{mean_sd(v)[0]:.2f}" if v else "–" for v in values))
    probes = {p.stem: json.loads(p.read_text()) for p in sorted((work / "study_probe_2d").glob("*.json"))}
    if probes:
        lines += ["", f"Dense probe of the 2d runs (`nnssl_probe -c 2d_cpu`, fold 0, seed {args.seeds[0]}, one seed): "
                  + ", ".join(f"{init} ({r['levels']} levels) {r['mean_dice']:.3f}" for init, r in probes.items())]
    (work / "finetune_2d.md").write_text("\n".join(lines) + "\n")
    if args.plot:
        plot_curves(work / "finetune_2d_curves.png", curves, ns)


def plot_curves(path: Path, curves: dict[str, dict[int, list[list[float]]]], ns: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 3.8), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], ns):
        for init, by_n in curves.items():
            runs = [c for c in by_n.get(n, []) if c]
            if not runs:
                continue
            length = min(len(c) for c in runs)
            mean = [sum(c[e] for c in runs) / len(runs) for e in range(length)]
            ax.plot(range(1, length + 1), mean, label=f"{init} ({len(runs)} draws)",
                    linestyle="--" if init == "scratch" else "-")
        ax.set_title(f"N = {n} labelled case{'s' if n > 1 else ''}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("nnU-Net pseudo Dice (mean over organs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
