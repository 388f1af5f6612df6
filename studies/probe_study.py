"""The probe study of the evidence issue: does each pretraining method's frozen representation beat a random
initialisation under the dense probe (`nnssl_probe`), by how many seed sds, does `hier` beat `voxel2vec`, and how does
the probe's Dice grow with the number of labelled cases?

Every number comes from the plugin's and nnU-Net's real commands, in a work dir of its own (runs of other recipes
are never picked up: the work dir is created by this script and marked):

  nnssl_demo_data --num-unlabelled U --num-labelled 12                   (Dataset990 unlabelled, Dataset991 labelled)
  nnUNetv2_plan_and_preprocess -d 991 -c 3d_fullres; nnssl_add_cpu_config -d 991; nnssl_prepare -d 990 -t 991 -c 3d_cpu
  for each seed s and method m:
      nnssl_pretrain -d 990 -m m -c 3d_cpu -device cpu --epochs E --iters I --seed s --eval-target 991 --eval-every K
      nnssl_probe <that run> -d 991 -c 3d_cpu -f 0 -device cpu --seed s [--train-cases N]
  nnssl_probe random --levels-like {encoder, decoder} -d 991 -c 3d_cpu -f 0 -device cpu --seed s [--train-cases N]

Seed s drives the pretraining, the random initialisation and the probe's voxel (and --train-cases) draw; the
phantom data and fold 0 of nnU-Net's own 5-fold split (9 training, 3 validation cases) are the same for every arm.
Random init is probed with the level set of the method it is compared with: the encoder stages for moco and
moco_zca, the bottleneck and decoder stages for hier and voxel2vec.

Order (the issue's, so that a cut study has the most important part): hier, moco_zca and random init on every seed;
then moco and voxel2vec; then the label-efficiency probes (N labelled cases, nested draws); then, with
--finetune-2d, the fine-tuning arm on 2d_cpu (studies/finetune_2d.py). Every step is skipped
when its output exists and an interrupted pretraining resumes from its checkpoint_latest (`--c`), so the same
command picks up where a stopped study stopped. After each step the report is rewritten: probe_study.json (every
per-seed number) and probe_study.md (the tables; with --plot, label_efficiency.png).

Usage: .venv/bin/python studies/probe_study.py --work-dir /tmp/probe_study [--seeds 0 1 2] [--epochs 40 --iters 25]
       [--finetune-2d [--ft-epochs 125 --ft-iters 20 --ft-n 1 2 --ft-repeats 3]]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from finetune_2d import add_arguments as add_finetune_2d_arguments
from finetune_2d import finetune_2d
from study_steps import open_work_dir, phantom_world, run

from nnssl_plugin import trainer_names
from nnssl_plugin.config import METHODS
from nnssl_plugin.evidence import fmt, mean_sd, separation
from nnssl_plugin.families import level_set_of_method

MARKER = ".nnssl_probe_study"
UNLABELLED, TARGET = "Dataset990_PhantomUnlabelled", "Dataset991_PhantomBTCV"
GROUPS = (("hier", "moco_zca"), ("moco", "voxel2vec"))  # the order: a cut study keeps the first group


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", required=True, help="the study's own folder (created; reused only if it is one)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=[m for g in GROUPS for m in g], choices=sorted(METHODS))
    p.add_argument("--num-unlabelled", type=int, default=100, help="unlabelled phantom cases (default 100)")
    p.add_argument("--epochs", type=int, default=40, help="pretraining epochs (default 40)")
    p.add_argument("--iters", type=int, default=25, help="iterations per epoch (default 25: 1,000 steps in all)")
    p.add_argument("--eval-every", type=int, default=10, help="held-out evaluation every K epochs (default 10)")
    p.add_argument("-n", type=int, nargs="*", default=[1, 2, 4], help="label-efficiency: labelled training cases "
                   "of the probe (default 1 2 4; the full fold, 9, is the main probe); none to skip")
    p.add_argument("--plot", action="store_true", help="also label_efficiency.png (matplotlib)")
    add_finetune_2d_arguments(p)
    return p.parse_args(argv)


def probe_json(work: Path, init: str, seed: int, n: int | None) -> Path:
    return work / "study_probe" / f"{init}_seed{seed}" / (f"n{n}.json" if n else "all.json")


def main(argv=None) -> int:
    args = parse(argv)
    work = open_work_dir(args.work_dir, MARKER, "studies/probe_study.py")
    logs, started = work / "study_logs", time.time()
    stamps = work / "study_stamps"
    results = work / "nnUNet_results" / UNLABELLED

    phantom_world(stamps, logs, args.num_unlabelled, 12, started)

    def run_dir(method: str, seed: int) -> Path:
        trainer = trainer_names.pretrainer(method, args.epochs, args.iters, seed)
        return results / trainer_names.run_folder(trainer, "nnsslPretrainPlans", "3d_cpu") / "fold_all"

    def pretrain(method: str, seed: int) -> None:
        fold = run_dir(method, seed)
        if (fold / "checkpoint_final.pth").is_file():
            return
        resume = ["--c"] if (fold / "checkpoint_latest.pth").is_file() else []
        print(f"pretrain {method} seed {seed}{' (resumed)' if resume else ''}", flush=True)
        run(["nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", "cpu", "--epochs",
             str(args.epochs), "--iters", str(args.iters), "--seed", str(seed), "--eval-target", "991",
             "--eval-every", str(args.eval_every), *resume], logs / f"pretrain_{method}_seed{seed}.log", started)

    def probe(init: str, seed: int, n: int | None = None) -> None:
        out = probe_json(work, init, seed, n)
        if out.is_file():
            return
        source = ["random", "--levels-like", init.split("_", 1)[1]] if init.startswith("random_") else \
            [str(run_dir(init, seed))]
        run(["nnssl_probe", *source, "-d", "991", "-c", "3d_cpu", "-f", "0", "-device", "cpu", "--seed", str(seed),
             *(["--train-cases", str(n)] if n else []), "-o", str(out)],
            logs / f"probe_{init}_seed{seed}_{f'n{n}' if n else 'all'}.log", started)

    methods = [m for g in GROUPS for m in g if m in args.methods]
    randoms = [f"random_{level}" for level in ("encoder", "decoder") if level in {level_set_of_method(m) for m in methods}]
    order = [[m for m in g if m in methods] for g in GROUPS]
    for i, group in enumerate(order):
        for seed in args.seeds:
            for method in group:
                pretrain(method, seed)
                probe(method, seed)
                report(work, args, methods, randoms, run_dir)
            if i == 0:
                for init in randoms:
                    probe(init, seed)
                report(work, args, methods, randoms, run_dir)
    for n in args.n:
        for seed in args.seeds:
            for init in [*methods, *randoms]:
                probe(init, seed, n)
            report(work, args, methods, randoms, run_dir)
    if args.finetune_2d:
        finetune_2d(work, args, logs, started)
    print(f"done in {time.time() - started:.0f} s: {work / 'probe_study.md'}")
    return 0


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def heldout(fold: Path) -> dict | None:
    """Held-out pretext loss and top-1 at initialisation and at every evaluation of a finished run."""
    import torch

    final, init = fold / "checkpoint_final.pth", fold / "heldout_init.json"
    if not final.is_file() or not init.is_file():
        return None
    log = torch.load(final, weights_only=True, map_location="cpu")["logging"]
    start = json.loads(init.read_text())
    evals = [(e + 1, log["heldout_loss"][e], log["heldout_top1"][e]) for e, v in enumerate(log["heldout_loss"])
             if v is not None]
    return {"chance_loss": math.log(start["negatives"] + 1), "chance_top1": start["chance"],
            "init": [0, start["loss"], start["top1"]], "evals": evals}


def report(work: Path, args, methods: list[str], randoms: list[str], run_dir) -> None:
    inits = [*methods, *randoms]
    sizes = [None, *args.n]
    records = {init: {seed: {n or "all": r for n in sizes if (r := _load(probe_json(work, init, seed, n)))}
                      for seed in args.seeds} for init in inits}
    curves = {m: {s: h for s in args.seeds if (h := heldout(run_dir(m, s)))} for m in methods}
    (work / "probe_study.json").write_text(json.dumps({"args": vars(args), "probes": records, "heldout": curves},
                                                      indent=1, default=str))

    def values(init: str, n, key=None) -> list[float]:
        out = []
        for seed in args.seeds:
            r = records[init][seed].get(n or "all")
            if r is not None:
                out.append(r["mean_dice"] if key is None else (r["dice"][key] if r["dice"][key] is not None
                                                               else math.nan))
        return out

    organs = next((list(r["dice"]) for i in inits for s in args.seeds for r in records[i][s].values()), [])
    lines = [f"Pretraining: {args.epochs} epochs x {args.iters} iterations (3d_cpu, batch 2, 2-core CPU) on "
             f"{args.num_unlabelled} unlabelled phantoms; probe: `nnssl_probe` on Dataset991 fold 0 (9 training, 3 "
             f"validation cases), mean Dice over the 13 organs; seeds {args.seeds}. Cells: mean ± sample sd (n "
             "seeds); 'vs random' = (mean − mean of random init on the same levels) / larger sd.", "",
             "| init | levels | probe mean Dice | vs random (sd) | " + " | ".join(organs) + " |",
             "| --- | --- | --- | --- |" + " --- |" * len(organs)]
    for init in inits:
        means = values(init, None)
        if not means:
            continue
        level = init.split("_", 1)[1] if init.startswith("random_") else level_set_of_method(init)
        base = values(f"random_{level}", None)
        sep = f"{separation(means, base):+.1f}" if not init.startswith("random_") and len(base) > 1 and \
            len(means) > 1 else ""
        cells = []
        for organ in organs:
            v = [x for x in values(init, None, organ) if not math.isnan(x)]
            cells.append(f"{mean_sd(v)[0]:.2f}" if v else "–")
        lines.append(f"| {init} | {level} | {fmt(means)} | {sep} | " + " | ".join(cells) + " |")
    if len(values("hier", None)) > 1 and len(values("voxel2vec", None)) > 1:
        lines += ["", f"hier vs voxel2vec: {separation(values('hier', None), values('voxel2vec', None)):+.1f} sd"]
    if any(curves.values()):
        lines += ["", "Held-out pretext loss (chance: ln(negatives + 1)) at initialisation → each evaluation, per "
                  "seed:", ""]
        for m, by_seed in curves.items():
            for s, h in by_seed.items():
                path = " → ".join(f"{loss:.3f}" for _, loss, _ in [h["init"], *h["evals"]])
                lines.append(f"- {m} seed {s} (chance {h['chance_loss']:.3f}): {path}; top-1 {h['init'][2]:.3f} → "
                             f"{h['evals'][-1][2]:.3f}")
    if args.n:
        ns = sorted(args.n) + [9]
        lines += ["", "Label efficiency: probe mean Dice by labelled training cases N (nested seeded draws of fold "
                  "0's training cases; N = 9 is the full fold)", "",
                  "| init | " + " | ".join(f"N = {n}" for n in ns) + " |", "| --- |" + " --- |" * len(ns)]
        for init in inits:
            row = [values(init, None if n == 9 else n) for n in ns]
            if any(row):
                lines.append(f"| {init} | " + " | ".join(fmt(v) if v else "–" for v in row) + " |")
        if args.plot:
            plot(work / "label_efficiency.png", inits, ns, lambda i, n: values(i, None if n == 9 else n))
    (work / "probe_study.md").write_text("\n".join(lines) + "\n")


def plot(path: Path, inits: list[str], ns: list[int], values) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for init in inits:
        points = [(n, *mean_sd(v)) for n in ns if len(v := values(init, n)) > 0]
        if points:
            xs, ms, sds = zip(*points)
            sds = [0 if math.isnan(s) else s for s in sds]
            ax.errorbar(xs, ms, yerr=sds, capsize=3, marker="o", label=init,
                        linestyle="--" if init.startswith("random") else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("labelled training cases (N)")
    ax.set_ylabel("probe mean Dice (13 organs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
