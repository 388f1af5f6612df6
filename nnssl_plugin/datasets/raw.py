"""Writing nnU-Net raw datasets (imagesTr/labelsTr/dataset.json) atomically."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.io_utils import atomic_write_json, publish_folder, staging_folder
from nnssl_plugin.paths import check_id_free, dataset_folder_name, raw_folder


def dataset_json(labels: dict[str, int], num_training: int, file_ending: str = ".nii.gz",
                 channel_names: dict[str, str] | None = None, **extra) -> dict:
    """nnU-Net v2 dataset.json. An images-only dataset has labels {'background': 0}."""
    return {
        "channel_names": channel_names or {"0": "CT"},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }


def write_raw_dataset(dataset_id: int, name: str, write_cases: Callable[[Path], Iterable[str]],
                      labels: dict[str, int], overwrite: bool = False, file_ending: str = ".nii.gz",
                      **dataset_json_extra) -> Path:
    """Create nnUNet_raw/Dataset<id>_<name> from `write_cases(folder)`, which writes imagesTr (and labelsTr)
    into `folder` and yields the case identifiers. Built in a staging folder and renamed when complete, so an
    interrupted conversion never leaves a half dataset behind.
    """
    final = raw_folder() / dataset_folder_name(dataset_id, name)
    check_id_free(dataset_id, name)
    if final.exists() and not overwrite:
        raise NnsslError(f"{final} already exists; pass --overwrite to replace it")
    staging = staging_folder(final)
    try:
        (staging / "imagesTr").mkdir()
        if len(labels) > 1:
            (staging / "labelsTr").mkdir()
        identifiers = list(write_cases(staging))
        if not identifiers:
            raise NnsslError("no cases were written")
        atomic_write_json(staging / "dataset.json",
                          dataset_json(labels, len(identifiers), file_ending, **dataset_json_extra))
        publish_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
