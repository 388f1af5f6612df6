"""Few-label folds in nnU-Net's own `splits_final.json` (the label-efficiency study of Kats et al. 2024,
arXiv 2401.06473, Fig. 1; any dataset).

nnU-Net trains fold k on `splits_final.json[k]`. This adds folds with N training cases each (N in `counts`, `repeats`
seeded draws per N) that all share one fixed validation set, so every point of a label-efficiency curve is scored on
the same cases. The repeats at one N are distinct subsets (a draw equal to an earlier repeat's is drawn again from the
same stream; repeat 0 is always the plain seeded draw), and there are only as many as distinct subsets exist: N = all
the cases outside the validation set gives one fold, however many repeats are asked for. Existing folds are never
changed: if the file is missing, nnU-Net's own default 5-fold split (`generate_crossval_split`, seed 12345, what
`nnUNetv2_train` would create) is written first, and the validation set is fold 0's validation cases. Folds already
added with the same (N, repeat, seed, validation) are reused, so re-running is idempotent. Which fold is which is
recorded next to it in `fewshot_folds.json`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import atomic_write_json, load_json

INDEX = "fewshot_folds.json"


def labelled_identifiers(folder: Path) -> list[str]:
    """The case identifiers of a planned labelled dataset (`nnUNet_preprocessed/<D>/gt_segmentations`)."""
    gt = folder / "gt_segmentations"
    if not gt.is_dir():
        raise NnsslError(f"{folder} has no gt_segmentations; run nnUNetv2_plan_and_preprocess -d "
                         f"{int(folder.name[7:10])} first")
    ending = load_json(folder / "dataset.json")["file_ending"]
    return sorted(p.name[: -len(ending)] for p in gt.iterdir() if p.name.endswith(ending))


def default_splits(identifiers: list[str]) -> list[dict]:
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    return generate_crossval_split(sorted(identifiers), seed=12345, n_splits=5)


def add_fewshot_folds(folder: Path, identifiers: list[str], counts: list[int], repeats: int, seed: int = 0,
                      write: bool = True) -> list[dict]:
    """Add (or find) the folds in `folder`/splits_final.json; return one record per (N, repeat) (fewer repeats
    where fewer distinct subsets exist):
    {"fold", "n", "repeat", "seed", "train", "val"}. `write=False` computes the same records without writing."""
    splits_path, index_path = folder / "splits_final.json", folder / INDEX
    splits = load_json(splits_path) if splits_path.is_file() else default_splits(identifiers)
    index = load_json(index_path) if index_path.is_file() else []
    val = sorted(splits[0]["val"])
    pool = sorted(set(identifiers) - set(val))
    if not pool:
        raise NnsslError(f"fold 0 of {splits_path} validates on every case; no case is left to train on")
    too_many = [n for n in counts if n > len(pool) or n < 1]
    if too_many:
        raise NnsslError(f"cannot draw {too_many} training case(s): {len(pool)} cases are outside the fixed "
                         f"validation set (fold 0's {len(val)}); choose -n between 1 and {len(pool)}")
    records = []
    for n in counts:
        drawn: list[list[str]] = []
        for repeat in range(min(repeats, math.comb(len(pool), n))):  # only as many repeats as distinct subsets
            rng = np.random.default_rng([seed, n, repeat])
            train = sorted(rng.choice(pool, size=n, replace=False).tolist())
            while train in drawn:  # an earlier repeat drew this subset: redraw from the same stream
                train = sorted(rng.choice(pool, size=n, replace=False).tolist())
            drawn.append(train)
            found = next((r for r in index if (r["n"], r["repeat"], r["seed"]) == (n, repeat, seed)
                          and splits[r["fold"]]["val"] == val and splits[r["fold"]]["train"] == train), None)
            if found is None:
                splits.append({"train": train, "val": val})
                found = {"fold": len(splits) - 1, "n": n, "repeat": repeat, "seed": seed}
                index.append(found)
            records.append({**found, "train": train, "val": val})
    if write:
        atomic_write_json(splits_path, splits)
        atomic_write_json(index_path, index)
    return records
