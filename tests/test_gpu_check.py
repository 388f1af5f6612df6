"""benchmarks/gpu_check.py at a tiny size on the CPU: the GPU check's own code paths (the real pretraining command
under bf16 autocast with torch.compile on, one method of each family, then the online probe), so that the run on a
GPU machine is not their first run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_compiled_bf16_on_cpu_and_reports_each_method(world, tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**world.env, "nnUNet_results": str(tmp_path / "results")}
    result = subprocess.run([sys.executable, str(SCRIPT), "-c", "3d_cpu", "-device", "cpu", "--steps", "2",
                             "--bf16", "--methods", "moco_zca", "hier", "--compile", "moco_zca", "hier",
                             "--out", str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    assert [r["method"] for r in records] == ["moco_zca", "hier"]
    for r in records:
        assert r["compiled"] and r["precision"] == "bf16" and len(r["epoch_seconds"]) == 2
        assert r["peak_gib"] > 0 and r["train_loss"] == r["train_loss"]  # logged and finite (nan != nan)
        assert 0 <= r["probe_dice"] <= 1 and 0 <= r["random_dice"] <= 1
        run = next((tmp_path / "results" / "Dataset990_PhantomUnlabelled").glob(
            f"nnsslPretrainer_{r['method']}_2epochs_2iters_seed0__*__3d_cpu/fold_all"))
        assert json.loads((run / "nnssl_run.json").read_text())["precision"] == "bf16"
        log = next(run.glob("training_log_*.txt")).read_text()
        assert "Using torch.compile" in log
    assert [r["levels"] for r in records] == ["encoder", "decoder"]
    table = [line for line in result.stdout.splitlines() if line.startswith(("| moco_zca", "| hier"))]
    assert len(table) == 2 and all("| yes |" in line for line in table)
