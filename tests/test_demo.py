"""The README's main job, `nnssl_demo`, end to end through nnU-Net's real commands."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from scipy import stats

from conftest import BIN


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_the_probe_and_dice_tables(tmp_path):
    work = tmp_path / "demo"
    result = subprocess.run([str(BIN / "nnssl_demo"), "--work-dir", str(work), "--num-unlabelled", "4",
                             "--num-labelled", "5", "--epochs", "1", "--iters", "3", "--methods", "hier",
                             "--seeds", "2", "--voxels-per-class", "200", "--labelled-cases", "2", "--ft-epochs", "1",
                             "--ft-iters", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = re.findall(r"^\[stage (\d+)/(\d+)\]", result.stdout, flags=re.M)
    assert stages == [(str(i), "10") for i in range(1, 11)]
    pre = work / "nnUNet_preprocessed"
    assert len(list((pre / "Dataset991_PhantomBTCV" / "nnUNetPlans_3d_fullres").glob("*_seg.b2nd"))) == 5
    assert len(list((pre / "Dataset990_PhantomUnlabelled" / "nnsslPretrainPlans_3d_fullres").glob("*.pkl"))) == 4
    for seed in (0, 1):
        run = (work / "nnUNet_results" / "Dataset990_PhantomUnlabelled" /
               f"nnsslPretrainer_hier_1epochs_3iters_seed{seed}__nnsslPretrainPlans__3d_cpu" / "fold_all")
        assert (run / "ssl_weights.pth").is_file() and (run / "progress.png").is_file()
    assert "pretext top-1" in result.stdout
    table = (work / "demo_table.md").read_text()
    assert table in result.stdout
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| init", "| method", "| ---"))]
    probe_rows, train_rows = rows[:2], rows[2:]
    scores = {}
    # the probe rows: every seed's mean Dice comes from that probe's JSON; the cell is mean ± sample sd (2)
    for (init, levels, seeds, folds, cell, versus, *_), stem in zip(probe_rows, ("hier", "random_decoder")):
        assert (levels, seeds, folds) == ("decoder", "2", "fold 0")
        means = [json.loads((work / "probe" / f"{stem}_seed{s}.json").read_text())["mean_dice"] for s in (0, 1)]
        assert cell == f"{np.mean(means):.3f} ± {np.std(means, ddof=1):.3f} (2)"
        scores[init] = means
    # hier vs random init: the paired difference over the two seeds and its t interval
    d = np.array(scores["hier"]) - np.array(scores["random (decoder)"])
    half = stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / np.sqrt(2)
    assert probe_rows[0][5] == f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"
    assert [r[0] for r in probe_rows] == ["hier", "random (decoder)"]
    record = json.loads((work / "probe" / "hier_seed1.json").read_text())
    assert record["file"].endswith("seed1__nnsslPretrainPlans__3d_cpu/fold_all/ssl_weights.pth")
    assert record["voxels_per_class"] == 200 and record["levels"] == "decoder"
    # one verdict line for hier, either way, and never a claim without an interval above 0
    verdict = next(line for line in table.splitlines() if line.startswith("hier:"))
    assert ("above random init on fold 0" in verdict) != ("not shown above random init" in verdict)
    assert ("above random init on fold 0" in verdict) == (d.mean() - half > 0)
    assert "ONE seed each" in table
    assert [tuple(r[:2]) for r in train_rows] == [("hier", "linear probe"), ("hier", "fine-tune"),
                                                  ("scratch", "scratch")]
    for row in train_rows:  # every Dice comes from nnU-Net's summary.json of that run
        trainer = {"linear probe": "nnUNetTrainerSSLLinear", "fine-tune": "nnUNetTrainerSSLInit",
                   "scratch": "nnUNetTrainerSSLScratch"}[row[1]]
        plans = "nnUNetPlans" if row[0] == "scratch" else f"nnsslPlans_{row[0]}"
        summary = next((work / "nnUNet_results" / "Dataset991_PhantomBTCV").glob(
            f"{trainer}_1epochs_2iters_seed0_noTTA__{plans}__3d_cpu/fold_*/validation/summary.json"))
        assert row[2] == f"{json.loads(summary.read_text())['foreground_mean']['Dice']:.3f}"
    assert "the real study" not in result.stdout and "Your own data: the journey" in result.stdout
    for seed in (0, 1):  # random init probed first: each run's probe reads its reference from the cache
        assert "vs random init on the same levels (decoder) and seed" in (work / "logs" / f"probe_hier_seed{seed}.log"
                                                                        ).read_text().split("(cached: ")[0]
        assert "(cached: random.probe__" in (work / "logs" / f"probe_hier_seed{seed}.log").read_text()


def test_demo_refuses_a_work_dir_that_is_not_its_own(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run([str(BIN / "nnssl_demo"), "--work-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "is not a demo folder" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
