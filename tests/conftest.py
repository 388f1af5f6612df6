"""Shared fixtures: a small phantom 'world' (nnU-Net folders with the two demo datasets, the labelled one planned
and preprocessed by nnU-Net's real CLI, the unlabelled one prepared on its plans), built once per session."""
from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("nnUNet_n_proc_DA", "0")  # 2-core machines: no augmentation workers
os.environ.setdefault("nnUNet_def_n_proc", "2")

BIN = Path(sys.executable).parent  # console scripts of the venv running the tests
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass
class World:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **{v: str(self.root / v) for v in NNUNET_VARS}}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a console script of this venv (ours or nnU-Net's) against this world's folders."""
        env = self.env
        if command[0].startswith("nnUNetv2_plan") and env.get("nnUNet_n_proc_DA") == "0":
            del env["nnUNet_n_proc_DA"]  # nnU-Net 2.8.1's planner calls torch.set_num_threads(n_proc_DA)
        result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                                 f"{result.stderr[-3000:]}")
        return result


def make_world(root: Path) -> World:
    for v in NNUNET_VARS:
        (root / v).mkdir(parents=True, exist_ok=True)
    return World(root)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """Dataset990 (6 unlabelled) and Dataset991 (6 labelled) phantoms; 991 planned + preprocessed by nnU-Net
    (3d_fullres) with the 3d_cpu and 2d_cpu configurations added; 990 prepared with nnssl_prepare."""
    w = make_world(tmp_path_factory.mktemp("world"))
    w.run("nnssl_demo_data", "--num-unlabelled", "6", "--num-labelled", "6")
    w.run("nnUNetv2_plan_and_preprocess", "-d", "991", "-c", "3d_fullres", "-np", "2", "-npfp", "2")
    w.run("nnssl_add_cpu_config", "-d", "991")
    w.run("nnssl_add_cpu_config", "-d", "991", "-c", "2d", "--name", "2d_cpu", "--batch-size", "4")
    w.run("nnssl_prepare", "-d", "990", "-t", "991", "-np", "1")
    return w


@pytest.fixture(scope="session")
def exported(world) -> World:
    """moco_zca pretrained briefly on 990 (run `nnsslPretrainer_moco_zca_1epochs_4iters_seed0`) and exported to 991
    as 'nnsslPlans_moco_zca', plus the random-init baseline 'nnsslPlans_random' (tests/downstream)."""
    world.run("nnssl_pretrain", "-d", "990", "-m", "moco_zca", "-c", "3d_cpu", "-device", "cpu", "--epochs", "1",
              "--iters", "4", "--seed", "0")
    world.run("nnssl_export", "-d", "990", "-m", "moco_zca", "-t", "991", "-c", "3d_cpu",
              "--run", "nnsslPretrainer_moco_zca_1epochs_4iters_seed0__nnsslPretrainPlans__3d_cpu")
    world.run("nnssl_export", "-t", "991", "-c", "3d_cpu", "--random-init")
    return world


@pytest.fixture
def in_world(world, monkeypatch) -> World:
    """The session world, with the nnU-Net variables pointing at it for in-process calls."""
    for v in NNUNET_VARS:
        monkeypatch.setenv(v, str(world.root / v))
    return world


@pytest.fixture
def fresh_world(tmp_path, monkeypatch) -> World:
    """Empty nnU-Net folders for this test only, set in the environment."""
    w = make_world(tmp_path)
    for v in NNUNET_VARS:
        monkeypatch.setenv(v, str(w.root / v))
    return w


def copy_dataset(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


@pytest.fixture(scope="session")
def world_2d(world) -> World:
    """The world with Dataset990 also prepared for the 2d configuration, under plans 'nnsslPretrain2d'."""
    world.run("nnssl_prepare", "-d", "990", "-t", "991", "-c", "2d", "--plans-name", "nnsslPretrain2d", "-np", "1")
    return world


@pytest.fixture(scope="session")
def world_resenc(world) -> World:
    """The world with ResEnc-M plans for 991 (nnU-Net's planner, plus 3d_cpu) and 990 prepared on them."""
    world.run("nnUNetv2_plan_experiment", "-d", "991", "-pl", "nnUNetPlannerResEncM")
    world.run("nnssl_add_cpu_config", "-d", "991", "-p", "nnUNetResEncUNetMPlans")
    world.run("nnssl_prepare", "-d", "990", "-t", "991", "-p", "nnUNetResEncUNetMPlans", "--plans-name",
              "nnsslPretrainResEnc", "-np", "1")
    return world


class FullDiskFile(io.RawIOBase):
    """A file object on a disk that fills after `limit` bytes: its write raises ENOSPC as the OS does (the disk-full
    tests wrap the file torch.save and blosc2 write to in it)."""

    def __init__(self, f, limit: int = 4096):
        self.f, self.n, self.limit = f, 0, limit

    def writable(self):
        return True

    def write(self, b):
        self.n += len(b)
        if self.n > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(b)
