"""Two-view sampler's case ids: each crop's case as its index in the loader's sorted identifiers (MoCo masks
same-case queue keys with them)."""
from __future__ import annotations

import json

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl_plugin.data.two_view import TwoViewDataLoader

UNL = "Dataset990_PhantomUnlabelled"


def test_case_ids_index_the_sorted_identifiers(world):
    np.random.seed(3)
    root = world.preprocessed / UNL
    pm = PlansManager(str(root / "nnsslPretrainPlans.json"))
    config = pm.get_configuration("3d_cpu")
    folder = str(root / config.data_identifier)
    dataset = infer_dataset_class(folder)(folder)
    lm = pm.get_label_manager(json.loads((root / "dataset.json").read_text()))
    loader = TwoViewDataLoader(dataset, 4, config.patch_size, lm)
    identifiers = sorted(dataset.identifiers)
    seen = set()
    for _ in range(3):
        batch = next(loader)
        assert batch["case_ids"].dtype == torch.int64 and batch["case_ids"].shape == (4,)
        assert batch["case_ids"].tolist() == [identifiers.index(k) for k in batch["keys"]]
        seen.update(batch["case_ids"].tolist())
    assert len(seen) > 1
