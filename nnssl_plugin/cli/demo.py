"""`nnssl_demo`: the plugin's main job on the built-in CT phantom data, stage by stage.

Stages in this release: generate the phantom datasets, plan and preprocess the labelled one with nnU-Net's own
`nnUNetv2_plan_and_preprocess`, add the small CPU configuration, prepare the unlabelled one on the labelled one's
plans, load one batch of it through nnU-Net's own data loader, and pretrain moco_zca on it for a few epochs on the
CPU. Export, fine-tuning and the Dice table join the same command in later releases.

Everything lands under --work-dir (nnUNet_raw, nnUNet_preprocessed, nnUNet_results), never in a user's own
nnU-Net folders.
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
    p.add_argument("-device", default="cpu", help="pretraining device (default cpu)")
    return p


class Stages:
    """Runs named stages in order and prints `[stage i/n] name (elapsed)` before each."""

    def __init__(self, names: list[str]):
        self.names, self.index, self.start = names, 0, time.time()

    def next(self) -> None:
        self.index += 1
        print(f"[stage {self.index}/{len(self.names)}] {self.names[self.index - 1]} "
              f"(elapsed {time.time() - self.start:.0f} s)", flush=True)


def _executable(name: str) -> str:
    """A console script of the environment this command runs in (a venv need not be on PATH), else of PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise NnsslError(f"{name} not found next to {sys.executable} or on PATH; install nnunetv2 in this environment")
    return found


def _run(command: list[str], log_file: Path) -> None:
    """Run one nnU-Net command; its output goes to `log_file`, and its tail is shown if it fails."""
    env = os.environ.copy()
    if command[0].startswith("nnUNetv2_plan") and env.get("nnUNet_n_proc_DA") == "0":
        del env["nnUNet_n_proc_DA"]  # nnU-Net 2.8.1's planner calls torch.set_num_threads(n_proc_DA): 0 crashes it
    command = [_executable(command[0]), *command[1:]]
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
    from nnssl_plugin.cli import cpu_config, demo_data, prepare

    work = Path(args.work_dir).resolve()
    stages = Stages(["generate CT phantoms (Dataset990 unlabelled, Dataset991 labelled)",
                     "nnUNetv2_plan_and_preprocess -d 991 -c 3d_fullres",
                     "nnssl_add_cpu_config -d 991 (configuration 3d_cpu)",
                     "nnssl_prepare -d 990 -t 991",
                     "load a batch of Dataset990 with nnU-Net's nnUNetDataLoader",
                     f"nnssl_pretrain -d 990 -m moco_zca -c 3d_cpu ({args.epochs} epochs x {args.iters} iterations)"])
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
    stages.next()
    shape = _load_one_batch(work)
    print(f"  nnUNetDataLoader batch from Dataset990: {shape} (batch, channel, z, y, x)")
    stages.next()
    _run(["nnssl_pretrain", "-d", "990", "-m", "moco_zca", "-c", "3d_cpu", "-device", args.device, "--epochs",
          str(args.epochs), "--iters", str(args.iters)], logs / "pretrain_moco_zca.log")
    run = (work / "nnUNet_results" / "Dataset990_PhantomUnlabelled" /
           f"nnsslPretrainer_moco_zca_{args.epochs}epochs_{args.iters}iters__nnsslPretrainPlans__3d_cpu" / "fold_all")
    print(f"  {_last_epoch_line(run)}")
    print(f"  plots: {run / 'progress.png'}, {run / 'spectrum.png'}; weights: {run / 'pretrained_weights.pth'}")

    print(f"\ndone in {time.time() - stages.start:.0f} s. The demo's nnU-Net folders:")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"  export {var}={os.environ[var]}")
    print("With these set, nnU-Net's own commands work on the demo data, e.g.\n"
          "  nnUNetv2_train 991 3d_cpu 0 -tr nnUNetTrainer_1epoch -device cpu")
    return 0


def _last_epoch_line(run: Path) -> str:
    """The last 'pretext top-1 ... effective rank ...' line of the run's nnU-Net training log."""
    logs = sorted(run.glob("training_log_*.txt"))
    lines = [line for line in logs[-1].read_text().splitlines() if "effective rank" in line] if logs else []
    return lines[-1].split(": ", 1)[-1] if lines else "(no epoch logged)"


def _check(code: int) -> None:
    if code:
        raise NnsslError("a demo stage failed (see the error above)")


def _load_one_batch(work: Path) -> tuple[int, ...]:
    """Proof that the prepared data is nnU-Net data: one batch from nnU-Net's own loader on the 3d_cpu patch."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnssl_plugin.io_utils import load_json

    root = work / "nnUNet_preprocessed" / "Dataset990_PhantomUnlabelled"
    plans = PlansManager(str(root / "nnsslPretrainPlans.json"))
    config = plans.get_configuration("3d_cpu")
    folder = str(root / config.data_identifier)
    dataset = infer_dataset_class(folder)(folder)
    label_manager = plans.get_label_manager(load_json(root / "dataset.json"))
    loader = nnUNetDataLoader(dataset, 2, config.patch_size, config.patch_size, label_manager)
    batch = next(loader)
    return tuple(batch["data"].shape)
