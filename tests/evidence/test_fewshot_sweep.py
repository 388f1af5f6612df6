"""Few-label folds in splits_final.json and the label-efficiency sweep through nnUNetv2_train."""
from __future__ import annotations

import csv
import json
import shlex

import numpy as np
import pytest
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnssl_plugin.cli import export as export_cli
from nnssl_plugin.cli import sweep as sweep_cli
from nnssl_plugin.errors import NnsslError
from nnssl_plugin.fewshot import add_fewshot_folds, labelled_identifiers

LAB = "Dataset991_PhantomBTCV"
CASES = [f"case_{i:03d}" for i in range(12)]


def test_folds_are_added_after_nnunets_default_split_with_one_fixed_validation_set(tmp_path):
    records = add_fewshot_folds(tmp_path, CASES, [1, 4], repeats=2, seed=0)
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    assert splits[:5] == generate_crossval_split(sorted(CASES), seed=12345, n_splits=5)  # what nnU-Net would write
    assert [r["fold"] for r in records] == [5, 6, 7, 8] and len(splits) == 9
    for r in records:
        assert splits[r["fold"]] == {"train": r["train"], "val": splits[0]["val"]}
        assert len(r["train"]) == r["n"] and not set(r["train"]) & set(splits[0]["val"])
    assert records[0]["train"] != records[1]["train"], "repeats are different draws"


def test_repeats_at_one_n_are_distinct_subsets_and_capped_at_how_many_exist(tmp_path):
    val = generate_crossval_split(sorted(CASES), seed=12345, n_splits=5)[0]["val"]
    pool = sorted(set(CASES) - set(val))  # 9 cases
    singles = add_fewshot_folds(tmp_path, CASES, [1], repeats=12, seed=0, write=False)
    assert sorted(r["train"][0] for r in singles) == pool, "9 distinct single cases, not 12 with duplicates"
    plain = sorted(np.random.default_rng([0, 1, 0]).choice(pool, size=1, replace=False).tolist())
    assert singles[0]["train"] == plain, "repeat 0 is the plain seeded draw (folds made before stay valid)"
    for seed in range(20):  # independent draws would repeat a case with probability 1 - 8/9 * 7/9 = 0.31
        trains = [tuple(r["train"]) for r in add_fewshot_folds(tmp_path, CASES, [1, 2], 3, seed, write=False)]
        assert len(set(trains)) == 6
    everything = add_fewshot_folds(tmp_path, CASES, [9], repeats=3, seed=0, write=False)
    assert len(everything) == 1 and everything[0]["train"] == pool


def test_rerunning_reuses_folds_and_never_changes_existing_ones(tmp_path):
    first = add_fewshot_folds(tmp_path, CASES, [2], repeats=2, seed=0)
    before = json.loads((tmp_path / "splits_final.json").read_text())
    again = add_fewshot_folds(tmp_path, CASES, [2, 3], repeats=2, seed=0)
    after = json.loads((tmp_path / "splits_final.json").read_text())
    assert after[: len(before)] == before
    assert [r["fold"] for r in again] == [r["fold"] for r in first] + [len(before), len(before) + 1]


def test_dry_run_writes_nothing(tmp_path):
    add_fewshot_folds(tmp_path, CASES, [2], repeats=1, seed=0)
    before = (tmp_path / "splits_final.json").read_text()
    records = add_fewshot_folds(tmp_path, CASES, [3], repeats=1, seed=0, write=False)
    assert records[0]["fold"] == 6 and (tmp_path / "splits_final.json").read_text() == before


def test_more_cases_than_outside_validation_is_one_clear_error(tmp_path):
    with pytest.raises(NnsslError, match=r"choose -n between 1 and 9"):
        add_fewshot_folds(tmp_path, CASES, [10], repeats=1)


def test_sweep_dry_run_prints_exactly_the_nnunet_commands(in_world, capsys):
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", "nnsslPlans_sweepdry",
                            "--overwrite"]) == 0
    capsys.readouterr()
    splits_path = in_world.preprocessed / LAB / "splits_final.json"
    before = splits_path.read_text() if splits_path.exists() else None
    code = sweep_cli.main(["-d", "991", "-c", "3d_cpu", "--plans", "nnsslPlans_sweepdry", "-n", "1", "2",
                           "--repeats", "2", "--epochs", "5", "-device", "cpu", "--dry-run"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    folder = in_world.preprocessed / LAB
    folds = [r["fold"] for r in add_fewshot_folds(folder, labelled_identifiers(folder), [1, 2], 2, 0, write=False)]
    expected = [f"nnUNetv2_train 991 3d_cpu {f} -tr {tr} -p {p} -device cpu"
                for tr, p in (("nnUNetTrainerSSLInit_5epochs", "nnsslPlans_sweepdry"),
                              ("nnUNetTrainerSSLScratch_5epochs", "nnUNetPlans")) for f in folds]
    assert lines == expected
    assert (splits_path.read_text() if splits_path.exists() else None) == before


@pytest.mark.slow
def test_small_real_sweep_writes_csv_and_png_from_the_summaries(in_world, capsys):
    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--plans-name", "nnsslPlans_sweep",
                            "--overwrite"]) == 0
    capsys.readouterr()
    out = in_world.root / "sweep_out"
    code = sweep_cli.main(["-d", "991", "-c", "3d_cpu", "--plans", "nnsslPlans_sweep", "-n", "1", "2", "--repeats",
                           "1", "--epochs", "1", "--iters", "2", "--no-tta", "-device", "cpu", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "| sweep |" in printed and "| scratch |" in printed
    rows = list(csv.DictReader((out / "label_efficiency.csv").open()))
    assert sorted((r["method"], int(r["n"])) for r in rows) == [("scratch", 1), ("scratch", 2), ("sweep", 1),
                                                                ("sweep", 2)]
    for r in rows:
        summary = json.loads(open(r["summary"]).read())
        assert float(r["mean_dice"]) == summary["foreground_mean"]["Dice"]
        assert f"fold_{r['fold']}" in r["summary"] and r["trainer"] in r["summary"] and r["trainer"].endswith("_noTTA")
    assert (out / "label_efficiency.png").stat().st_size > 0
    assert shlex.split(printed.splitlines()[0])[0] == "[1/4]"
