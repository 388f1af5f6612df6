"""`nnssl_probe` through its console script on the phantom world: a run folder (moco_zca: encoder levels, whitened)
and random init read like hier (decoder levels, fitted on --train-cases 2); one line per organ plus the mean, and the
JSON where it belongs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

LAB = "Dataset991_PhantomBTCV"
UNL = "Dataset990_PhantomUnlabelled"


def _run_folder(world, monkeypatch, folder):
    """A run folder holding a real pretrained-weights file: the pretrainer's own writer after initialize() (no step
    is needed to test the probe's reading of it)."""
    from nnssl_plugin.pretrain.registry import trainer_class
    from nnssl_plugin.pretrained import write_pretrained_weights

    for name, value in world.env.items():
        if name.startswith("nnUNet_"):
            monkeypatch.setenv(name, value)
    plans = json.loads((world.preprocessed / UNL / "nnsslPretrainPlans.json").read_text())
    dataset_json = json.loads((world.preprocessed / UNL / "dataset.json").read_text())
    trainer = trainer_class("nnsslPretrainer_moco_zca_1epochs_1iters")(
        {**plans, "continue_training": False}, "3d_cpu", "all", dataset_json, torch.device("cpu"))
    trainer.initialize()
    write_pretrained_weights(trainer.pretrained_payload(), folder / "fold_all" / "ssl_weights.pth")
    return folder


def _organ_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.split() and (line.split()[0].isdigit() or
                                                                       line.split()[0] == "mean")]


@pytest.mark.slow
def test_probe_of_a_run_and_of_random_init_through_the_cli(world, monkeypatch, tmp_path):
    run = _run_folder(world, monkeypatch,
                      tmp_path / "nnsslPretrainer_moco_zca_1epochs_1iters__nnsslPretrainPlans__3d_cpu")
    result = world.run("nnssl_probe", str(run), "-d", "991", "-c", "3d_cpu", "-device", "cpu",
                       "--voxels-per-class", "500")
    lines = _organ_lines(result.stdout)
    assert len(lines) == 14 and lines[0].split()[:2] == ["1", "spleen"] and lines[-1].split()[0] == "mean"
    tag = f"probe__{LAB}__nnUNetPlans__3d_cpu__fold0"
    record = json.loads((run / "fold_all" / f"ssl_weights.{tag}__encoder__seed0.json").read_text())
    splits = json.loads((world.preprocessed / LAB / "splits_final.json").read_text()) \
        if (world.preprocessed / LAB / "splits_final.json").is_file() else None
    assert record["method"] == "moco_zca" and record["levels"] == "encoder" and record["whitened"]
    assert record["regression"]["converged"] and len(record["dice"]) == 13
    if splits is not None:
        assert record["val_cases"] == splits[0]["val"]
    assert record["mean_dice"] == pytest.approx(float(lines[-1].split()[1]), abs=1e-4)
    fold_train, fold_val = sorted(record["train_cases"]), record["val_cases"]
    # every result comes with random init's on the same levels and seed, computed once and cached in nnUNet_results
    cache = world.root / "nnUNet_results" / LAB / "nnssl_probe" / f"random.{tag}__encoder__seed0.json"
    reference = json.loads(cache.read_text())
    assert (reference["method"], reference["levels"], reference["seed"]) == ("random", "encoder", 0)
    assert record["random_init_reference"]["mean_dice"] == reference["mean_dice"]
    assert f"vs random init on the same levels (encoder) and seed 0: {reference['mean_dice']:.4f}" in result.stdout

    # an export's weights live in nnUNet_preprocessed: its probe JSON goes to nnUNet_results/<dataset>/nnssl_probe,
    # and the cached reference is reused (same levels, seed, cases and settings)
    plans = world.preprocessed / LAB / "nnsslPlans_probe_random.json"
    try:
        world.run("nnssl_export", "-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", plans.stem)
        again = world.run("nnssl_probe", plans.stem, "-d", "991", "-c", "3d_cpu", "-device", "cpu",
                          "--voxels-per-class", "500", "--levels-like", "moco_zca")
        assert f"(cached: {cache.name})" in again.stdout
        assert not list(world.preprocessed.rglob("*.probe__*.json")), "never a probe file in nnUNet_preprocessed"
        assert (world.root / "nnUNet_results" / LAB / "nnssl_probe" / f"{plans.stem}_weights.{tag}__encoder__seed0.json"
                ).is_file()
    finally:
        plans.unlink(missing_ok=True)
        plans.with_name(f"{plans.stem}_weights.pth").unlink(missing_ok=True)

    results = tmp_path / "results"  # random init has no run: its JSON goes to nnUNet_results/<dataset>/nnssl_probe
    random = subprocess.run([str(Path(sys.executable).parent / "nnssl_probe"), "random", "-d", "991", "-c", "3d_cpu",
                             "-device", "cpu", "--voxels-per-class", "500", "--levels-like", "hier", "--train-cases", "2"],
                            env={**world.env, "nnUNet_results": str(results)}, capture_output=True, text=True)
    assert random.returncode == 0, random.stderr[-2000:]
    assert len(_organ_lines(random.stdout)) == 14
    record = json.loads((results / LAB / "nnssl_probe" / f"random.{tag}__n2__decoder__seed0.json").read_text())
    assert (record["method"], record["levels"], record["own_levels"], record["levels_like"]) == \
        ("random", "decoder", None, "hier")
    # --train-cases 2: the first 2 of the seeded permutation of the fold's sorted training cases; same validation
    assert record["train_cases"] == [fold_train[i] for i in np.random.RandomState(0).permutation(len(fold_train))[:2]]
    assert record["val_cases"] == fold_val


