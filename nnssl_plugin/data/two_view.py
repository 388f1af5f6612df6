"""Two-view sampler: two overlapping crops of one case with a known offset and recorded mirroring (DESIGN §3).

An `nnUNetDataLoader` subclass, so it runs in nnU-Net's (multi-process) augmenter and reads nnU-Net's preprocessed
data. Per case: view 1 is a random crop of the planned patch (nnU-Net's `get_bbox`, may overhang and is padded with
0 as nnU-Net's loader pads); view 2 is the same crop shifted by a random offset of at most half a patch per axis,
so the views always overlap. Each view is mirrored on a random subset of the allowed axes and augmented on its
own. Start and mirroring are returned, so a voxel of one view maps exactly to the other (`nnssl_plugin.ops`).

Batch keys: view1, view2 (b, c, *patch) float32; start1, start2 (b, D) int64, crop start in case voxels;
mirror1, mirror2 (b, D) bool; keys (case identifiers). D = 3 (3d) or 2 (2d; the slice axis is dropped).
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


class TwoViewDataLoader(nnUNetDataLoader):
    def __init__(self, data: nnUNetBaseDataset, batch_size: int, patch_size: Sequence[int],
                 label_manager: LabelManager, view_transforms: BasicTransform | None = None,
                 max_shift: float = 0.5, mirror_axes: Sequence[int] | None = None):
        """`max_shift`: largest offset between the views as a fraction of the patch (< 1 keeps them overlapping);
        `mirror_axes`: spatial axes (of the patch) that may be flipped, default all."""
        if not 0.0 <= max_shift < 1.0:
            raise ValueError(f"max_shift must be in [0, 1) so that the views overlap, got {max_shift}")
        super().__init__(data, batch_size, patch_size, patch_size, label_manager, oversample_foreground_percent=0.0,
                         transforms=view_transforms)
        spatial = self.patch_size[1:] if self.patch_size_was_2d else self.patch_size  # the network's patch
        self.spatial_patch = tuple(int(p) for p in spatial)
        self.max_offset = np.array([int(p * max_shift) for p in self.spatial_patch])
        self.mirror_axes = tuple(range(len(spatial))) if mirror_axes is None else tuple(mirror_axes)

    def _view(self, data, full_start: np.ndarray, mirror: np.ndarray) -> torch.Tensor:
        """Crop at `full_start` (case voxels, all data axes; 0-padded outside the case), flip, augment."""
        bbox = [[int(s), int(s) + int(p)] for s, p in zip(full_start, self.patch_size)]
        view = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()  # (c, *patch)
        if self.patch_size_was_2d:
            view = view[:, 0]  # (c, y, x): the slice axis has size 1
        flip = [a + 1 for a in range(len(mirror)) if mirror[a]]
        if flip:
            view = torch.flip(view, flip)
        if self.transforms is not None:
            view = self.transforms(image=view)["image"]
        return view

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        d = len(self.spatial_patch)
        starts = np.zeros((2, self.batch_size, d), dtype=np.int64)
        mirrors = np.zeros((2, self.batch_size, d), dtype=bool)
        views: list[list[torch.Tensor]] = [[], []]
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for j, key in enumerate(keys):
                data, _, _, _ = self._data.load_case(key)
                full1 = np.asarray(self.get_bbox(data.shape[1:], False, None)[0], dtype=np.int64)
                offset = np.array([np.random.randint(-m, m + 1) for m in self.max_offset], dtype=np.int64)
                if self.patch_size_was_2d:
                    offset = np.concatenate([[0], offset])  # both views on the same slice
                full2 = full1 + offset
                for v, full in enumerate((full1, full2)):
                    starts[v, j] = full[-d:]
                    mirrors[v, j] = [a in self.mirror_axes and np.random.uniform() < 0.5 for a in range(d)]
                    views[v].append(self._view(data, full, mirrors[v, j]))
        return {"view1": torch.stack(views[0]), "view2": torch.stack(views[1]),
                "start1": torch.from_numpy(starts[0]), "start2": torch.from_numpy(starts[1]),
                "mirror1": torch.from_numpy(mirrors[0]), "mirror2": torch.from_numpy(mirrors[1]), "keys": keys}
