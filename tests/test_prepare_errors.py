"""Bad input to nnssl_prepare: one clear line naming the fix, exit code 1, nothing half-written."""
from __future__ import annotations

import json
import shutil

from nnssl_plugin.cli import prepare as prepare_cli

LAB = "Dataset991_PhantomBTCV"


def _run(argv, capsys):
    code = prepare_cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _images_only(world, name, cases=("phantom_000", "phantom_001"), channels=("CT",)):
    folder = world.raw / name
    (folder / "imagesTr").mkdir(parents=True)
    for case in cases:
        for c in range(len(channels)):
            shutil.copy(world.raw / LAB / "imagesTr" / f"{case}_0000.nii.gz",
                        folder / "imagesTr" / f"{case}_{c:04d}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": {"background": 0},
        "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return folder


def test_unknown_dataset_id(in_world, capsys):
    code, err = _run(["-d", "977", "-t", "991"], capsys)
    assert code == 1 and "unknown dataset id 977" in err and len(err.splitlines()) == 1


def test_target_not_planned(in_world, capsys):
    _images_only(in_world, "Dataset981_Unplanned")
    (in_world.preprocessed / "Dataset982_NotPlanned").mkdir()
    code, err = _run(["-d", "981", "-t", "982"], capsys)
    assert code == 1 and "run nnUNetv2_plan_and_preprocess -d 982 first" in err


def test_channel_count_differs_from_target(in_world, capsys):
    _images_only(in_world, "Dataset983_TwoChannels", channels=("CT", "PET"))
    code, err = _run(["-d", "983", "-t", "991"], capsys)
    assert code == 1 and "2 input channel(s)" in err and "has 1" in err
    assert not (in_world.preprocessed / "Dataset983_TwoChannels").exists()


def test_empty_images_folder(in_world, capsys):
    _images_only(in_world, "Dataset984_Empty", cases=())
    code, err = _run(["-d", "984", "-t", "991"], capsys)
    assert code == 1 and "holds no '*.nii.gz' images" in err


def test_unreadable_image_is_named_and_the_other_cases_are_written(in_world, capsys):
    folder = _images_only(in_world, "Dataset985_OneBroken", cases=("phantom_000", "phantom_001", "phantom_002"))
    broken = folder / "imagesTr" / "phantom_001_0000.nii.gz"
    broken.write_bytes(b"this is not a nifti file")
    code, err = _run(["-d", "985", "-t", "991"], capsys)
    assert code == 1 and str(broken) in err and "the other 2 cases were written" in err
    written = sorted(p.name for p in (in_world.preprocessed / "Dataset985_OneBroken" /
                                      "nnsslPretrainPlans_3d_fullres").iterdir())
    assert written == [f"phantom_00{i}{ext}" for i in (0, 2) for ext in (".b2nd", ".pkl", "_seg.b2nd")]


def test_configuration_not_in_plans(in_world, capsys):
    code, err = _run(["-d", "990", "-t", "991", "-c", "3d_huge"], capsys)
    assert code == 1 and "configuration '3d_huge' is not in plans 'nnUNetPlans'" in err and "3d_fullres" in err


def test_nnunet_variable_unset(in_world, capsys, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed")
    code, err = _run(["-d", "990", "-t", "991"], capsys)
    assert code == 1 and "environment variable nnUNet_preprocessed is not set" in err


def test_error_reaches_the_shell_as_one_line_and_exit_code_1(world):
    result = world.run("nnssl_prepare", "-d", "976", "-t", "991", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("nnssl_prepare: error: unknown dataset id 976")
