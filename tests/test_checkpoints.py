"""Atomic writes, safe loading and RNG state round trips."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nnssl_plugin.checkpoints import atomic_torch_save, safe_load
from nnssl_plugin.rng import capture as rng_state, restore as set_rng_state
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import atomic_write


class _Exploit:
    """Unpickling this would create a file: a stand-in for arbitrary code in a weights file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_safe_load_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(NnsslError, match="cannot load .*evil.pth safely"):
        safe_load(path)
    assert not marker.exists()


def test_truncated_file_is_named(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    atomic_torch_save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(NnsslError, match="checkpoint_latest.pth safely .* truncated, corrupt"):
        safe_load(path)


def test_numpy_scalars_of_nnunet_logger_states_load(tmp_path):
    path = tmp_path / "nnunet.pth"
    torch.save({"logging": {"train_losses": [np.float64(0.5)], "mean_fg_dice": [np.float32(0.1)]}}, path)
    assert safe_load(path)["logging"]["train_losses"] == [0.5]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    atomic_torch_save({"rng": rng_state()}, tmp_path / "r.pth")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(safe_load(tmp_path / "r.pth")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_replaced_latest_checkpoint_is_kept_as_the_previous(tmp_path):
    from nnssl_plugin.checkpoints import save_checkpoint_file

    latest = tmp_path / "checkpoint_latest.pth"
    save_checkpoint_file({"epoch": 1}, latest)
    assert not (tmp_path / "checkpoint_previous.pth").exists()
    save_checkpoint_file({"epoch": 2}, latest)
    assert safe_load(latest) == {"epoch": 2}
    assert safe_load(tmp_path / "checkpoint_previous.pth") == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth", "checkpoint_previous.pth"]


def test_truncated_latest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path):
    from nnssl_plugin.checkpoints import load_checkpoint_file, save_checkpoint_file

    latest = tmp_path / "checkpoint_latest.pth"
    save_checkpoint_file({"epoch": 1}, latest)
    save_checkpoint_file({"epoch": 2}, latest)
    latest.write_bytes(latest.read_bytes()[:100])  # a copy or a full disk cut it short
    messages = []
    assert load_checkpoint_file(latest, log=messages.append) == {"epoch": 1}
    assert len(messages) == 1 and "cannot load" in messages[0] and "checkpoint_previous.pth instead" in messages[0]
    (tmp_path / "checkpoint_previous.pth").unlink()
    with pytest.raises(NnsslError, match="cannot load .*checkpoint_latest.pth safely"):
        load_checkpoint_file(latest, log=messages.append)
