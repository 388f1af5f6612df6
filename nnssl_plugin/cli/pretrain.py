"""`nnssl_pretrain`: self-supervised pretraining of the planned network on a prepared unlabelled dataset.

Runs nnU-Net's own training entry (`nnunetv2.run.run_training`) on fold `all` with the trainer
`nnsslPretrainer_<method>[_<N>epochs][_<M>iters][_seed<K>][_r<hash>]`, found through nnUNet_extTrainer. Results land
in nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_all, like any nnU-Net training.

Each method family trains with its own optimiser recipe (nnssl_plugin.recipe: SGD + warm-up + cosine for the MoCo
family, Adam 3e-4 with clip 1 for the dense methods); the recipe flags change it, and a non-default recipe adds
`_r<hash>` to the trainer name so it gets its own folder. The recipe is recorded in fold_all/nnssl_run.json, the
checkpoints and the weights file; `--c` refuses a checkpoint trained with another recipe.
`--eval-target D` evaluates the pretext on crops of the labelled dataset D every `--eval-every` epochs (held out:
never trained on), logged and plotted in progress.png. `--probe-every K` (with `--eval-target D`) adds the dense probe
of the current weights on D's fold 0 every K epochs and at the end, against the probe of a random initialisation
(one process only: refused under DDP).
"""
from __future__ import annotations

import argparse
import os
import sys

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_pretrain"


def refuse_labelled_pretraining_set(dataset: str, plans_name: str) -> None:
    """One line when -d is a labelled dataset that has no pretraining plans: -d names the unlabelled set prepared on
    the labelled one's plans, and `nnssl_prepare -d <labelled> ...` would be the wrong fix."""
    from nnssl_plugin.dataset_roles import is_labelled
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder

    if not is_labelled(dataset):
        return
    try:
        name = find_dataset_name(dataset, in_raw=False, in_preprocessed=True)
    except NnsslError:
        name = None
    if name is not None and (preprocessed_folder() / name / f"{plans_name}.json").is_file():
        return  # prepared on purpose (a labelled set pretrained without its labels)
    raise NnsslError(f"-d {dataset} is a labelled dataset with no plans '{plans_name}'; -d names the unlabelled "
                     f"(images-only) pretraining set, prepared on the labelled one's plans: nnssl_prepare -d "
                     f"<unlabelled> -t {dataset}, then nnssl_pretrain -d <unlabelled>")


def build_parser() -> argparse.ArgumentParser:
    from nnssl_plugin.config import METHODS
    from nnssl_plugin.recipe import OPTIMIZERS, PRESETS, SCHEDULES

    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("-d", required=True, help="the prepared unlabelled dataset (id or name)")
    p.add_argument("-m", required=True, choices=sorted(METHODS), help="pretraining method")
    p.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnsslPretrainPlans", help="plans written by nnssl_prepare (default "
                                                             "nnsslPretrainPlans)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    p.add_argument("-num_gpus", type=int, default=1, help="GPUs for nnU-Net's single-node DDP (default 1)")
    p.add_argument("--bf16", action="store_true", help="autocast in bfloat16 on any device instead of nnU-Net's AMP "
                   "(fp16 with loss scaling on CUDA, none on a CPU); recorded in the run's nnssl_run.json")
    p.add_argument("--save-every", type=int, default=1, metavar="K",
                   help="write checkpoint_latest.pth every K epochs (default 1: a stopped or preempted run loses one "
                        "epoch at most)")
    p.add_argument("--c", dest="continue_training", action="store_true",
                   help="continue from the latest checkpoint (fresh start if none)")
    p.add_argument("--take-over-lock", action="store_true",
                   help="take over the run folder's lock left by a run on another host that is gone (a requeued "
                        "job); a lock of a running process on this host is never taken over")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default nnU-Net's 1000); shows in the name")
    p.add_argument("--iters", type=int, default=None, help="iterations per epoch (default 250); shows in the name")
    p.add_argument("--seed", type=int, default=None, help="seed torch/numpy/python; shows in the name")
    r = p.add_argument_group("optimiser recipe (default: the method family's; any change adds _r<hash> to the name)")
    r.add_argument("--recipe", choices=sorted(PRESETS), default=None,
                   help="start from a preset instead of the method's default (nnunet: nnU-Net's supervised SGD)")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="sgd (Nesterov) or adamw")
    r.add_argument("--lr", type=float, default=None, help="peak learning rate")
    r.add_argument("--momentum", type=float, default=None, help="SGD momentum / AdamW beta1")
    r.add_argument("--weight-decay", type=float, default=None, help="weight decay")
    r.add_argument("--warmup", type=int, default=None, help="linear warm-up, in optimiser steps")
    r.add_argument("--schedule", choices=SCHEDULES, default=None, help="after the warm-up: cosine, poly or constant")
    r.add_argument("--clip", type=float, default=None, help="gradient-norm clip (0: none)")
    r.add_argument("--batch-size", type=int, default=None, help="batch size instead of the plans' (all GPUs together)")
    r.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the method's config (nnssl_plugin/methods/<family>/config.py), e.g. "
                        "restoration_weight=1 or whitening_mode=running; repeatable; adds _r<hash> to the name")
    e = p.add_argument_group("held-out evaluation")
    e.add_argument("--eval-target", default=None, help="labelled dataset (id or name) whose preprocessed cases give "
                                                       "held-out crop pairs; off by default")
    e.add_argument("--eval-every", type=int, default=5, help="evaluate every K epochs and at the end (default 5)")
    e.add_argument("--probe-every", type=int, default=0,
                   help="with --eval-target D: the dense probe (nnssl_probe) of the current weights on D's fold 0 "
                        "every K epochs and at the end, and of a random init at the start (default 0: off)")
    return p


