"""BTCV and AbdomenCT-1K converters, on small files shaped like the real ones (written here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl_plugin.cli import convert as convert_cli
from nnssl_plugin.datasets.convert import convert_abdomenct1k, convert_btcv
from nnssl_plugin.errors import NnsslError


def _nifti(path, shape=(6, 12, 10), spacing=(0.8, 0.8, 3.0), dtype=np.int16, value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(0).integers(0, 14 if value is None else value + 1, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _btcv_folder(root, numbers=(1, 2, 5)):
    """BTCV's RawData/Training layout: img/img0001.nii.gz, label/label0001.nii.gz."""
    for n in numbers:
        _nifti(root / "img" / f"img{n:04d}.nii.gz")
        _nifti(root / "label" / f"label{n:04d}.nii.gz", dtype=np.uint8, value=13)
    return root


def test_btcv_becomes_an_nnunet_dataset_with_btcv_labels(fresh_world, tmp_path):
    out = convert_btcv(_btcv_folder(tmp_path / "Training"), 501)
    assert out.name == "Dataset501_BTCV"
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "CT"} and dataset_json["numTraining"] == 3
    assert dataset_json["labels"]["spleen"] == 1 and dataset_json["labels"]["left_adrenal_gland"] == 13
    assert len(dataset_json["labels"]) == 14
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == \
           ["BTCV_0001_0000.nii.gz", "BTCV_0002_0000.nii.gz", "BTCV_0005_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == \
           ["BTCV_0001.nii.gz", "BTCV_0002.nii.gz", "BTCV_0005.nii.gz"]
    copied = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "BTCV_0002.nii.gz")))
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "Training" / "label" / "label0002.nii.gz")))
    assert np.array_equal(copied, original)


def test_btcv_label_with_other_geometry_is_refused_and_nothing_is_left(fresh_world, tmp_path):
    folder = _btcv_folder(tmp_path / "Training", numbers=(1, 2))
    _nifti(folder / "label" / "label0002.nii.gz", shape=(6, 12, 11), dtype=np.uint8, value=13)
    with pytest.raises(NnsslError, match="label0002.nii.gz does not match its image"):
        convert_btcv(folder, 501)
    assert list((fresh_world.raw).iterdir()) == []


def test_btcv_missing_label_is_named(fresh_world, tmp_path):
    folder = _btcv_folder(tmp_path / "Training", numbers=(1, 2))
    (folder / "label" / "label0001.nii.gz").unlink()
    with pytest.raises(NnsslError, match="img0001 has no label0001"):
        convert_btcv(folder, 501)


def test_abdomenct1k_images_only_with_symlinks(fresh_world, tmp_path):
    src = tmp_path / "AbdomenCT-1K"
    for i in (1, 2, 1000):
        _nifti(src / f"Case_{i:05d}_0000.nii.gz")
    out = convert_abdomenct1k(src, 500, link=True)
    assert out.name == "Dataset500_AbdomenCT1K" and not (out / "labelsTr").exists()
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert names == ["Case_00001_0000.nii.gz", "Case_00002_0000.nii.gz", "Case_01000_0000.nii.gz"]
    assert all((out / "imagesTr" / n).is_symlink() for n in names)
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0} and dataset_json["numTraining"] == 3


def test_existing_dataset_needs_overwrite_and_ids_are_not_shared(fresh_world, tmp_path, capsys):
    src = tmp_path / "cts"
    _nifti(src / "a.nii.gz")
    assert convert_cli.main_abdomenct1k(["-i", str(src), "-d", "500"]) == 0
    assert convert_cli.main_abdomenct1k(["-i", str(src), "-d", "500"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert convert_cli.main_abdomenct1k(["-i", str(src), "-d", "500", "--overwrite"]) == 0
    assert convert_cli.main_btcv(["-i", str(_btcv_folder(tmp_path / "Training")), "-d", "500"]) == 1
    assert "dataset id 500 is already used by Dataset500_AbdomenCT1K" in capsys.readouterr().err


def test_unreadable_volume_is_named(fresh_world, tmp_path):
    src = tmp_path / "cts"
    _nifti(src / "good.nii.gz")
    (src / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(NnsslError, match="cannot read .*bad.nii.gz"):
        convert_abdomenct1k(src, 500)
