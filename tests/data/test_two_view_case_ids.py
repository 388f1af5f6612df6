"""Two-view sampler's case ids: each crop's case as its index in the loader's sorted identifiers (MoCo masks
same-case queue keys with them)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl_plugin.data.two_view import TwoViewDataLoader

UNL = "Dataset990_PhantomUnlabelled"


def _loader(world, **options):
    """(dataset, a two-view loader of batch 4 on the phantom's 3d_cpu plans)."""
    root = world.preprocessed / UNL
    pm = PlansManager(str(root / "nnsslPretrainPlans.json"))
    config = pm.get_configuration("3d_cpu")
    folder = str(root / config.data_identifier)
    dataset = infer_dataset_class(folder)(folder)
    lm = pm.get_label_manager(json.loads((root / "dataset.json").read_text()))
    return dataset, TwoViewDataLoader(dataset, 4, config.patch_size, lm, **options)


def test_case_ids_index_the_sorted_identifiers(world):
    np.random.seed(3)
    dataset, loader = _loader(world)
    identifiers = sorted(dataset.identifiers)
    seen = set()
    for _ in range(3):
        batch = next(loader)
        assert batch["case_ids"].dtype == torch.int64 and batch["case_ids"].shape == (4,)
        assert batch["case_ids"].tolist() == [identifiers.index(k) for k in batch["keys"]]
        seen.update(batch["case_ids"].tolist())
    assert len(seen) > 1


def test_pairs_per_case_draws_consecutive_pairs_from_one_case_each_with_its_own_crops(world):
    np.random.seed(4)
    _, loader = _loader(world, pairs_per_case=2, num_voxels=64, mirror_axes=())
    groups, crops_differ = set(), 0
    for _ in range(4):
        batch = next(loader)
        keys = batch["keys"]
        assert keys[0] == keys[1] and keys[2] == keys[3]
        assert batch["case_ids"].tolist() == [batch["case_ids"][0]] * 2 + [batch["case_ids"][2]] * 2
        groups.update((keys[0], keys[2]))
        crops_differ += int(not torch.equal(batch["start1"][0], batch["start1"][1]))
        assert set(batch["voxel_batch"].tolist()) == {0, 1, 2, 3}  # every pair keeps its own voxels
    assert len(groups) > 1 and crops_differ >= 3


def test_pairs_per_case_below_one_is_refused(world):
    with pytest.raises(ValueError, match="pairs_per_case must be >= 1"):
        _loader(world, pairs_per_case=0)
