"""Pretraining step and loader cost as ratios against nnU-Net's own supervised step and loader, same plans.

Usage (after `make demo`, which leaves the phantom datasets in ./nnssl_demo_work):
    .venv/bin/python benchmarks/bench_pretrain_step.py [--work-dir nnssl_demo_work] [-c 3d_cpu] [-m moco_zca]

Measures, on the same network, patch and batch size:
  - one training step of nnU-Net's nnUNetTrainer (labelled Dataset991) vs one pretraining step (Dataset990);
  - the SSL-specific share of the pretraining step: the step minus the same network passes with a plain loss
    (MoCo family: encoder passes; what remains is whitening, projector, queue/EMA, losses, region pooling. Dense
    family: both views through the U-Net; what remains is level reads, projections, head, NT-Xent, restoration);
  - batches per second of nnU-Net's nnUNetDataLoader with its training transforms vs the two-view sampler, in one
    process (per-worker throughput), the two timed in turn `--loader-runs` times (median ratio and its range).
Prints a markdown table. Timings are medians over repeats after warm-up; run on an idle machine.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _trainer(cls, root: Path, plans_name: str, configuration: str, fold, patch: list[int] | None = None):
    plans = json.loads((root / f"{plans_name}.json").read_text())
    plans["continue_training"] = False
    if patch is not None:  # same network, another patch size (benchmarks/bench_memory_patch.py)
        plans["configurations"][configuration]["patch_size"] = list(patch)
    dataset_json = json.loads((root / "dataset.json").read_text())
    return cls(plans, configuration, fold, dataset_json, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def main() -> int:
    quiet = io.StringIO()  # nnU-Net's trainers print their plans; keep the table readable
    with contextlib.redirect_stdout(quiet):
        table = run()
    print(table)
    return 0


def run() -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="nnssl_demo_work")
    p.add_argument("-c", default="3d_cpu")
    p.add_argument("-m", default="moco_zca")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--loader-runs", type=int, default=5, help="interleaved runs of the two loaders (median ratio)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the method's config, as nnssl_pretrain --option (a variant's step and loader)")
    args = p.parse_args()
    work = Path(args.work_dir).resolve()
    if not (work / "nnUNet_preprocessed" / "Dataset990_PhantomUnlabelled").is_dir():
        raise SystemExit(f"{work} holds no prepared demo data; run `make demo` first")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(work / var)
    os.environ["nnUNet_n_proc_DA"] = "0"

    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnssl_plugin.methods.moco.network import first_stage
    from nnssl_plugin.modules.pyramid import unet_pyramid
    from nnssl_plugin.pretrain.registry import trainer_class

    torch.manual_seed(0)
    pre = work / "nnUNet_preprocessed"
    supervised = _trainer(nnUNetTrainer, pre / "Dataset991_PhantomBTCV", "nnUNetPlans", args.c, 0)
    supervised.on_train_start()
    sup_batch = next(supervised.dataloader_train)
    ssl = _trainer(trainer_class(f"nnsslPretrainer_{args.m}"), pre / "Dataset990_PhantomUnlabelled",
                   "nnsslPretrainPlans", args.c, "all")
    if args.option:  # the variant, as nnssl_pretrain's run record would give it to the trainer
        from nnssl_plugin.config import parse_option, with_options
        from nnssl_plugin.families import family_of
        pairs = [item.split("=", 1) for item in args.option]
        ssl.method_options = {k: parse_option(ssl.method_config, k, v) for k, v in pairs}
        ssl.method_config = with_options(ssl.method_config, ssl.method_options)
        ssl.family = family_of(ssl.method_config)
    ssl.on_train_start()
    ssl_batch = next(ssl.dataloader_train)
    net = ssl.ssl_network
    device = ssl.device

    t_sup = _median_time(lambda: supervised.train_step(sup_batch), args.repeats)
    t_ssl = _median_time(lambda: ssl.train_step(ssl_batch), args.repeats)

    def encoder_passes_only():
        v1, v2 = ssl_batch["view1"].to(device), ssl_batch["view2"].to(device)
        ssl.optimizer.zero_grad(set_to_none=True)
        loss = net.encoder(v1)[-1].float().mean()
        if net.config.local_weight > 0:
            loss = loss + first_stage(net.encoder, v2).float().mean()
        with torch.no_grad():
            net.key_encoder(v2)
        loss.backward()
        ssl.optimizer.step()

    def unet_passes_only():  # both views through encoder + decoder in one batch, as the dense methods run them
        x = torch.cat([ssl_batch["view1"], ssl_batch["view2"]]).to(device)
        ssl.optimizer.zero_grad(set_to_none=True)
        loss = sum(level.float().mean() for level in unet_pyramid(net.encoder, net.decoder, x))
        loss.backward()
        ssl.optimizer.step()

    dense = "decoder" in type(net).pretrained_prefixes  # the whole U-Net is pretrained: both views through it
    t_net = _median_time(unet_passes_only if dense else encoder_passes_only, args.repeats)
    t_nt_xent = t_head = None
    if dense:  # the voxel NT-Xent alone, and the projection head alone, on this batch's number of voxels (fwd+bwd)
        from nnssl_plugin.losses.voxel import voxel_nt_xent_with_top1
        v = ssl_batch["voxels1"].shape[0]
        e = torch.nn.functional.normalize(torch.randn(2 * v, net.config.out_dim, device=device), dim=1)
        e.requires_grad_(True)

        def nt_xent_only():
            e1, e2 = e.chunk(2)
            voxel_nt_xent_with_top1(e1, e2, net.config.temperature)[0].backward()

        z = torch.randn(2 * v, net.head.net[0].in_features, device=device)
        t_nt_xent = _median_time(nt_xent_only, args.repeats)
        t_head = _median_time(lambda: net.head(z).sum().backward(), args.repeats)

    dataset_tr, _ = supervised.get_tr_and_val_datasets()
    cm = supervised.configuration_manager
    rot, dummy_2d, initial_patch, mirror_axes = supervised.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    transforms = supervised.get_training_transforms(
        cm.patch_size, rot, None, mirror_axes, dummy_2d, use_mask_for_norm=cm.use_mask_for_norm,
        foreground_labels=supervised.label_manager.foreground_labels)
    theirs = nnUNetDataLoader(dataset_tr, supervised.batch_size, initial_patch, cm.patch_size,
                              supervised.label_manager, oversample_foreground_percent=0.33, transforms=transforms)
    ssl_tr, _ = ssl.get_tr_and_val_datasets()
    ours = ssl.two_view_loader(ssl_tr)
    ratios, t_theirs_runs, t_ours_runs = [], [], []
    for _ in range(args.loader_runs):  # interleaved: a load change on the machine hits both loaders alike
        t_theirs_runs.append(_median_time(lambda: next(theirs), args.repeats))
        t_ours_runs.append(_median_time(lambda: next(ours), args.repeats))
        ratios.append(t_theirs_runs[-1] / t_ours_runs[-1])
    t_theirs, t_ours = statistics.median(t_theirs_runs), statistics.median(t_ours_runs)
    supervised.on_train_end()
    ssl.on_train_end()

    lines = []
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    variant = f" ({', '.join(args.option)})" if args.option else ""
    lines.append(f"configuration {args.c}, patch {cm.patch_size}, batch {ssl.batch_size}, method {args.m}{variant}, "
                 f"{device_name}")
    lines.append("| measure | value |")
    lines.append("| --- | --- |")
    lines.append(f"| supervised nnU-Net step | {1000 * t_sup:.1f} ms |")
    lines.append(f"| {args.m} pretraining step | {1000 * t_ssl:.1f} ms |")
    target = "2.2" if dense else "1.0"
    passes = ("U-Net passes alone (encoder + decoder, both views, fwd+bwd)" if dense else
              "encoder passes alone (query fwd+bwd, key fwd, first stage of view 2)")
    lines.append(f"| ratio pretraining / supervised step (target <= {target}) | {t_ssl / t_sup:.2f} |")
    lines.append(f"| {passes} | {1000 * t_net:.1f} ms |")
    lines.append(f"| SSL-specific work = step - encoder passes (target <= 5 % of the step) | {1000 * (t_ssl - t_net):.1f} ms "
          f"({100 * (t_ssl - t_net) / t_ssl:.1f} %) |")
    if t_nt_xent is not None:
        lines.append(f"| of which: voxel NT-Xent alone ({2 * v} voxels, fwd+bwd) | {1000 * t_nt_xent:.1f} ms |")
        lines.append(f"| of which: projection head alone ({net.head.net[0].in_features} → "
                     f"{net.head.net[0].out_features} wide, fwd+bwd) | {1000 * t_head:.1f} ms |")
    lines.append(f"| nnUNetDataLoader + nnU-Net training transforms | {1 / t_theirs:.1f} batches/s |")
    lines.append(f"| two-view sampler + view transforms | {1 / t_ours:.1f} batches/s |")
    lines.append(f"| ratio two-view / nnU-Net loader throughput (target >= 1.0), median of {args.loader_runs} "
                 f"interleaved runs (min–max) | {statistics.median(ratios):.2f} "
                 f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
