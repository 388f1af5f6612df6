"""benchmarks/gpu_check.py at a tiny size on the CPU: the GPU check's own code paths (the real pretraining command
with torch.compile on, one method of each family, then the online probe), so that the run on a GPU machine is not
their first run. bf16 is checked on a one-step run without the held-out evaluation: this CPU has no native bf16, and
torch emulates it about 60x slower than fp32 (a 32-channel 3x3x3 conv on 2x16x24x24 voxels: 1.2 s vs 0.02 s), so
the check's held-out set and probe under bf16 took 37 minutes of CI (2,247 s) where fp32 takes about two."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_compiled_on_cpu_and_reports_each_method(world, tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**world.env, "nnUNet_results": str(tmp_path / "results")}
    result = subprocess.run([sys.executable, str(SCRIPT), "-c", "3d_cpu", "-device", "cpu", "--steps", "2",
                             "--methods", "moco_zca", "hier", "--compile", "moco_zca", "hier",
                             "--out", str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    assert [r["method"] for r in records] == ["moco_zca", "hier"]
    for r in records:
        assert r["compiled"] and r["precision"] == "amp" and len(r["epoch_seconds"]) == 2
        assert r["peak_gib"] > 0 and r["train_loss"] == r["train_loss"]  # logged and finite (nan != nan)
        assert 0 <= r["probe_dice"] <= 1 and 0 <= r["random_dice"] <= 1
        run = next((tmp_path / "results" / "Dataset990_PhantomUnlabelled").glob(
            f"nnsslPretrainer_{r['method']}_2epochs_2iters_seed0__*__3d_cpu/fold_all"))
        assert json.loads((run / "nnssl_run.json").read_text())["precision"] == "amp"
        log = next(run.glob("training_log_*.txt")).read_text()
        assert "Using torch.compile" in log
    assert [r["levels"] for r in records] == ["encoder", "decoder"]
    table = [line for line in result.stdout.splitlines() if line.startswith(("| moco_zca", "| hier"))]
    assert len(table) == 2 and all("| yes |" in line for line in table)


@pytest.mark.slow
def test_bf16_pretraining_step_is_recorded_and_finite(world, tmp_path):
    """`--bf16` (the GPU check's precision) on one step of each family, recorded in nnssl_run.json, the training
    loss logged and finite. Not compiled (the test above compiles): both methods took 284 s compiled, 175 s not,
    most of it the 16 validation forwards of the epoch under emulated bf16."""
    for method in ("moco_zca", "hier"):
        env = {**world.env, "nnUNet_results": str(tmp_path / "results")}
        result = subprocess.run([sys.executable, "-m", "nnssl_plugin.cli.pretrain", "-d", "990", "-m", method, "-c",
                                 "3d_cpu", "-device", "cpu", "--epochs", "1", "--iters", "1", "--bf16"], env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run = next((tmp_path / "results" / "Dataset990_PhantomUnlabelled").glob(
            f"nnsslPretrainer_{method}_1epochs_1iters__*__3d_cpu/fold_all"))
        assert json.loads((run / "nnssl_run.json").read_text())["precision"] == "bf16"
        log = next(run.glob("training_log_*.txt")).read_text()
        loss = float(re.findall(r"train_loss ([-\d.e]+)", log)[-1])
        assert loss == loss and abs(loss) < float("inf")
