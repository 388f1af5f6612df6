"""`python -m nnssl_plugin.cli.common_views`: a finished run's held-out pretext on its family's common crops.

Checked against an independent path, the pretraining's own held-out hook: on the run's own views, with the hook's
seed and its number of loss batches, the command must give the very loss and top-1 the hook logged at the last epoch
(the hook evaluates the same weights on the same crops). Two methods of a family see the same crops and negatives
under every view set."""
from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.slow

RUNS = "nnUNet_results/Dataset990_PhantomUnlabelled"


def _run_and_score(world, method: str, tmp_path) -> tuple[dict, dict]:
    world.run("nnssl_pretrain", "-d", "990", "-m", method, "-c", "3d_cpu", "-device", "cpu", "--epochs", "1",
              "--iters", "2", "--seed", "5", "--eval-target", "991", "--eval-every", "1")
    fold = world.root / RUNS / f"nnsslPretrainer_{method}_1epochs_2iters_seed5__nnsslPretrainPlans__3d_cpu" / "fold_all"
    out = tmp_path / f"{method}.json"
    world.run("python", "-m", "nnssl_plugin.cli.common_views", str(fold), "--target", "991", "-c", "3d_cpu",
              "-device", "cpu", "--batches", "8", "-o", str(out))
    log = torch.load(fold / "checkpoint_final.pth", weights_only=True, map_location="cpu")["logging"]
    return json.loads(out.read_text()), log


def test_own_views_reproduce_the_hooks_last_value_and_the_family_shares_its_crops(world, tmp_path):
    hier, hier_log = _run_and_score(world, "hier", tmp_path)
    voxel2vec, _ = _run_and_score(world, "voxel2vec", tmp_path)
    assert set(hier["views"]) == set(voxel2vec["views"]) == {"clean", "hier", "voxel2vec", "hier_paper",
                                                              "voxel2vec_paper"}
    # the hook: 8 loss batches (HeldoutConfig.min_batches), seed 0, the run's own views, the final weights
    assert hier["views"]["hier"]["loss"] == pytest.approx(hier_log["heldout_loss"][-1], abs=1e-5)
    assert hier["views"]["hier"]["top1"] == pytest.approx(hier_log["heldout_top1"][-1], abs=1e-6)
    for view in hier["views"]:  # same crops, voxels and so negatives for both methods
        a, b = hier["views"][view], voxel2vec["views"][view]
        assert a["negatives"] == b["negatives"] and a["crops"] == b["crops"] == 16
        assert a["chance_loss"] == pytest.approx(math.log(a["negatives"] + 1))
        assert math.isfinite(a["loss"]) and math.isfinite(b["loss"])