@pytest.mark.slow
def test_probe_on_every_fold_gives_each_folds_one_fold_probe(world, monkeypatch, tmp_path):
    """`-f all`: one record per fold of nnU-Net's 5-fold split, each the one-fold probe of that fold (same sampled
    voxels, Dice within float noise), and their mean."""
    every = tmp_path / "all.json"
    world.run("nnssl_probe", "random", "--levels-like", "encoder", "-d", "991", "-c", "3d_cpu", "-f", "all",
              "-device", "cpu", "--voxels-per-class", "200", "--seed", "2", "-o", str(every))
    record = json.loads(every.read_text())
    assert [f["fold"] for f in record["folds"]] == [0, 1, 2, 3, 4]
    assert sorted(c for f in record["folds"] for c in f["val_cases"]) == sorted(
        {c for f in record["folds"] for c in f["train_cases"] + f["val_cases"]})  # each case held out once
    for fold in (0, 3):
        one = tmp_path / f"fold{fold}.json"
        world.run("nnssl_probe", "random", "--levels-like", "encoder", "-d", "991", "-c", "3d_cpu", "-f", str(fold),
                  "-device", "cpu", "--voxels-per-class", "200", "--seed", "2", "-o", str(one))
        alone, together = json.loads(one.read_text()), record["folds"][fold]
        assert together["sampled_per_class"] == alone["sampled_per_class"]
        assert together["val_cases"] == alone["val_cases"]
        assert together["mean_dice"] == pytest.approx(alone["mean_dice"], abs=2e-3)
    means = [f["mean_dice"] for f in record["folds"]]
    assert record["mean_dice_over_folds"] == pytest.approx(sum(means) / len(means))
    # a run's all-fold probe reports random init's on the same levels, seed and folds: the cache `random -f all`
    # wrote under nnUNet_results/<target>/nnssl_probe/, reused (not recomputed)
    run = _run_folder(world, monkeypatch, tmp_path / "nnsslPretrainer_moco_zca_1epochs_1iters__nnsslPretrainPlans__3d_cpu")
    result = world.run("nnssl_probe", str(run), "-d", "991", "-c", "3d_cpu", "-f", "all", "-device", "cpu",
                       "--voxels-per-class", "200", "--seed", "2", "-o", str(tmp_path / "run_all.json"))
    probed = json.loads((tmp_path / "run_all.json").read_text())
    reference = probed["random_init_reference"]
    assert reference["mean_dice"] == pytest.approx(record["mean_dice_over_folds"])
    assert "cached" in reference["note"] and "vs random init" in result.stdout
    assert Path(reference["file"]).parent == world.root / "nnUNet_results" / LAB / "nnssl_probe"
    # no cache for another seed (a fresh work dir): the run's probe computes random init's reference and writes it
    world.run("nnssl_probe", str(run), "-d", "991", "-c", "3d_cpu", "-f", "all", "-device", "cpu",
              "--voxels-per-class", "200", "--seed", "3", "-o", str(tmp_path / "run_all_3.json"))
    fresh = json.loads((tmp_path / "run_all_3.json").read_text())["random_init_reference"]
    written = json.loads(Path(fresh["file"]).read_text())
    assert "cached" not in fresh["note"] and written["source"] == "random" and written["seed"] == 3
    assert written["mean_dice_over_folds"] == pytest.approx(fresh["mean_dice"]) and len(written["folds"]) == 5
    bad = world.run("nnssl_probe", "random", "--levels-like", "encoder", "-d", "991", "-c", "3d_cpu", "-f", "x",
                    "-device", "cpu", check=False)
    assert bad.returncode != 0 and "-f all" in bad.stderr and "Traceback" not in bad.stderr
