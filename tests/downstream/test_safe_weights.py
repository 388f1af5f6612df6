"""Safe weights: every load of a weights or checkpoint file by our code is `weights_only=True` (a grep-able rule,
checked here over the whole repository) and each loading path refuses a crafted pickle without executing it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export import sha256_of
from nnssl_plugin.export_sources import read_source
from nnssl_plugin.nnunet_trainers.registry import trainer_class as downstream_trainer
from nnssl_plugin.pretrain.registry import trainer_class as pretrain_trainer

ROOT = Path(__file__).resolve().parents[2]
LAB, UNL = "Dataset991_PhantomBTCV", "Dataset990_PhantomUnlabelled"


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _evil(tmp_path, name="evil.pth"):
    marker, path = tmp_path / f"pwned_{name}", tmp_path / name
    torch.save({"network_weights": {"x": torch.zeros(1)}, "trainer_name": "nnsslPretrainer_moco",
                "payload": _Exploit(str(marker))}, path)
    return path, marker


def test_every_torch_load_in_the_repository_is_weights_only():
    unsafe = "weights_only=" + "False"
    offenders = []
    for path in [*ROOT.glob("nnssl_plugin/**/*.py"), *ROOT.glob("pretrain/**/*.py"),
                 *ROOT.glob("nnunet_trainers/**/*.py"), *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        text = path.read_text()
        if unsafe in text:
            offenders.append(f"{path}: {unsafe}")
        for call in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in call.group(0):
                offenders.append(f"{path}: {call.group(0)[:60]}")
    assert offenders == []


def test_export_reader_refuses(tmp_path):
    path, marker = _evil(tmp_path)
    with pytest.raises(NnsslError, match="cannot load .* safely"):
        read_source(path)
    assert not marker.exists()


def test_ssl_init_refuses_an_export_replaced_by_a_crafted_pickle_with_a_matching_sha256(in_world, tmp_path):
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", "nnsslPlans_evil",
                            "--overwrite"]) == 0
    plans = json.loads((in_world.preprocessed / LAB / "nnsslPlans_evil.json").read_text())
    path, marker = _evil(tmp_path)
    plans["pretrain_info"].update(weights=str(path), sha256=sha256_of(path))  # passes the checksum on purpose
    dataset_json = json.loads((in_world.preprocessed / LAB / "dataset.json").read_text())
    trainer = downstream_trainer("nnUNetTrainerSSLInit_1epochs_2iters")(
        dict(plans, continue_training=False), "3d_cpu", 0, dataset_json, torch.device("cpu"))
    with pytest.raises(NnsslError, match="cannot load .* safely"):
        trainer.initialize()
    assert not marker.exists()


def test_downstream_resume_refuses_a_crafted_checkpoint(in_world, tmp_path):
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", "nnsslPlans_evil2",
                            "--overwrite"]) == 0
    plans = json.loads((in_world.preprocessed / LAB / "nnsslPlans_evil2.json").read_text())
    dataset_json = json.loads((in_world.preprocessed / LAB / "dataset.json").read_text())
    trainer = downstream_trainer("nnUNetTrainerSSLScratch_1epochs_2iters")(
        dict(plans, continue_training=False), "3d_cpu", 0, dataset_json, torch.device("cpu"))
    path, marker = _evil(tmp_path)
    with pytest.raises(NnsslError, match="cannot load .* safely"):
        trainer.load_checkpoint(str(path))
    assert not marker.exists()


def test_pretraining_resume_refuses_a_crafted_checkpoint(in_world, tmp_path):
    root = in_world.preprocessed / UNL
    plans = dict(json.loads((root / "nnsslPretrainPlans.json").read_text()), continue_training=False)
    trainer = pretrain_trainer("nnsslPretrainer_moco_1epochs_2iters")(
        plans, "3d_cpu", "all", json.loads((root / "dataset.json").read_text()), torch.device("cpu"))
    path, marker = _evil(tmp_path)
    with pytest.raises(NnsslError, match="cannot load .* safely"):
        trainer.load_checkpoint(str(path))
    assert not marker.exists()


def test_spectrum_refuses_a_crafted_checkpoint(in_world, tmp_path, capsys):
    from nnssl_plugin.cli import spectrum as spectrum_cli

    path, marker = _evil(tmp_path)
    code = spectrum_cli.main(["-d", "991", "-c", "3d_cpu", "--patches", "2", "--checkpoints", str(path), "-o",
                              str(tmp_path / "out")])
    assert code == 1 and "cannot load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()
