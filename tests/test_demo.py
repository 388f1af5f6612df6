"""The README's main job, `nnssl_demo`, end to end through nnU-Net's real commands."""
from __future__ import annotations

import re
import subprocess

import pytest

from conftest import BIN


@pytest.mark.slow
def test_demo_runs_every_stage_and_leaves_nnunet_data(tmp_path):
    work = tmp_path / "demo"
    result = subprocess.run([str(BIN / "nnssl_demo"), "--work-dir", str(work), "--num-unlabelled", "4",
                             "--num-labelled", "5", "--epochs", "1", "--iters", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = re.findall(r"^\[stage (\d)/(\d)\]", result.stdout, flags=re.M)
    assert stages == [(str(i), "6") for i in range(1, 7)]
    assert "nnUNetDataLoader batch from Dataset990: (2, 1, 16, 48, 48)" in result.stdout
    pre = work / "nnUNet_preprocessed"
    assert len(list((pre / "Dataset991_PhantomBTCV" / "nnUNetPlans_3d_fullres").glob("*_seg.b2nd"))) == 5
    assert len(list((pre / "Dataset990_PhantomUnlabelled" / "nnsslPretrainPlans_3d_fullres").glob("*.pkl"))) == 4
    run = (work / "nnUNet_results" / "Dataset990_PhantomUnlabelled" /
           "nnsslPretrainer_moco_zca_1epochs_3iters__nnsslPretrainPlans__3d_cpu" / "fold_all")
    assert (run / "pretrained_weights.pth").is_file() and (run / "spectrum.png").is_file()
    assert "pretext top-1" in result.stdout


def test_demo_refuses_a_work_dir_that_is_not_its_own(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run([str(BIN / "nnssl_demo"), "--work-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "is not a demo folder" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
