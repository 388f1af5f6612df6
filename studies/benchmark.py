"""The benchmark that decides: every pretraining method and random init, probed on every fold of a BTCV-sized
labelled phantom, the pretraining seed as the independent unit, every comparison paired, the power stated.

One resumable command. Each step (one pretraining run, the probes of one initialisation on every fold, one held-out
pretext evaluation on common views) writes its output when it is done and is skipped when that output exists; an
interrupted pretraining resumes from its checkpoint_latest (`--c`). So a stopped benchmark (a background job may be
stopped at any time) continues where it stopped when the same command runs again. A run's steps go back to back
(pretraining, its probes, its common views), so its weights are needed only until its results exist; with
`--results-dir studies/benchmark_results` the results (small JSONs) are kept in git, and the benchmark accumulates
over sessions and machines: a fresh work dir rebuilds the data (same generator seeds) and runs only what is missing.

  nnssl_demo_data --num-unlabelled 100 --num-labelled 30     (Dataset990 unlabelled, Dataset991 labelled: BTCV's size)
  nnUNetv2_plan_and_preprocess -d 991 -c 3d_fullres; nnssl_add_cpu_config -d 991; nnssl_prepare -d 990 -t 991 -c 3d_cpu
  per seed s (seeds in order, so a cut benchmark holds whole seeds):
      nnssl_probe random -f all --levels-like encoder/decoder ... --seed s
      per row m (a method, or a named variant: a method with --option K=V, VARIANTS below; its whole config is
      recorded in <results>/runs/<m>_seed<s>.json before its first step, and results made with another config
      are refused, never mixed):
                    nnssl_pretrain -d 990 -m m -c 3d_cpu --epochs E --iters I --seed s --eval-target 991 [--option ..]
                    nnssl_probe <run> -d 991 -c 3d_cpu -f all --levels-like encoder --seed s   (the common level set)
                    nnssl_probe <run> ... -f all --seed s                                      (dense: its own levels)
                    python -m nnssl_plugin.cli.common_views <run> ... --batches 16 / 160 (MoCo)  (pretext on common views)
                    nnssl_spectrum -d 991 -c 3d_cpu --checkpoints <run> --patches 320 --seed s  (MoCo family: Fig. 1)

Statistics (`nnssl_plugin.paired`): a seed's score is its probe mean Dice (13 organs) averaged over the five folds
(the folds share one pretrained network, so they are not independent replicates); a comparison A − B is the mean
over seeds of the paired difference d_s = score_A(s) − score_B(s) (same seed, same folds, same sampled voxels), with
a 95 % t interval, and the smallest difference detectable with 80 % power at α = 0.05 (two-sided) given the sd of
d_s and the number of seeds. The pilot (the default seeds 0–2) measures that sd; `--plan` then prints the seeds needed
for δ ≤ 0.02 under the CPU cap (`--cpu-cap-hours`), and `--seeds 0 1 2 3 ...` adds them (seeds done are kept).

Usage: .venv/bin/python studies/benchmark.py --work-dir /tmp/bench --results-dir studies/benchmark_results
           [--seeds 0 1 2] [--methods hier_paper voxel2vec_paper hier voxel2vec] [--epochs 40 --iters 25]
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
import sys
import time
from pathlib import Path

from study_steps import open_work_dir, phantom_world, run

from nnssl_plugin import trainer_names
from nnssl_plugin.config import default_recipe, method_config, parse_option, with_options
from nnssl_plugin.families import level_set_of_method
from nnssl_plugin.recipe import run_tag

MARKER = ".nnssl_benchmark"
UNLABELLED, TARGET = "Dataset990_PhantomUnlabelled", "Dataset991_PhantomBTCV"
# A row of the benchmark: a method, or a named variant = a method with config options (`nnssl_pretrain --option`).
# The papers' recipes (Kats et al. 2024, arXiv 2401.06473; vox2vec, Goncharov et al. 2023, arXiv 2307.14725; their
# public code read for the numbers): every level projected without losing rank, a head as wide as its input,
# restoration on [−175, 250] HU, Models-Genesis-scale shuffling, the batch's crop pairs from one case; vox2vec's own
# views. The *_paper ablations each put back one of today's choices.
PAPER_HIER = {"level_dim": "0", "hidden_dim": "0", "restoration_window": "kats", "shuffle": "genesis",
              "pairs_per_case": "2"}
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "hier": ("hier", {}), "voxel2vec": ("voxel2vec", {}), "moco_zca": ("moco_zca", {}), "moco": ("moco", {}),
    "hier_paper": ("hier", PAPER_HIER),
    "voxel2vec_paper": ("voxel2vec", {"hidden_dim": "0", "view_windows": "vox2vec", "pairs_per_case": "2"}),
    "hier_paper_frozen32": ("hier", {**PAPER_HIER, "level_dim": "32", "train_level_projections": "false"}),
    "hier_paper_wide_shuffle": ("hier", {**PAPER_HIER, "shuffle": "wide"}),
    "hier_paper_plans_window": ("hier", {**PAPER_HIER, "restoration_window": "plans"}),
    "hier_paper_one_pair": ("hier", {**PAPER_HIER, "pairs_per_case": "1"}),
    "hier_paper_photometric": ("hier", {**PAPER_HIER, "photometric_views": "true", "view_windows": "vox2vec"}),
    # Hassanpour et al.'s per-component ablation: MoCo v2 (no standardisation), + local loss, + ZCA, + both (moco_zca)
    "mocov2": ("moco", {"bottleneck_whitening": "false", "whitening_per_channel": "false"}),
    "mocov2_local": ("moco", {"bottleneck_whitening": "false", "whitening_per_channel": "false", "local_weight": "0.5"}),
    "mocov2_zca": ("moco", {"whitening_per_channel": "false"}),
    # the global-term candidates of the MoCo screen (docs/RESULTS.md, "Can the global vector tell crops apart?")
    "mocov2_shift01": ("moco", {"bottleneck_whitening": "false", "whitening_per_channel": "false",
                                "view_shift": "0.1"}),
    "mocov2_prenorm_shift01": ("moco", {"bottleneck_whitening": "false", "whitening_per_channel": "false",
                                        "view_shift": "0.1", "global_readout": "prenorm"}),
    # MoCo v2 with the global InfoNCE over aligned regions of the bottleneck in place of one vector per crop
    "moco_regions": ("moco_regions", {}),
}
ORDER = ("hier_paper", "voxel2vec_paper", "hier", "voxel2vec", "moco_zca", "moco",  # decisions first: a cut seed
         "hier_paper_frozen32", "hier_paper_wide_shuffle", "hier_paper_plans_window", "hier_paper_one_pair",  # keeps
         "hier_paper_photometric", "mocov2", "mocov2_local", "mocov2_zca", "mocov2_shift01",  # the pairs
         "mocov2_prenorm_shift01", "moco_regions")


def common_view_batches(name: str) -> int:
    """Held-out batches of a row's common-views step (COMMON_VIEW_BATCHES of its family)."""
    return COMMON_VIEW_BATCHES[method_config(VARIANTS[name][0]).family]


