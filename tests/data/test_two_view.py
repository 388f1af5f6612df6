"""Two-view sampler on nnU-Net's prepared phantom data: recorded geometry reproduces each view exactly, also for
views of different scales (the MoCo family's random resized crop)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl_plugin.data.augment import global_view_transforms
from nnssl_plugin.data.local_augment import hier_local_transforms
from nnssl_plugin.data.two_view import TwoViewDataLoader
from nnssl_plugin.ops.regions import box_overlap, min_view_overlap, overlap

UNL = "Dataset990_PhantomUnlabelled"


def _sampler(world, configuration="3d_cpu", plans="nnsslPretrainPlans", transforms=None, batch=3, **options):
    root = world.preprocessed / UNL
    pm = PlansManager(str(root / f"{plans}.json"))
    config = pm.get_configuration(configuration)
    folder = str(root / config.data_identifier)
    dataset = infer_dataset_class(folder)(folder)
    lm = pm.get_label_manager(json.loads((root / "dataset.json").read_text()))
    return dataset, TwoViewDataLoader(dataset, batch, config.patch_size, lm, transforms, **options), config


def _expected_view(data, start, mirror, patch):
    bbox = [[int(s), int(s) + p] for s, p in zip(start, patch)]
    crop = torch.from_numpy(crop_and_pad_nd(np.asarray(data), bbox, 0)).float()
    flip = [a + 1 for a in range(len(mirror)) if mirror[a]]
    return crop.flip(flip) if flip else crop


def test_views_are_the_recorded_crops_and_flips(world):
    np.random.seed(0)
    dataset, loader, config = _sampler(world)
    for _ in range(3):
        batch = next(loader)
        assert batch["view1"].shape == (3, 1, *config.patch_size) == batch["view2"].shape
        for j, key in enumerate(batch["keys"]):
            data = dataset.load_case(key)[0]
            for v in ("1", "2"):
                expected = _expected_view(data, batch["start" + v][j], batch["mirror" + v][j], config.patch_size)
                assert torch.equal(batch["view" + v][j], expected)
            shift = (batch["start2"][j] - batch["start1"][j]).numpy()
            assert np.all(np.abs(shift) <= np.array(config.patch_size) // 2)
            overlap(batch["start1"][j], batch["start2"][j], config.patch_size)  # never disjoint


def test_mirroring_and_offsets_actually_vary(world):
    np.random.seed(1)
    _, loader, _ = _sampler(world)
    batches = [next(loader) for _ in range(6)]
    mirrors = torch.cat([b["mirror1"] for b in batches] + [b["mirror2"] for b in batches])
    shifts = torch.cat([b["start2"] - b["start1"] for b in batches])
    assert 0 < mirrors.float().mean() < 1
    assert len({tuple(s.tolist()) for s in shifts}) > 10


def test_augmented_views_keep_shape_and_differ_from_the_crop(world):
    np.random.seed(2)
    torch.manual_seed(2)
    _, loader, config = _sampler(world, transforms=global_view_transforms())
    batch = next(loader)
    assert batch["view1"].shape == (3, 1, *config.patch_size) and batch["view1"].dtype == torch.float32
    assert torch.isfinite(batch["view1"]).all()


def test_2d_views_share_the_slice_and_record_in_plane_geometry(world_2d):
    np.random.seed(3)
    dataset, loader, config = _sampler(world_2d, "2d", "nnsslPretrain2d", batch=2)
    batch = next(loader)
    assert batch["view1"].shape == (2, 1, *config.patch_size) and batch["start1"].shape == (2, 2)
    for j, key in enumerate(batch["keys"]):
        data = np.asarray(dataset.load_case(key)[0])  # (c, z, y, x)
        view = batch["view1"][j]
        matches = []
        for z in range(data.shape[1]):
            expected = _expected_view(data[:, z], batch["start1"][j], batch["mirror1"][j], config.patch_size)
            matches.append(torch.equal(view, expected))
        assert any(matches), "view 1 is the recorded in-plane crop of some slice"


def test_shift_must_keep_views_overlapping(world):
    dataset, _, config = _sampler(world)
    with pytest.raises(ValueError, match="so that the views overlap"):
        TwoViewDataLoader(dataset, 2, config.patch_size, None, max_shift=1.0)


def test_sampled_voxels_are_the_same_case_voxel_in_both_views_and_prefer_the_body(world):
    np.random.seed(4)
    dataset, loader, config = _sampler(world, num_voxels=300)
    for _ in range(2):
        batch = next(loader)
        assert batch["voxels1"].shape == batch["voxels2"].shape and batch["voxels1"].shape[1] == 3
        for j, key in enumerate(batch["keys"]):
            rows = batch["voxel_batch"] == j
            assert rows.sum() == 300
            v1, v2 = batch["voxels1"][rows], batch["voxels2"][rows]
            case1 = batch["start1"][j] + torch.where(batch["mirror1"][j], torch.tensor(config.patch_size) - 1 - v1, v1)
            case2 = batch["start2"][j] + torch.where(batch["mirror2"][j], torch.tensor(config.patch_size) - 1 - v2, v2)
            assert torch.equal(case1, case2), "rows are the same case voxel"
            data = np.asarray(dataset.load_case(key)[0])
            inside = ((case1 >= 0) & (case1 < torch.tensor(data.shape[1:]))).all(1)
            assert inside.all(), "padding is never preferred over the body"
            values = data[0][tuple(case1.T.numpy())]
            assert (values > data[0].min()).all(), "background (the image minimum) is not sampled"
            assert len({tuple(v) for v in case1.tolist()}) == 300, "no voxel twice"


def test_local_corruptions_keep_the_recorded_crop_as_the_restoration_target(world):
    np.random.seed(5)
    torch.manual_seed(5)
    dataset, loader, config = _sampler(world, local_transforms=hier_local_transforms(), num_voxels=64)
    batch = next(loader)
    for j, key in enumerate(batch["keys"]):
        data = dataset.load_case(key)[0]
        for v in ("1", "2"):
            expected = _expected_view(data, batch["start" + v][j], batch["mirror" + v][j], config.patch_size)
            assert torch.equal(batch["clean" + v][j], expected)
            assert batch["view" + v][j].shape == expected.shape and not torch.equal(batch["view" + v][j], expected)


# ----- views of different scales (scale_range) -----------------------------------------------------------------------
SCALES = (0.7, 1.4)


def _expected_scaled_view(data, start, size, mirror, patch):
    """The recorded box cropped from the case (0-padded), resized to the patch, flipped."""
    bbox = [[int(s), int(s) + int(z)] for s, z in zip(start, size)]
    crop = torch.from_numpy(crop_and_pad_nd(np.asarray(data), bbox, 0)).float()
    mode = "trilinear" if len(patch) == 3 else "bilinear"
    view = F.interpolate(crop[None], size=tuple(patch), mode=mode, align_corners=False)[0]
    flip = [a + 1 for a in range(len(mirror)) if mirror[a]]
    return view.flip(flip) if flip else view


def test_scaled_views_are_the_recorded_boxes_resized_and_overlap_as_promised(world):
    np.random.seed(10)
    dataset, loader, config = _sampler(world, scale_range=SCALES)
    patch = np.array(config.patch_size)
    ratios = []
    for _ in range(3):
        batch = next(loader)
        assert batch["view1"].shape == (3, 1, *patch) == batch["view2"].shape
        assert batch["size1"].shape == (3, 3) and batch["size1"].dtype == torch.float32
        for j, key in enumerate(batch["keys"]):
            data = dataset.load_case(key)[0]
            for v in ("1", "2"):
                size = batch["size" + v][j].numpy()
                assert np.all(size == np.round(size)), "boxes are whole case voxels"
                assert np.all(size >= np.floor(patch * SCALES[0] + 0.5)) and np.all(size <= patch * SCALES[1] + 0.5)
                expected = _expected_scaled_view(data, batch["start" + v][j], size, batch["mirror" + v][j], patch)
                torch.testing.assert_close(batch["view" + v][j], expected)
                ratios.append(size / patch)
            s1, s2 = batch["start1"][j].numpy(), batch["start2"][j].numpy()
            z1, z2 = batch["size1"][j].numpy(), batch["size2"][j].numpy()
            lo, hi = box_overlap(s1, z1, s2, z2)
            in_view_voxels = (hi - lo) * patch / np.maximum(z1, z2)  # the overlap in the larger box's view voxels
            assert np.all(in_view_voxels >= [min_view_overlap(p, SCALES) for p in patch])
    ratios = np.array(ratios)  # (views, D)
    assert ratios.min() < 0.9 and ratios.max() > 1.1, "views zoom in and out"
    assert np.all(ratios.max(1) - ratios.min(1) <= 1.0 / patch.min() + 1e-6), "one scale per view (isotropic)"


def test_a_scaled_view_voxel_sits_at_the_recorded_case_coordinate(world):
    """Independent closed form: a case whose channels are its own coordinates, resized, holds at view voxel v the
    case coordinate start + (v + 0.5) · size / patch − 0.5 (away from the box's edge, where the resize clamps)."""
    _, loader, config = _sampler(world, scale_range=SCALES)
    patch = np.array(config.patch_size)
    shape = (40, 100, 100)
    case = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))  # (3, *shape)
    for start, size in (((5, 20, 30), (22, 67, 67)), ((9, 40, 25), (11, 34, 34)), ((7, 30, 30), (16, 48, 48))):
        view = loader._crop(case, np.array(start), np.zeros(3, dtype=bool), "coordinates", np.array(size)).numpy()
        for a in range(3):
            v = np.arange(patch[a])
            expected = start[a] + (v + 0.5) * size[a] / patch[a] - 0.5
            inner = (expected >= start[a]) & (expected <= start[a] + size[a] - 1)  # not clamped at the box's edge
            middle = tuple(int(patch[b]) // 2 for b in range(3) if b != a)
            line = np.moveaxis(view[a], a, 0)[(slice(None), *middle)]  # channel a along axis a
            np.testing.assert_allclose(line[inner], expected[inner], atol=1e-4)
            np.testing.assert_allclose(line[~inner], np.clip(expected[~inner], start[a], start[a] + size[a] - 1),
                                       atol=1e-4)


def test_scaled_2d_views_share_the_slice_and_resize_in_plane(world_2d):
    np.random.seed(11)
    dataset, loader, config = _sampler(world_2d, "2d", "nnsslPretrain2d", batch=2, scale_range=SCALES)
    batch = next(loader)
    assert batch["view1"].shape == (2, 1, *config.patch_size) and batch["size1"].shape == (2, 2)
    for j, key in enumerate(batch["keys"]):
        data = np.asarray(dataset.load_case(key)[0])  # (c, z, y, x)
        matches = []
        for z in range(data.shape[1]):
            expected = [_expected_scaled_view(data[:, z], batch["start" + v][j], batch["size" + v][j],
                                              batch["mirror" + v][j], config.patch_size) for v in ("1", "2")]
            matches.append(torch.allclose(batch["view1"][j], expected[0], atol=1e-5)
                           and torch.allclose(batch["view2"][j], expected[1], atol=1e-5))
        assert any(matches), "both views are the recorded in-plane boxes of one slice"


def test_without_scaling_no_sizes_are_recorded(world):
    np.random.seed(12)
    _, loader, _ = _sampler(world)
    assert "size1" not in next(loader)


def test_scaling_refuses_bad_ranges_and_dense_correspondences(world):
    dataset, _, config = _sampler(world)
    with pytest.raises(ValueError, match=r"scale_range: expected \(lo, hi\) with 0 < lo <= hi, found \(1.4, 0.7\)"):
        TwoViewDataLoader(dataset, 2, config.patch_size, None, scale_range=(1.4, 0.7))
    with pytest.raises(ValueError, match=r"found '0.7,1.4'; pass two numbers"):
        TwoViewDataLoader(dataset, 2, config.patch_size, None, scale_range="0.7,1.4")  # an unparsed option
    with pytest.raises(ValueError, match="expected unscaled views for voxel correspondences"):
        TwoViewDataLoader(dataset, 2, config.patch_size, None, scale_range=SCALES, num_voxels=64)
