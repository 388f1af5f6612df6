"""Kill -9 a pretraining run and a fine-tuning run after a checkpoint, resume with --c: nothing is lost but the
iterations since that checkpoint, and pretraining (deterministic CPU path, nnUNet_n_proc_DA=0) ends with exactly the
weights of an uninterrupted run with the same seed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nnssl_plugin.checkpoints import safe_load
from nnssl_plugin.ext_trainers import with_ext_trainer_folder

BIN = Path(sys.executable).parent  # console scripts of the venv running the tests

UNL, LAB = "Dataset990_PhantomUnlabelled", "Dataset991_PhantomBTCV"
PRETRAIN = ["nnssl_pretrain", "-d", "990", "-m", "moco", "-c", "3d_cpu", "-device", "cpu", "--epochs", "4",
            "--iters", "3", "--seed", "7"]


def _env(world, results):
    return {**world.env, "nnUNet_results": str(results), "nnUNet_extTrainer": with_ext_trainer_folder(None)}


def _run_until_killed(command, env, log_folder, marker, timeout=300):
    """Start `command`, SIGKILL it as soon as its nnU-Net training log contains `marker` (polled: the kill falls
    at whatever point the run has reached then)."""
    proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            logs = list(log_folder.glob("training_log_*.txt")) if log_folder.is_dir() else []
            if logs and marker in logs[0].read_text():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                pytest.fail(f"{command[0]} ended (code {proc.returncode}) before '{marker}' was logged")
            time.sleep(0.05)  # polling interval, not a wait for a result
        pytest.fail(f"'{marker}' not logged within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _run(command, env):
    result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.mark.slow
def test_pretraining_killed_mid_epoch_resumes_to_the_uninterrupted_weights(world, tmp_path):
    _run(PRETRAIN, _env(world, tmp_path / "whole"))
    env = _env(world, tmp_path / "killed")
    fold = tmp_path / "killed" / UNL / "nnsslPretrainer_moco_4epochs_3iters_seed7__nnsslPretrainPlans__3d_cpu" / \
        "fold_all"
    _run_until_killed(PRETRAIN, env, fold, "Epoch 2 \n")  # checkpoints after epochs 0 and 1 exist
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    assert torch.load(fold / "checkpoint_latest.pth", weights_only=True)["current_epoch"] == 2
    result = _run([*PRETRAIN, "--c"], env)
    assert "resumed from" in result.stdout + next(fold.glob("training_log_*.txt")).read_text()
    whole = torch.load(tmp_path / "whole" / fold.relative_to(tmp_path / "killed") / "pretrained_weights.pth",
                       weights_only=True)["network_weights"]
    resumed = torch.load(fold / "pretrained_weights.pth", weights_only=True)["network_weights"]
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not list(fold.glob(".*.tmp")), "no temp file of a killed write is left behind"


@pytest.mark.slow
def test_fine_tuning_killed_mid_epoch_resumes_from_its_last_checkpoint(world, tmp_path):
    trainer = "nnUNetTrainerSSLScratch_4epochs_3iters_seed2"
    command = ["nnUNetv2_train", "991", "3d_cpu", "0", "-tr", trainer, "-device", "cpu"]
    env = _env(world, tmp_path)
    fold = tmp_path / LAB / f"{trainer}__nnUNetPlans__3d_cpu" / "fold_0"
    _run_until_killed(command, env, fold, "Epoch 2 \n")
    assert safe_load(fold / "checkpoint_latest.pth")["current_epoch"] == 2  # nnU-Net's file: numpy scalars inside
    _run([*command, "--c"], env)
    logs = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    assert logs.count("Epoch 2 \n") == 2 and logs.count("Epoch 1 \n") == 1, "resumed at epoch 2, nothing else redone"
