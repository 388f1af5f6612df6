"""The README's main job, `nnssl_demo`, end to end through nnU-Net's real commands."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import BIN


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_the_dice_table(tmp_path):
    work = tmp_path / "demo"
    result = subprocess.run([str(BIN / "nnssl_demo"), "--work-dir", str(work), "--num-unlabelled", "4",
                             "--num-labelled", "5", "--epochs", "1", "--iters", "3", "--methods", "hier",
                             "--labelled-cases", "2", "--ft-epochs", "1", "--ft-iters", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = re.findall(r"^\[stage (\d+)/(\d+)\]", result.stdout, flags=re.M)
    assert stages == [(str(i), "9") for i in range(1, 10)]
    pre = work / "nnUNet_preprocessed"
    assert len(list((pre / "Dataset991_PhantomBTCV" / "nnUNetPlans_3d_fullres").glob("*_seg.b2nd"))) == 5
    assert len(list((pre / "Dataset990_PhantomUnlabelled" / "nnsslPretrainPlans_3d_fullres").glob("*.pkl"))) == 4
    run = (work / "nnUNet_results" / "Dataset990_PhantomUnlabelled" /
           "nnsslPretrainer_hier_1epochs_3iters_seed0__nnsslPretrainPlans__3d_cpu" / "fold_all")
    assert (run / "pretrained_weights.pth").is_file() and (run / "spectrum.png").is_file()
    assert "pretext top-1" in result.stdout
    table = (work / "demo_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| method",
                                                                                                 "| ---"))]
    arms = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows]
    assert arms == [("hier", "linear probe"), ("hier", "frozen encoder"), ("random", "linear probe"),
                    ("random", "frozen encoder"), ("hier", "fine-tune"), ("scratch", "scratch")]
    assert "one seed" in table and table in result.stdout
    for row in rows:  # every Dice comes from nnU-Net's summary.json of that run
        trainer = {"linear probe": "nnUNetTrainerSSLLinear", "frozen encoder": "nnUNetTrainerSSLFrozenEncoder",
                   "fine-tune": "nnUNetTrainerSSLInit", "scratch": "nnUNetTrainerSSLScratch"}[row.split("|")[2].strip()]
        method = row.split("|")[1].strip()
        plans = "nnUNetPlans" if method == "scratch" else f"nnsslPlans_{method}"
        summary = next((work / "nnUNet_results" / "Dataset991_PhantomBTCV").glob(
            f"{trainer}_1epochs_2iters_seed0_noTTA__{plans}__3d_cpu/fold_*/validation/summary.json"))
        mean = json.loads(summary.read_text())["foreground_mean"]["Dice"]
        assert row.split("|")[3].strip() == f"**{mean:.3f}**"


def test_demo_refuses_a_work_dir_that_is_not_its_own(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run([str(BIN / "nnssl_demo"), "--work-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "is not a demo folder" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
