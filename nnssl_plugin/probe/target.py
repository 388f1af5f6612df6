"""The labelled target of a probe: a planned nnU-Net dataset, its configuration and one fold of its splits.

Cases are read from the configuration's preprocessed folder (what nnU-Net trains on), split by the dataset's own
`splits_final.json`, or, where nnU-Net has not written it yet, by the default 5-fold split `nnUNetv2_train` would
write (nnU-Net's `generate_crossval_split`, seed 12345), which is then used without being written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.probe.dense import Case


@dataclass
class Target:
    name: str  # Dataset<id>_<name>
    folder: Path  # nnUNet_preprocessed/<name>
    plans: dict
    configuration: str
    patch_size: list[int]
    dataset_json: dict
    num_input_channels: int
    class_names: list[str]  # index k: the name of class k (background first)
    ignore_label: int | None
    fold: int
    splits: str  # where the split came from
    num_folds: int  # folds in that split
    train: list[Case]
    val: list[Case]


CROSS_VALIDATION_FOLDS = 5  # nnU-Net's cross-validation: folds 0-4 of splits_final.json; later folds are extra ones

def load_target(dataset: str, plans_name: str, configuration: str, fold: int) -> Target:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnssl_plugin.fewshot import default_splits
    from nnssl_plugin.io_utils import load_json
    from nnssl_plugin.paths import find_dataset_name, preprocessed_folder
    from nnssl_plugin.plans import load_plans, resolve_configuration

    name = find_dataset_name(dataset, in_raw=False, in_preprocessed=True,
                             unprepared_hint="nnUNetv2_plan_and_preprocess -d {id}")
    dataset_id = int(name[7:10])
    plans = load_plans(name, plans_name)
    resolved = resolve_configuration(plans, configuration)
    folder = preprocessed_folder() / name
    data_folder = folder / resolved["data_identifier"]
    if not data_folder.is_dir() or not any(data_folder.glob("*.pkl")):
        raise NnsslError(f"{data_folder} holds no preprocessed cases; run nnUNetv2_plan_and_preprocess -d {dataset_id} "
                         f"-c {configuration} (or the configuration it inherits from) first")
    dataset_json = load_json(folder / "dataset.json")
    pm = PlansManager(plans)
    labels = pm.get_label_manager(dataset_json)
    if labels.has_regions:
        raise NnsslError(f"{name} is labelled with regions (overlapping labels); the probe needs one class per voxel")
    if labels.num_segmentation_heads < 2:
        raise NnsslError(f"{name} has no foreground label in dataset.json; the probe needs a labelled dataset")
    names = {int(v): k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    class_names = [names.get(k, str(k)) for k in range(labels.num_segmentation_heads)]
    cases = infer_dataset_class(str(data_folder))(str(data_folder))
    identifiers = sorted(cases.identifiers)
    splits_path = folder / "splits_final.json"
    if splits_path.is_file():
        splits, source = load_json(splits_path), str(splits_path)
    else:
        if len(identifiers) < 5:  # nnU-Net's default split (sklearn's KFold) needs a case per fold
            raise NnsslError(f"{name} has {len(identifiers)} preprocessed case(s) and no splits_final.json: nnU-Net's "
                             f"default split has 5 folds and needs at least 5 cases; add cases, or write your own "
                             f"folds to {splits_path} ([{{\"train\": [...], \"val\": [...]}}, ...])")
        splits = default_splits(identifiers)
        source = "nnU-Net's default 5-fold split (splits_final.json not written yet)"
    if not 0 <= fold < len(splits):
        raise NnsslError(f"fold {fold} is not in the splits of {name} (folds 0-{len(splits) - 1} in {source}); pass "
                         f"-f with one of them")
    train, val = splits[fold]["train"], splits[fold]["val"]
    missing = sorted(set(train + val) - set(identifiers))
    if missing:
        raise NnsslError(f"fold {fold} of {source} names {len(missing)} case(s) not preprocessed in {data_folder}, "
                         f"e.g. {missing[0]}; rerun nnUNetv2_plan_and_preprocess -d {dataset_id} -c {configuration}")
    if not train or not val:
        raise NnsslError(f"fold {fold} of {name} has {len(train)} training and {len(val)} validation case(s); the "
                         f"probe needs both")
    def case(key: str) -> Case:
        return _case(cases, key, name, len(class_names), labels.ignore_label)

    return Target(name, folder, plans, configuration, [int(p) for p in resolved["patch_size"]], dataset_json,
                  determine_num_input_channels(pm, pm.get_configuration(configuration), dataset_json), class_names,
                  labels.ignore_label, fold, source, len(splits), [case(k) for k in train], [case(k) for k in val])


def _case(cases, key: str, name: str, num_classes: int, ignore_label: int | None) -> Case:
    def load():
        data, seg, _, _ = cases.load_case(key)
        return np.asarray(data[:], dtype=np.float32), labels_named(np.asarray(seg[:]), key, name, num_classes,
                                                                    ignore_label)

    def load_seg():
        return labels_named(np.asarray(cases.load_case(key)[1][:]), key, name, num_classes, ignore_label)

    return Case(key, load, load_seg)


def labels_named(seg: np.ndarray, key: str, name: str, num_classes: int, ignore_label: int | None) -> np.ndarray:
    """`seg`, checked to hold only labels dataset.json names (0 … num_classes − 1, the ignore label, and nnU-Net's
    −1 outside the nonzero mask): another value would end the probe late in a reshape; here it is one line."""
    if seg.size and int(seg.max()) >= num_classes:
        values = np.unique(seg[seg >= num_classes])
        bad = [int(v) for v in values if ignore_label is None or int(v) != ignore_label]
        if bad:
            raise NnsslError(f"case {key} of {name} holds label(s) {bad[:5]} that dataset.json's labels do not name "
                             f"(0-{num_classes - 1}"
                             + (f", ignore {ignore_label}" if ignore_label is not None else "")
                             + "); add them to dataset.json's labels and rerun nnUNetv2_plan_and_preprocess, or fix "
                               "the segmentation")
    return seg
