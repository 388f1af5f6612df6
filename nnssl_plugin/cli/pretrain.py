"""`nnssl_pretrain`: self-supervised pretraining of the planned network on a prepared unlabelled dataset.

Runs nnU-Net's own training entry (`nnunetv2.run.run_training`) on fold `all` with the trainer
`nnsslPretrainer_<method>[_<N>epochs][_<M>iters][_seed<K>]`, found through nnUNet_extTrainer. Results land in
nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/fold_all, like any nnU-Net training.
"""
from __future__ import annotations

import argparse
import os

from nnssl_plugin.errors import NnsslError, cli_entry

PROG = "nnssl_pretrain"


def build_parser() -> argparse.ArgumentParser:
    from nnssl_plugin.config import METHODS

    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("-d", required=True, help="the prepared unlabelled dataset (id or name)")
    p.add_argument("-m", required=True, choices=sorted(METHODS), help="pretraining method")
    p.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-p", default="nnsslPretrainPlans", help="plans written by nnssl_prepare (default "
                                                             "nnsslPretrainPlans)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    p.add_argument("-num_gpus", type=int, default=1, help="GPUs for nnU-Net's single-node DDP (default 1)")
    p.add_argument("--c", dest="continue_training", action="store_true",
                   help="continue from the latest checkpoint (fresh start if none)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default nnU-Net's 1000); shows in the name")
    p.add_argument("--iters", type=int, default=None, help="iterations per epoch (default 250); shows in the name")
    p.add_argument("--seed", type=int, default=None, help="seed torch/numpy/python; shows in the name")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from nnssl_plugin.ext_trainers import with_ext_trainer_folder
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder, writable_folder
    from nnssl_plugin.plans import load_plans, resolve_configuration
    from nnssl_plugin.pretrain.registry import trainer_name

    for value, flag in ((args.epochs, "--epochs"), (args.iters, "--iters")):
        if value is not None and value < 1:
            raise NnsslError(f"{flag} must be at least 1, got {value}")
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
    trainer = trainer_name(args.m, args.epochs, args.iters, args.seed)
    results = writable_folder("nnUNet_results")  # unset or not writable: one line here, before any training
    os.environ["nnUNet_extTrainer"] = with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer"))
    output = results / name / f"{trainer}__{args.p}__{args.configuration}" / "fold_all"
    checkpoints = ("checkpoint_latest.pth", "checkpoint_final.pth")
    if args.continue_training and not any((output / f).is_file() for f in checkpoints):
        print(f"{PROG}: --c found no checkpoint in {output}; starting a fresh run")

    from nnunetv2.run.run_training import run_training

    if args.device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    run_training(name, args.configuration, "all", trainer, args.p, num_gpus=args.num_gpus,
                 continue_training=args.continue_training,
                 device=torch.device(args.device))
    print(f"{PROG}: done; results in {output}")
    return 0
