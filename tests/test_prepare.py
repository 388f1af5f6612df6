"""nnssl_prepare: unlabelled data preprocessed on the target's plans is nnU-Net data, identical to nnU-Net's own."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl_plugin.cli import prepare as prepare_cli
from nnssl_plugin.data.prepare import prepare_unlabelled

UNL = "Dataset990_PhantomUnlabelled"
LAB = "Dataset991_PhantomBTCV"


def _load_json(path):
    return json.loads(path.read_text())


def _loader(root, plans_name, configuration, batch_size=2):
    plans = PlansManager(str(root / f"{plans_name}.json"))
    config = plans.get_configuration(configuration)
    folder = str(root / config.data_identifier)
    dataset = infer_dataset_class(folder)(folder)
    label_manager = plans.get_label_manager(_load_json(root / "dataset.json"))
    return dataset, nnUNetDataLoader(dataset, batch_size, config.patch_size, config.patch_size, label_manager), config


def test_every_prepared_case_loads_through_nnunet_dataset_class(world):
    root = world.preprocessed / UNL
    folder = root / "nnsslPretrainPlans_3d_fullres"
    dataset = infer_dataset_class(str(folder))(str(folder))
    assert len(dataset.identifiers) == 6
    for identifier in dataset.identifiers:
        data, seg, seg_prev, properties = dataset.load_case(identifier)
        assert data.shape[0] == 1 and np.isfinite(np.asarray(data)).all()
        assert properties["class_locations"] == {}
        assert set(np.unique(np.asarray(seg))) <= {-1, 0}


@pytest.mark.parametrize("configuration", ["3d_fullres", "3d_cpu"])
def test_nnunet_loader_yields_batches_of_the_planned_patch(world, configuration):
    _, loader, config = _loader(world.preprocessed / UNL, "nnsslPretrainPlans", configuration)
    batch = next(loader)
    assert tuple(batch["data"].shape) == (2, 1, *config.patch_size)


def test_copied_plans_keep_the_target_network_and_name_their_own_data(world):
    target = _load_json(world.preprocessed / LAB / "nnUNetPlans.json")
    copied = _load_json(world.preprocessed / UNL / "nnsslPretrainPlans.json")
    assert copied["dataset_name"] == UNL and copied["plans_name"] == "nnsslPretrainPlans"
    for name, configuration in target["configurations"].items():
        ours = copied["configurations"][name]
        assert {k: v for k, v in ours.items() if k != "data_identifier"} == \
               {k: v for k, v in configuration.items() if k != "data_identifier"}
        if "data_identifier" in configuration:
            assert ours["data_identifier"] == configuration["data_identifier"].replace("nnUNetPlans",
                                                                                       "nnsslPretrainPlans")
    assert "3d_cpu" in copied["configurations"], "the CPU configuration travels with the plans"
    assert copied["foreground_intensity_properties_per_channel"] == \
           target["foreground_intensity_properties_per_channel"]


def test_writes_trainer_files_for_an_unlabelled_set(world):
    root = world.preprocessed / UNL
    dataset_json = _load_json(root / "dataset.json")
    assert dataset_json["labels"] == {"background": 0} and dataset_json["numTraining"] == 6
    fingerprint = _load_json(root / "dataset_fingerprint.json")
    assert len(fingerprint["spacings"]) == len(fingerprint["shapes_after_crop"]) == 6
    target = _load_json(world.preprocessed / LAB / "nnUNetPlans.json")
    assert fingerprint["foreground_intensity_properties_per_channel"] == \
           target["foreground_intensity_properties_per_channel"]
    assert not list(root.glob(".*partial")), "no staging folder may be left behind"


def test_arrays_equal_nnunet_preprocessing_of_the_same_images(in_world):
    """The labelled images, copied into an images-only dataset and prepared by us, give exactly the arrays
    nnUNetv2_plan_and_preprocess wrote for them."""
    raw_labelled = in_world.raw / LAB
    copy = in_world.raw / "Dataset992_SameImages"
    (copy / "imagesTr").mkdir(parents=True)
    chosen = ["phantom_001", "phantom_004"]
    for case in chosen:
        shutil.copy(raw_labelled / "imagesTr" / f"{case}_0000.nii.gz", copy / "imagesTr")
    (copy / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0},
                                                   "numTraining": 2, "file_ending": ".nii.gz"}))
    prepare_unlabelled(992, 991, log=lambda *_: None)
    ours = infer_dataset_class(str(p := in_world.preprocessed / "Dataset992_SameImages" /
                                   "nnsslPretrainPlans_3d_fullres"))(str(p))
    theirs_folder = str(in_world.preprocessed / LAB / "nnUNetPlans_3d_fullres")
    theirs = infer_dataset_class(theirs_folder)(theirs_folder)
    for case in chosen:
        a, _, _, props_a = ours.load_case(case)
        b, seg_b, _, props_b = theirs.load_case(case)
        assert a.shape == b.shape
        assert np.array_equal(np.asarray(a), np.asarray(b))
        for key in ("spacing", "bbox_used_for_cropping", "shape_before_cropping",
                    "shape_after_cropping_and_before_resampling"):
            assert np.array_equal(np.asarray(props_a[key]), np.asarray(props_b[key])), key


def test_2d_configuration_prepares_and_loads(world_2d):
    root = world_2d.preprocessed / UNL
    _, loader, config = _loader(root, "nnsslPretrain2d", "2d", batch_size=3)
    assert (root / "nnsslPretrain2d_2d").is_dir()
    assert tuple(next(loader)["data"].shape) == (3, 1, *config.patch_size)


def test_rerun_needs_overwrite_and_then_replaces(in_world, capsys):
    assert prepare_cli.main(["-d", "990", "-t", "991"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert prepare_cli.main(["-d", "990", "-t", "991", "--overwrite"]) == 0


def test_never_replaces_plans_it_did_not_write(in_world, capsys):
    root = in_world.preprocessed / UNL
    own = root / "userPlans.json"
    own.write_text(json.dumps({"plans_name": "userPlans", "configurations": {}}))
    assert prepare_cli.main(["-d", "990", "-t", "991", "--plans-name", "userPlans", "--overwrite"]) == 1
    assert "not written by nnssl_prepare" in capsys.readouterr().err
    assert _load_json(own) == {"plans_name": "userPlans", "configurations": {}}


def test_labels_of_the_unlabelled_dataset_are_ignored(in_world):
    """A pretraining set that has labels (AbdomenCT-1K does) is prepared from its images only."""
    src = in_world.raw / LAB
    dst = in_world.raw / "Dataset993_WithLabels"
    shutil.copytree(src, dst)
    prepare_unlabelled(993, 991, log=lambda *_: None)
    folder = in_world.preprocessed / "Dataset993_WithLabels" / "nnsslPretrainPlans_3d_fullres"
    dataset = infer_dataset_class(str(folder))(str(folder))
    _, seg, _, props = dataset.load_case("phantom_000")
    assert set(np.unique(np.asarray(seg))) <= {-1, 0} and props["class_locations"] == {}
