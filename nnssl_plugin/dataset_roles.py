"""Which role a dataset plays: the labelled target (labels, planned with nnUNetv2_plan_and_preprocess) or the
unlabelled pretraining set (images only, prepared with nnssl_prepare). Used to tell a user who swapped `-d` and `-t`
so, instead of sending them to plan or prepare the wrong dataset."""
from __future__ import annotations

import json
import os
from pathlib import Path

from nnssl_plugin.paths import _names_with_id

PREPARE_MARKER = "nnssl_prepare"  # the key nnssl_prepare writes into the dataset.json it creates


def _folder(variable: str, dataset: str | int) -> Path | None:
    """The dataset's folder under an nnU-Net variable (by id or full name), None if unset, absent or ambiguous."""
    root = os.environ.get(variable)
    if not root:
        return None
    text = str(dataset)
    if text.isdigit():
        names = _names_with_id(Path(root), int(text))
        return Path(root) / names.pop() if len(names) == 1 else None
    return Path(root) / text if (Path(root) / text).is_dir() else None


def _labels_of(dataset_json: Path) -> dict:
    try:
        data = json.loads(dataset_json.read_text())
    except (OSError, ValueError):
        return {}
    return {} if PREPARE_MARKER in data else dict(data.get("labels") or {})


def is_labelled(dataset: str | int) -> bool:
    """Whether the dataset has segmentations: files in nnUNet_raw's labelsTr, or a dataset.json (raw or
    preprocessed, not one nnssl_prepare wrote) with a label besides background."""
    for variable in ("nnUNet_raw", "nnUNet_preprocessed"):
        folder = _folder(variable, dataset)
        if folder is None:
            continue
        if variable == "nnUNet_raw" and (folder / "labelsTr").is_dir() and any((folder / "labelsTr").iterdir()):
            return True
        if len(_labels_of(folder / "dataset.json")) > 1:
            return True
    return False


def is_images_only(dataset: str | int) -> bool:
    """Whether the dataset exists in nnUNet_raw without segmentations (what -d of nnssl_prepare expects)."""
    folder = _folder("nnUNet_raw", dataset)
    return folder is not None and (folder / "imagesTr").is_dir() and not is_labelled(dataset)
