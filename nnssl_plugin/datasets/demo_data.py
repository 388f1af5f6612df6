"""The two demo datasets: an unlabelled phantom set (images only) and a labelled one with BTCV organ labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnssl_plugin.datasets.phantom import BTCV_LABELS, PhantomConfig, generate_case
from nnssl_plugin.datasets.raw import write_raw_dataset

UNLABELLED_NAME = "PhantomUnlabelled"
LABELLED_NAME = "PhantomBTCV"
_STREAMS = {"unlabelled": 1, "labelled": 2}  # separate random streams: the two sets never share a case


def _to_sitk(array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))  # SimpleITK speaks x, y, z
    return image


def write_phantom_dataset(dataset_id: int, num_cases: int, labelled: bool, seed: int = 0,
                          config: PhantomConfig = PhantomConfig(), overwrite: bool = False) -> Path:
    """Write a phantom dataset into nnUNet_raw. Case i of a set depends only on (seed, set, i, config)."""
    stream = _STREAMS["labelled" if labelled else "unlabelled"]

    def write_cases(folder: Path):
        for i in range(num_cases):
            image, label, spacing = generate_case(np.random.SeedSequence([seed, stream, i]), config)
            identifier = f"phantom_{i:03d}"
            sitk.WriteImage(_to_sitk(image, spacing), str(folder / "imagesTr" / f"{identifier}_0000.nii.gz"),
                            useCompression=True)
            if labelled:
                sitk.WriteImage(_to_sitk(label, spacing), str(folder / "labelsTr" / f"{identifier}.nii.gz"),
                                useCompression=True)
            yield identifier

    labels = BTCV_LABELS if labelled else {"background": 0}
    name = LABELLED_NAME if labelled else UNLABELLED_NAME
    return write_raw_dataset(dataset_id, name, write_cases, labels, overwrite=overwrite,
                             description=f"nnssl_plugin CT phantom (seed {seed}); synthetic demo data, not real CT")