def options_from_args(args: argparse.Namespace) -> dict:
    """--option KEY=VALUE pairs as typed values of the method's config fields (checked against it)."""
    from nnssl_plugin.config import method_config, parse_option, with_options

    config, options = method_config(args.m), {}
    for item in args.option:
        key, sep, text = item.partition("=")
        if not sep:
            raise NnsslError(f"--option {item}: expected KEY=VALUE, e.g. --option restoration_weight=1")
        try:
            options[key] = parse_option(config, key, text)
        except ValueError as e:
            raise NnsslError(f"--option: {e}") from None
    try:
        with_options(config, options)
    except (ValueError, TypeError) as e:
        raise NnsslError(f"--option: {e}") from None
    return options


def recipe_from_args(args: argparse.Namespace, family: str):
    """The run's recipe: the family default or --recipe preset, with the flags given replacing its fields."""
    from dataclasses import replace

    from nnssl_plugin.config import default_recipe
    from nnssl_plugin.recipe import build_recipe

    try:
        recipe = build_recipe(default_recipe(family), args.recipe, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay, warmup_steps=args.warmup, schedule=args.schedule,
                              batch_size=args.batch_size)
        if args.clip is not None:
            recipe = replace(recipe, grad_clip=args.clip if args.clip > 0 else None)
    except ValueError as e:
        raise NnsslError(f"recipe: {e}") from None
    return recipe


def check_probe_args(args: argparse.Namespace) -> None:
    """--probe-every: 0 (off) or more, only with --eval-target (the dataset it probes), one process only."""
    if args.probe_every < 0:
        raise NnsslError(f"--probe-every must be at least 0 (0: off), got {args.probe_every}")
    if args.probe_every and args.eval_target is None:
        raise NnsslError(f"--probe-every {args.probe_every} needs --eval-target D, the labelled dataset it probes; add "
                         f"--eval-target <your planned labelled dataset>, or leave out --probe-every")
    if args.probe_every and args.num_gpus > 1:
        raise NnsslError(f"--probe-every runs in the training process and not under DDP (-num_gpus "
                         f"{args.num_gpus}); train on one GPU, or leave it out and probe the run afterwards with "
                         f"nnssl_probe")


