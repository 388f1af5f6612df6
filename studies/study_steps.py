"""What every study script does the same way: point nnU-Net at the work dir, run one console command with its output
in a log (a failure stops the study with the log's path), and skip a step whose output exists (resume)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from nnssl_plugin.ext_trainers import with_ext_trainer_folder
from nnssl_plugin.paths import console_script


def use_work_dir(work: Path) -> None:
    """nnUNet_raw/preprocessed/results under `work`, the test-sized process counts, the plugin's trainers found."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / var).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(work / var)
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    os.environ["nnUNet_extTrainer"] = with_ext_trainer_folder(os.environ.get("nnUNet_extTrainer"))


def run(command: list[str], log: Path, started: float | None = None) -> None:
    """Run a console script of the environment; its output goes to `log`. nnU-Net 2.8.1's planner crashes with
    nnUNet_n_proc_DA=0 (torch.set_num_threads(0)), so the variable is dropped for nnUNetv2_plan_and_preprocess."""
    start = time.time()
    elapsed = f"[{start - started:.0f} s] " if started is not None else ""
    print(f"  {elapsed}$ {' '.join(command)}", flush=True)
    env = os.environ.copy()
    if command[0].startswith("nnUNetv2_plan") and env.get("nnUNet_n_proc_DA") == "0":
        del env["nnUNet_n_proc_DA"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        code = subprocess.call([console_script(command[0]), *command[1:]], stdout=out, stderr=subprocess.STDOUT,
                               env=env)
    if code:
        sys.exit(f"failed ({code}) after {time.time() - start:.0f} s; log: {log}")
    print(f"    done in {time.time() - start:.0f} s", flush=True)


def once(stamp: Path, command: list[str], log: Path, started: float | None = None) -> None:
    """`run` unless `stamp` exists; write `stamp` after success (for steps whose output has no single file)."""
    if stamp.exists():
        return
    run(command, log, started)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(" ".join(command) + "\n")


def open_work_dir(path: str, marker: str, what: str) -> Path:
    """The study's own folder: created and marked with `marker`; an existing non-empty folder without the marker is
    refused (a study never writes into a folder it did not make); nnU-Net's variables then point into it."""
    work = Path(path).resolve()
    if work.exists() and any(work.iterdir()) and not (work / marker).exists():
        sys.exit(f"{work} exists and is not a {what} folder; pass another --work-dir")
    work.mkdir(parents=True, exist_ok=True)
    (work / marker).write_text(f"created by {what}\n")
    use_work_dir(work)
    return work


def phantom_world(stamps: Path, logs: Path, num_unlabelled: int, num_labelled: int, started: float) -> None:
    """Dataset990 (unlabelled) and Dataset991 (labelled) phantoms, 991 planned by nnU-Net with 3d_cpu added, 990
    prepared on 991's plans; each step once."""
    once(stamps / "data", ["nnssl_demo_data", "--num-unlabelled", str(num_unlabelled), "--num-labelled",
                           str(num_labelled), "--overwrite"], logs / "demo_data.log", started)
    once(stamps / "plan", ["nnUNetv2_plan_and_preprocess", "-d", "991", "-c", "3d_fullres", "-np", "2", "-npfp", "2"],
         logs / "plan_and_preprocess.log", started)
    once(stamps / "cpu_config", ["nnssl_add_cpu_config", "-d", "991"], logs / "cpu_config.log", started)
    once(stamps / "prepare", ["nnssl_prepare", "-d", "990", "-t", "991", "-c", "3d_cpu", "-np", "2"],
         logs / "prepare.log", started)
