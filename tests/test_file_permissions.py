"""Atomic writes keep the permissions a user expects: new files per the umask, replaced files keep their mode."""
from __future__ import annotations

import json
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from nnssl_plugin.checkpoints import atomic_torch_save, publish_written_file, save_checkpoint_file
from nnssl_plugin.cli import cpu_config as cpu_cli
from nnssl_plugin.io_utils import atomic_write, atomic_write_json, current_umask


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)],
                         ids=["umask022", "umask027", "umask002"])
def test_new_json_file_gets_the_umask_mode(tmp_path, mask, expected):
    with umask(mask):
        atomic_write_json(tmp_path / "dataset.json", {"labels": {"background": 0}})
    assert mode(tmp_path / "dataset.json") == expected


def test_current_umask_is_the_process_umask():
    with umask(0o027):
        assert current_umask() == 0o027


@pytest.mark.parametrize("old_mode", [0o664, 0o640, 0o444], ids=["0664", "0640", "0444"])
def test_replaced_file_keeps_its_mode(tmp_path, old_mode):
    path = tmp_path / "splits_final.json"
    path.write_text("[]")
    path.chmod(old_mode)
    with umask(0o077):  # a strict umask must not tighten a file that already exists
        atomic_write_json(path, [{"train": ["a"], "val": ["b"]}])
    assert mode(path) == old_mode and json.loads(path.read_text())[0]["val"] == ["b"]


def test_new_checkpoint_and_export_weights_get_the_umask_mode(tmp_path):
    with umask(0o022):
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "weights.pth")
        save_checkpoint_file({"w": torch.zeros(2)}, tmp_path / "checkpoint_latest.pth")
    assert mode(tmp_path / "weights.pth") == 0o644
    assert mode(tmp_path / "checkpoint_latest.pth") == 0o644


def test_published_checkpoint_keeps_the_replaced_mode(tmp_path):
    """nnU-Net's own save_checkpoint writes a temp file that the trainers publish over the previous checkpoint."""
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"epoch": 1}, path)
    path.chmod(0o664)
    tmp = tmp_path / "checkpoint_latest.pth.writing"
    with umask(0o077):
        torch.save({"epoch": 2}, tmp)
        publish_written_file(tmp, path)
    assert mode(path) == 0o664 and mode(tmp_path / "checkpoint_previous.pth") == 0o664


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group to one the user is not in needs root")
def test_replaced_file_keeps_its_group(tmp_path):
    path = tmp_path / "nnUNetPlans.json"
    path.write_text("{}")
    os.chown(path, -1, 4242)
    atomic_write(path, lambda f: f.write(b"{}"))
    assert path.stat().st_gid == 4242


def test_add_cpu_config_keeps_the_users_plans_mode(fresh_world):
    """nnssl_add_cpu_config rewrites the user's own nnUNetPlans.json: its group-writable mode must survive."""
    folder = fresh_world.preprocessed / "Dataset991_PhantomBTCV"
    folder.mkdir()
    plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [32, 64, 64],
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32],
                                         "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}}}}}
    path = folder / "nnUNetPlans.json"
    path.write_text(json.dumps(plans))
    path.chmod(0o664)
    with umask(0o077):
        assert cpu_cli.main(["-d", "991"]) == 0
    assert mode(path) == 0o664 and "3d_cpu" in json.loads(path.read_text())["configurations"]