def cpu_threads() -> int:
    """Torch's intra-op threads for -device cpu. A reduction split over threads sums in another order with another
    count, so the weights' bits depend on it: OMP_NUM_THREADS if set (the user's choice, which torch.set_num_threads
    would otherwise override), else the CPUs this process may run on (taskset/cpuset), not all of the machine's."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise NnsslError(f"OMP_NUM_THREADS must be a positive integer, found '{value}'; set e.g. "
                             f"OMP_NUM_THREADS=2 or unset it")
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # macOS/Windows: no affinity query


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from nnssl_plugin.config import default_recipe, method_config
    from nnssl_plugin.ext_trainers import with_ext_trainer_folder
    from nnssl_plugin.recipe import run_tag
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder, writable_folder
    from nnssl_plugin.plans import load_plans, resolve_configuration
    from nnssl_plugin.trainer_names import PRETRAINING_FOLD, run_folder
    from nnssl_plugin.trainer_names import pretrainer as trainer_name

    for value, flag in ((args.epochs, "--epochs"), (args.iters, "--iters"), (args.eval_every, "--eval-every"),
                        (args.save_every, "--save-every")):
        if value is not None and value < 1:
            raise NnsslError(f"{flag} must be at least 1, got {value}")
    check_probe_args(args)
    refuse_labelled_pretraining_set(args.d, args.p)
    name = find_dataset_name(args.d, in_raw=False, in_preprocessed=True,
                             unprepared_hint="nnssl_prepare -d {id} -t <your planned labelled dataset>")
    dataset_id = int(name[7:10])
    plans = load_plans(name, args.p, plan_hint=f"nnssl_prepare -d {dataset_id} -t <your planned labelled dataset>")
    config = resolve_configuration(plans, args.configuration)
    data = preprocessed_folder() / name / config["data_identifier"]
    if not data.is_dir() or not any(data.glob("*.pkl")):
        raise NnsslError(f"{data} holds no preprocessed cases for configuration '{args.configuration}'; run "
                         f"nnssl_prepare -d {dataset_id} -t <target> -c {args.configuration} first")
    if args.num_gpus > 1 and args.device != "cuda":
        raise NnsslError("-num_gpus > 1 is nnU-Net's single-node DDP, which needs -device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise NnsslError("CUDA is not available on this machine; pass -device cpu (or mps)")
    family = method_config(args.m).family
    recipe = recipe_from_args(args, family)
    heldout = None
    if args.eval_target is not None:
        target = find_dataset_name(args.eval_target, in_raw=False, in_preprocessed=True,
                                   unprepared_hint="nnUNetv2_plan_and_preprocess -d {id}")
        heldout = {"target": target, "every": args.eval_every, "probe_every": args.probe_every}
    options = options_from_args(args)
    trainer = trainer_name(args.m, args.epochs, args.iters, args.seed, run_tag(recipe, default_recipe(family), options))
    results = writable_folder("nnUNet_results")  # unset or not writable: one line here, before any training
    os.environ["nnUNet_extTrainer"] = with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer"))
    output = results / name / run_folder(trainer, args.p, args.configuration) / PRETRAINING_FOLD
    from nnssl_plugin import run_lock

    run_lock.acquire(output, take_over=args.take_over_lock, log=lambda line: print(f"{PROG}: {line}"))
    try:
        return _train(args, name, trainer, output, recipe, heldout, options)
    finally:
        run_lock.release(output)


def refuse_silent_restart(output, continue_training: bool) -> None:
    """The same command over a run that already trained is not restarted silently (repeats never overwrite each
    other): without --c, a folder holding a checkpoint is refused, naming --c and how to start over."""
    from pathlib import Path

    if continue_training:
        return
    found = [f for f in ("checkpoint_final.pth", "checkpoint_latest.pth") if (Path(output) / f).is_file()]
    if found:
        state = "a finished" if found[0] == "checkpoint_final.pth" else "an interrupted"
        raise NnsslError(f"{output} already holds {state} run ({found[0]}); continue it with --c, or start over by "
                         f"removing that folder (or change --seed for a repeat in its own folder)")


def _train(args, name, trainer, output, recipe, heldout, options) -> int:
    import time

    import torch

    from nnssl_plugin.run_record import write_run_record

    refuse_silent_restart(output, args.continue_training)
    write_run_record(output, recipe, heldout, options, "bf16" if args.bf16 else "amp", args.save_every,
                     session={"continued": bool(args.continue_training),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    checkpoints = ("checkpoint_latest.pth", "checkpoint_final.pth")
    if args.continue_training and not any((output / f).is_file() for f in checkpoints):
        print(f"{PROG}: --c found no checkpoint in {output}; starting a fresh run")

    from nnunetv2.run.run_training import run_training

    if args.device == "cpu":
        threads = cpu_threads()
        torch.set_num_threads(threads)
        print(f"{PROG}: {threads} torch CPU threads (bit-identical results need the same count; OMP_NUM_THREADS "
              f"sets it)")
    run_training(name, args.configuration, "all", trainer, args.p, num_gpus=args.num_gpus,
                 continue_training=args.continue_training,
                 device=torch.device(args.device))
    print(f"{PROG}: done; results in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