def variant_config(name: str) -> tuple[str, dict, dict]:
    """(method, typed options, the whole resolved method config as a dict) of a benchmark row."""
    method, texts = VARIANTS[name]
    base = method_config(method)
    options = {k: parse_option(base, k, v) for k, v in texts.items()}
    return method, options, asdict(with_options(base, options))
SPECTRUM_PATCHES = 320  # held-out patches of the spectrum step: 4x the phantom's 80 bottleneck channels
# held-out batches (of 2 crops) of the common-views step per family: a dense crop pair holds thousands of voxel
# pairs, a MoCo pair one, so the MoCo family is scored on 320 crops, the training hold-out's count (top-1 by chance
# about 1/309, not 1/31)
COMMON_VIEW_BATCHES = {"hier": 16, "moco": 160}
COMMON_LEVELS = "encoder"  # the level set every initialisation is read at (cross-family rows)
FOLDS = 5


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", required=True, help="the benchmark's own folder (created; reused only if it is one)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds (default: the pilot's "
                                                                           "0 1 2)")
    p.add_argument("--methods", nargs="+", default=["hier", "voxel2vec", "moco_zca", "moco"], choices=ORDER,
                   help="methods and named variants (VARIANTS in this file: a method with config options), run in "
                        "this file's ORDER within a seed (default: the four methods)")
    p.add_argument("--num-unlabelled", type=int, default=100)
    p.add_argument("--num-labelled", type=int, default=30, help="labelled cases (default 30, BTCV's size: 6 "
                                                                "validation cases per fold)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--iters", type=int, default=25, help="iterations per epoch (default 25: 1,000 steps)")
    p.add_argument("--eval-every", type=int, default=10, help="held-out pretext on the method's own views every K "
                                                              "epochs (default 10)")
    p.add_argument("--results-dir", help="where each step's result (probe and common-view JSONs, steps.json) and the "
                                         "report go (default <work-dir>/results). Point it at a folder kept in git "
                                         "(studies/benchmark_results) and the benchmark accumulates over machines "
                                         "and sessions: a step whose result is there is not run again")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from what exists, run nothing")
    p.add_argument("--plan", action="store_true", help="print the CPU plan (time per seed; after the pilot, the seeds "
                                                       "needed for δ = 0.02 within --cpu-cap-hours) and stop")
    p.add_argument("--cpu-cap-hours", type=float, default=24.0, help="CPU hours the main stage may take beyond the "
                                                                    "seeds done (default 24)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    work = open_work_dir(args.work_dir, MARKER, "studies/benchmark.py")
    logs, started = work / "logs", time.time()
    stamps = work / "stamps"
    out = Path(args.results_dir).resolve() if args.results_dir else work / "results"
    out.mkdir(parents=True, exist_ok=True)
    results = work / "nnUNet_results" / UNLABELLED

    def run_dir(name: str, seed: int) -> Path:
        method, options, _ = variant_config(name)
        tag = run_tag(default_recipe(method_config(method).family), default_recipe(method_config(method).family),
                      options)
        trainer = trainer_names.pretrainer(method, args.epochs, args.iters, seed, tag)
        return results / trainer_names.run_folder(trainer, "nnsslPretrainPlans", "3d_cpu") / "fold_all"

    from benchmark_report import plan_text, write_report

    methods = [m for m in ORDER if m in args.methods]
    args.methods = methods
    args.row_options = {m: VARIANTS[m] for m in methods}  # the report's legend
    own = {m: level_set_of_method(VARIANTS[m][0]) for m in methods}

    def report() -> dict:
        return write_report(out, args, own, COMMON_LEVELS)

    if args.report_only or args.plan:
        summary = report()
        if args.plan:
            done = len({s for k, v in summary["scores"].items() for s in v})
            print(plan_text(summary, methods, own, COMMON_LEVELS, done, args.cpu_cap_hours))
        return 0
    summary = report()
    print(plan_text(summary, methods, own, COMMON_LEVELS, 0, args.cpu_cap_hours).splitlines()[0], flush=True)
    print(f"this command: seeds {args.seeds}; every step is kept when done, the same command continues", flush=True)

    def timed(name: str, command: list[str], log: Path) -> None:
        """`run`, its wall time recorded in results/steps.json (the CPU plan of later stages reads it)."""
        start = time.time()
        run(command, log, started)
        steps_file = out / "steps.json"
        steps = json.loads(steps_file.read_text()) if steps_file.is_file() else {}
        steps[name] = round(time.time() - start, 1)
        steps_file.parent.mkdir(parents=True, exist_ok=True)
        steps_file.write_text(json.dumps(steps, indent=1))

    phantom_world(stamps, logs, args.num_unlabelled, args.num_labelled, started)

    def pretrain(name: str, seed: int) -> None:
        fold = run_dir(name, seed)
        if (fold / "checkpoint_final.pth").is_file():
            return
        resume = ["--c"] if (fold / "checkpoint_latest.pth").is_file() else []
        method, texts = VARIANTS[name]
        print(f"pretrain {name} seed {seed}{' (resumed)' if resume else ''}", flush=True)
        timed(f"pretrain {name}:{seed}",
              ["nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", "cpu", "--epochs",
               str(args.epochs), "--iters", str(args.iters), "--seed", str(seed), "--eval-target", "991",
               "--eval-every", str(args.eval_every), *[f"--option={k}={v}" for k, v in texts.items()], *resume],
              logs / f"pretrain_{name}_seed{seed}.log")

    def probe(init: str, seed: int, levels: str) -> None:
        """The probe of one initialisation on every fold (one step)."""
        target = out / "probe" / f"{init}_{levels}_seed{seed}.json"
        if target.is_file():
            return
        source = ["random"] if init == "random" else [str(run_dir(init, seed))]
        timed(f"probe {levels} levels:{init}:{seed}",
              ["nnssl_probe", *source, "-d", "991", "-c", "3d_cpu", "-f", "all", "--levels-like", levels, "-device",
               "cpu", "--seed", str(seed), "-o", str(target)], logs / f"probe_{init}_{levels}_seed{seed}.log")

    def check_record(name: str, seed: int) -> None:
        """runs/<row>_seed<s>.json records the row's whole config before its first step; results made with another
        config than the row's today are refused, never mixed."""
        method, options, config = variant_config(name)
        kept = out / "runs" / f"{name}_seed{seed}.json"
        if kept.is_file():
            if json.loads(kept.read_text())["config"] != config:
                raise SystemExit(f"{kept}: the results of {name} seed {seed} were made with another config than "
                                 f"{name}'s today; give today's config a new row name in VARIANTS, or move the old "
                                 f"results to a row whose options spell out their config")
            return
        if any((out / sub / f"{name}_{tail}seed{seed}.json").is_file() for sub, tail in
               (("probe", f"{COMMON_LEVELS}_"), ("probe", f"{own[name]}_"), ("common_views", ""))):
            raise SystemExit(f"results of {name} seed {seed} exist in {out} without runs/{name}_seed{seed}.json "
                             f"(their config is unknown); move them away or write that record")
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({"method": method, "options": VARIANTS[name][1], "config": config}, indent=1))

    def done(name: str, seed: int) -> bool:
        """Every result of this run is in the results folder (its pretraining is not needed again)."""
        return all((out / "probe" / f"{name}_{levels}_seed{seed}.json").is_file()
                   for levels in {COMMON_LEVELS, own[name]}) and (out / "common_views" / f"{name}_seed{seed}.json"
                                                                  ).is_file()

    def common_views(name: str, seed: int) -> None:
        """The held-out pretext on the family's common views; a kept result scored on fewer batches than the row's
        family has today is redone while the run's weights are here (else kept: never a pretraining for it)."""
        target = out / "common_views" / f"{name}_seed{seed}.json"
        batches = common_view_batches(name)
        if target.is_file() and (json.loads(target.read_text())["batches"] >= batches
                                 or not (run_dir(name, seed) / "checkpoint_final.pth").is_file()):
            return
        timed(f"common views:{name}:{seed}",
              ["python", "-m", "nnssl_plugin.cli.common_views", str(run_dir(name, seed)), "--target", "991", "-c",
               "3d_cpu", "-device", "cpu", "--batches", str(batches), "-o", str(target)],
              logs / f"common_views_{name}_seed{seed}.log")

    def spectrum(name: str, seed: int) -> None:
        """MoCo-family rows (own levels = the encoder): singular spectrum and effective rank of the pooled
        bottleneck, raw and (whitening rows) whitened, on SPECTRUM_PATCHES held-out patches of 991, with random init
        of the same seed (Hassanpour et al.'s Fig. 1). Needs the run's weights: a run whose weights are gone (a
        fresh work dir) is not pretrained again for it."""
        target = out / "spectrum" / f"{name}_seed{seed}.json"
        weights = run_dir(name, seed) / "ssl_weights.pth"
        if own[name] != COMMON_LEVELS or target.is_file() or not weights.is_file():
            return
        folder = work / "spectrum" / f"{name}_seed{seed}"
        timed(f"spectrum:{name}:{seed}",
              ["nnssl_spectrum", "-d", "991", "-c", "3d_cpu", "--checkpoints", str(weights), "--patches",
               str(SPECTRUM_PATCHES), "--seed", str(seed), "-o", str(folder)], logs / f"spectrum_{name}_seed{seed}.log")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "spectrum.json", target)

    level_sets = sorted({COMMON_LEVELS, *own.values()})
    for seed in args.seeds:
        for levels in level_sets:
            probe("random", seed, levels)
        for method in methods:  # a run's steps back to back: its weights are needed only until its results exist
            check_record(method, seed)
            if done(method, seed):
                common_views(method, seed)  # rows run before a step grew or existed, while their weights are here
                spectrum(method, seed)
                continue
            pretrain(method, seed)
            for levels in sorted({COMMON_LEVELS, own[method]}):
                probe(method, seed, levels)
            common_views(method, seed)
            spectrum(method, seed)
            report()
        report()
    print(f"done in {time.time() - started:.0f} s: {out / 'benchmark.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
