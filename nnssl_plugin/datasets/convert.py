"""Converters of public datasets into nnU-Net raw format: BTCV (labelled, 13 organs) and AbdomenCT-1K (images).

Images are copied byte for byte (or symlinked with `link=True`, for large collections); only headers are read, to
check that each label matches its image's geometry.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import SimpleITK as sitk

from nnssl_plugin.datasets.phantom import BTCV_LABELS
from nnssl_plugin.datasets.raw import write_raw_dataset
from nnssl_plugin.errors import NnsslError

NIFTI_ENDINGS = (".nii.gz", ".nii")


def _ending(path: Path) -> str | None:
    return next((e for e in NIFTI_ENDINGS if path.name.endswith(e)), None)


def _geometry(path: Path) -> tuple:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise NnsslError(f"cannot read {path}: {str(e).strip().splitlines()[-1]}") from None
    return reader.GetSize(), tuple(round(s, 4) for s in reader.GetSpacing()), reader.GetNumberOfComponents()


def _place(source: Path, destination: Path, link: bool) -> None:
    if link:
        os.symlink(source.resolve(), destination)
    else:
        shutil.copyfile(source, destination)


def find_btcv_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """BTCV 'RawData/Training': img/img0001.nii.gz and label/label0001.nii.gz (searched recursively)."""
    if not folder.is_dir():
        raise NnsslError(f"{folder} is not a folder; pass BTCV's RawData/Training folder (with img/ and label/)")
    images, labels = {}, {}
    for path in sorted(folder.rglob("*")):
        if _ending(path) is None:
            continue
        if m := re.fullmatch(r"img(\d+)\.nii(\.gz)?", path.name):
            images[m.group(1)] = path
        elif m := re.fullmatch(r"label(\d+)\.nii(\.gz)?", path.name):
            labels[m.group(1)] = path
    if not images:
        raise NnsslError(f"no img*.nii.gz found under {folder}; pass BTCV's RawData/Training folder")
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        number = unpaired[0]
        which = f"img{number} has no label{number}" if number in images else f"label{number} has no img{number}"
        raise NnsslError(f"BTCV case {number} is incomplete under {folder}: {which}")
    return {number: (images[number], labels[number]) for number in images}


def convert_btcv(folder: str | os.PathLike, dataset_id: int = 501, name: str = "BTCV", link: bool = False,
                 overwrite: bool = False) -> Path:
    """BTCV (Synapse multi-organ CT) -> nnUNet_raw/Dataset<id>_BTCV with BTCV's 13 organ labels."""
    pairs = find_btcv_pairs(Path(folder))

    def write_cases(out: Path):
        for number, (image, label) in pairs.items():
            size_i, spacing_i, comps = _geometry(image)
            size_l, spacing_l, _ = _geometry(label)
            if comps != 1:
                raise NnsslError(f"{image} has {comps} components per voxel; BTCV images are single-channel CT")
            if size_i != size_l or spacing_i != spacing_l:
                raise NnsslError(f"{label} does not match its image: size {size_l} vs {size_i}, spacing "
                                 f"{spacing_l} vs {spacing_i}")
            ending = _ending(image)
            identifier = f"BTCV_{int(number):04d}"
            _place(image, out / "imagesTr" / f"{identifier}_0000{ending}", link)
            _place(label, out / "labelsTr" / f"{identifier}{ending}", link)
            yield identifier

    endings = {_ending(p) for pair in pairs.values() for p in pair}
    if len(endings) != 1:
        raise NnsslError(f"mixed file endings {sorted(endings)} under {folder}; nnU-Net needs one file ending")
    return write_raw_dataset(dataset_id, name, write_cases, BTCV_LABELS, overwrite=overwrite,
                             file_ending=endings.pop(), description="BTCV abdomen (Synapse multi-organ CT)")


def convert_abdomenct1k(folder: str | os.PathLike, dataset_id: int = 500, name: str = "AbdomenCT1K",
                        link: bool = False, overwrite: bool = False) -> Path:
    """A folder of CT volumes (AbdomenCT-1K: Case_00001_0000.nii.gz, ...) -> images-only nnU-Net raw dataset."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NnsslError(f"{folder} is not a folder; pass the folder that holds the CT volumes")
    files = sorted(p for p in folder.iterdir() if _ending(p) is not None and not p.name.startswith("."))
    if not files:
        raise NnsslError(f"no .nii.gz or .nii volumes in {folder}")
    endings = {_ending(p) for p in files}
    if len(endings) != 1:
        raise NnsslError(f"mixed file endings {sorted(endings)} in {folder}; nnU-Net needs one file ending")
    ending = endings.pop()

    def identifier_of(path: Path) -> str:
        stem = path.name[: -len(ending)]
        stem = re.sub(r"_0000$", "", stem)  # already nnU-Net style: the channel suffix is added back below
        return re.sub(r"[^A-Za-z0-9\-]+", "_", stem).strip("_")

    identifiers = [identifier_of(p) for p in files]
    duplicates = sorted({i for i in identifiers if identifiers.count(i) > 1})
    if duplicates:
        raise NnsslError(f"two volumes in {folder} map to case '{duplicates[0]}'; rename one of them")

    def write_cases(out: Path):
        for path, identifier in zip(files, identifiers):
            _, _, comps = _geometry(path)
            if comps != 1:
                raise NnsslError(f"{path} has {comps} components per voxel; expected single-channel CT")
            _place(path, out / "imagesTr" / f"{identifier}_0000{ending}", link)
            yield identifier

    return write_raw_dataset(dataset_id, name, write_cases, {"background": 0}, overwrite=overwrite,
                             file_ending=ending, description="AbdomenCT-1K CT volumes, images only")
