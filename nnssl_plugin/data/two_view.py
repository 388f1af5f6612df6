"""Two-view sampler: two overlapping crops of one case with a known offset and recorded mirroring (DESIGN §3).

An `nnUNetDataLoader` subclass, so it runs in nnU-Net's (multi-process) augmenter and reads nnU-Net's preprocessed
data. Per case: view 1 is a random crop of the planned patch (nnU-Net's `get_bbox`, may overhang and is padded with
0 as nnU-Net's loader pads); view 2 is the same crop shifted by a random offset of at most half a patch per axis,
so the views always overlap. Each view is mirrored on a random subset of the allowed axes and augmented on its
own. Start and mirroring are returned, so a voxel of one view maps exactly to the other (`nnssl_plugin.ops`).

Dense methods (hier, voxel2vec) also ask for `local_transforms` (corruptions applied after the view transforms;
the crop before them is returned as the restoration target) and `num_voxels` (corresponding voxels sampled here,
in the workers, preferring the body: voxels inside the case and above the crop's background, which nnU-Net's
preprocessing leaves at the image minimum — CT clipped at the foreground's 0.5 percentile, MR zero background).

Batch keys: view1, view2 (b, c, *patch) float32; start1, start2 (b, D) int64, crop start in case voxels;
mirror1, mirror2 (b, D) bool; keys (case identifiers); case_ids (b,) int64, each case's index in the loader's
sorted identifiers (MoCo masks same-case queue keys with it). D = 3 (3d) or 2 (2d; the slice axis is dropped).
With local_transforms: clean1, clean2 (b, c, *patch). With num_voxels: voxels1, voxels2 (v, D) int64 view-voxel
coordinates of the same case voxels (up to num_voxels per pair), voxel_batch (v,) int64 the pair each belongs to.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from threadpoolctl import threadpool_limits

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.ops.correspondence import corresponding_voxels


class TwoViewDataLoader(nnUNetDataLoader):
    def __init__(self, data: nnUNetBaseDataset, batch_size: int, patch_size: Sequence[int],
                 label_manager: LabelManager, view_transforms: BasicTransform | None = None,
                 max_shift: float = 0.5, mirror_axes: Sequence[int] | None = None,
                 local_transforms: BasicTransform | None = None, num_voxels: int | None = None):
        """`max_shift`: largest offset between the views as a fraction of the patch (< 1 keeps them overlapping);
        `mirror_axes`: spatial axes (of the patch) that may be flipped, default all; `local_transforms`,
        `num_voxels`: see the module docstring."""
        if not 0.0 <= max_shift < 1.0:
            raise ValueError(f"max_shift must be in [0, 1) so that the views overlap, got {max_shift}")
        super().__init__(data, batch_size, patch_size, patch_size, label_manager, oversample_foreground_percent=0.0,
                         transforms=view_transforms)
        spatial = self.patch_size[1:] if self.patch_size_was_2d else self.patch_size  # the network's patch
        self.spatial_patch = tuple(int(p) for p in spatial)
        self.max_offset = np.array([int(p * max_shift) for p in self.spatial_patch])
        self.mirror_axes = tuple(range(len(spatial))) if mirror_axes is None else tuple(mirror_axes)
        self.local_transforms = local_transforms
        self.num_voxels = num_voxels
        self.case_index = {key: i for i, key in enumerate(sorted(self.indices))}  # identifier -> case id

    def _crop(self, data, full_start: np.ndarray, mirror: np.ndarray, key: str = "?") -> torch.Tensor:
        """Crop at `full_start` (case voxels, all data axes; 0-padded outside the case) and flip. A crop holding
        NaN/Inf (data preprocessed elsewhere: nnssl_prepare skips such cases) raises NnsslError naming case `key`."""
        bbox = [[int(s), int(s) + int(p)] for s, p in zip(full_start, self.patch_size)]
        view = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()  # (c, *patch)
        if not torch.isfinite(view).all():
            raise NnsslError(f"case {key} holds NaN/Inf values in its preprocessed data; re-run nnssl_prepare "
                             f"--overwrite (it skips such cases) or remove the case from the preprocessed folder")
        if self.patch_size_was_2d:
            view = view[:, 0]  # (c, y, x): the slice axis has size 1
        flip = [a + 1 for a in range(len(mirror)) if mirror[a]]
        if flip:
            view = torch.flip(view, flip)
        return view

    def _augment(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented view, restoration target = the view before the local corruptions)."""
        if self.transforms is not None:
            view = self.transforms(image=view)["image"]
        if self.local_transforms is None:
            return view, view
        return self.local_transforms(image=view.clone())["image"], view

    def _body_mask(self, crop: torch.Tensor, case_shape: Sequence[int], start: np.ndarray, mirror: np.ndarray
                   ) -> np.ndarray:
        """Voxels of a (flipped) crop inside the case and above its background (1 % of the crop's range above its
        minimum inside the case); shape: the spatial patch."""
        inside = np.ones(self.spatial_patch, dtype=bool)
        for a, (s, p, n) in enumerate(zip(start, self.spatial_patch, case_shape)):
            axis = (np.arange(s, s + p) >= 0) & (np.arange(s, s + p) < n)
            if mirror[a]:
                axis = axis[::-1]
            inside &= axis.reshape([-1 if b == a else 1 for b in range(len(start))])
        image = crop[0].numpy()
        if not inside.any():
            return inside
        low, high = image[inside].min(), image[inside].max()
        return inside & (image > low + 0.01 * (high - low))

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        d = len(self.spatial_patch)
        starts = np.zeros((2, self.batch_size, d), dtype=np.int64)
        mirrors = np.zeros((2, self.batch_size, d), dtype=bool)
        views: list[list[torch.Tensor]] = [[], []]
        cleans: list[list[torch.Tensor]] = [[], []]
        voxels: list[list[np.ndarray]] = [[], []]
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for j, key in enumerate(keys):
                data, _, _, _ = self._data.load_case(key)
                full1 = np.asarray(self.get_bbox(data.shape[1:], False, None)[0], dtype=np.int64)
                offset = np.array([np.random.randint(-m, m + 1) for m in self.max_offset], dtype=np.int64)
                if self.patch_size_was_2d:
                    offset = np.concatenate([[0], offset])  # both views on the same slice
                full2 = full1 + offset
                body = None
                for v, full in enumerate((full1, full2)):
                    starts[v, j] = full[-d:]
                    mirrors[v, j] = [a in self.mirror_axes and np.random.uniform() < 0.5 for a in range(d)]
                    crop = self._crop(data, full, mirrors[v, j], key)
                    if v == 0 and self.num_voxels is not None:  # before augmentations, which work in place
                        body = self._body_mask(crop, data.shape[-d:], starts[0, j], mirrors[0, j])
                    view, clean = self._augment(crop)
                    views[v].append(view)
                    cleans[v].append(clean)
                if self.num_voxels is not None:
                    rng = np.random.default_rng(np.random.randint(2 ** 31 - 1))  # from the seeded global stream
                    pair = corresponding_voxels(starts[0, j], starts[1, j], mirrors[0, j], mirrors[1, j],
                                                self.spatial_patch, self.num_voxels, body, rng)
                    for v in range(2):
                        voxels[v].append(pair[v])
        batch = {"view1": torch.stack(views[0]), "view2": torch.stack(views[1]),
                 "start1": torch.from_numpy(starts[0]), "start2": torch.from_numpy(starts[1]),
                 "mirror1": torch.from_numpy(mirrors[0]), "mirror2": torch.from_numpy(mirrors[1]), "keys": keys,
                 "case_ids": torch.tensor([self.case_index[k] for k in keys], dtype=torch.long)}
        if self.local_transforms is not None:
            batch["clean1"], batch["clean2"] = torch.stack(cleans[0]), torch.stack(cleans[1])
        if self.num_voxels is not None:
            batch["voxels1"] = torch.from_numpy(np.concatenate(voxels[0]))
            batch["voxels2"] = torch.from_numpy(np.concatenate(voxels[1]))
            batch["voxel_batch"] = torch.from_numpy(np.concatenate([np.full(len(p), j, dtype=np.int64)
                                                                    for j, p in enumerate(voxels[0])]))
        return batch
