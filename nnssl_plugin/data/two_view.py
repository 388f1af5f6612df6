"""Two-view sampler: two overlapping crops of one case with a known offset and recorded mirroring
(docs/ARCHITECTURE.md, "The methods").

An `nnUNetDataLoader` subclass, so it runs in nnU-Net's (multi-process) augmenter and reads nnU-Net's preprocessed
data. Per case: view 1 is a random crop of the planned patch (nnU-Net's `get_bbox`, may overhang and is padded with
0 as nnU-Net's loader pads); view 2 is the same crop shifted by a random offset of at most half a patch per axis,
so the views always overlap. Each view is mirrored on a random subset of the allowed axes and augmented on its
own. Start and mirroring are returned, so a voxel of one view maps exactly to the other (`nnssl_plugin.ops`).

`scale_range=(lo, hi)` (the MoCo family; None for the dense methods, whose voxel correspondences assume unscaled
views) adds a per-view scale change, MoCo v2's random resized crop (Chen et al. 2020, arXiv 2003.04297; Hassanpour
et al. 2024, arXiv 2402.14611) in 3D: each view draws one scale s, log-uniform in [lo, hi] (zooming in and out
alike), crops a box of round(patch · s) case voxels per axis — view 1's centred on nnU-Net's crop, view 2's centred
on view 1's up to a shift of max_shift × the smaller box (`ops.regions.second_box_offsets`; unscaled: today's ±half
a patch), so the boxes overlap by at least about half the larger box — and resizes it to the patch, trilinear
(bilinear in 2D), align_corners=False. View voxel v then sits at case coordinate
c = start + (v + 0.5) · size / patch − 0.5 (box start and size in case voxels; the resize clamps at the box's edge,
so a zoomed-in view's outermost voxels repeat the box's edge voxel, within half a case voxel). One s for all axes
(isotropic, as nnU-Net's own scaling): per-axis scales would also stretch organs, a different augmentation. A range
such as (0.7, 1.4), not ImageNet's area range 0.2–1 (a linear scale of 0.45–1 in 2D, 0.58–1 per axis in 3D, and
zooming in only): a patch holds a few organs whose size is a cue worth keeping, crops of a fifth of the patch's
volume are mostly one tissue or padding, and the views must keep enough overlap for the local loss's regions.
Without scaling no scale is drawn: the random stream, the crops and the batch keys are the unscaled sampler's.

Dense methods (hier, voxel2vec) also ask for `local_transforms` (corruptions applied after the view transforms;
the crop before them is returned as the restoration target) and `num_voxels` (corresponding voxels sampled here,
in the workers, preferring the body: voxels inside the case and above the crop's background, which nnU-Net's
preprocessing leaves at the image minimum — CT clipped at the foreground's 0.5 percentile, MR zero background).

`pairs_per_case=k` draws k consecutive crop pairs of the batch from one case (the dense methods' same-volume
negatives); each pair has its own nnU-Net crop and offset.

Batch keys: view1, view2 (b, c, *patch) float32; start1, start2 (b, D) int64, crop (box) start in case voxels;
mirror1, mirror2 (b, D) bool; keys (case identifiers); case_ids (b,) int64, each case's index in the loader's
sorted identifiers (MoCo masks same-case queue keys with it). D = 3 (3d) or 2 (2d; the slice axis is dropped).
With scale_range: size1, size2 (b, D) float32, each box's size in case voxels (integer-valued; absent without
scaling, where the boxes are the patch). With local_transforms: clean1, clean2 (b, c, *patch). With num_voxels:
voxels1, voxels2 (v, D) int64 view-voxel coordinates of the same case voxels (up to num_voxels per pair),
voxel_batch (v,) int64 the pair each belongs to.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from threadpoolctl import threadpool_limits

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.ops.correspondence import corresponding_voxels
from nnssl_plugin.ops.regions import MAX_SHIFT, box_size, second_box_offsets

GEOMETRY_KEYS = ("start1", "start2", "mirror1", "mirror2", "size1", "size2")  # batch keys the network reads on the CPU


class TwoViewDataLoader(nnUNetDataLoader):
    def __init__(self, data: nnUNetBaseDataset, batch_size: int, patch_size: Sequence[int],
                 label_manager: LabelManager, view_transforms: BasicTransform | None = None,
                 max_shift: float = MAX_SHIFT, mirror_axes: Sequence[int] | None = None,
                 local_transforms: BasicTransform | None = None, num_voxels: int | None = None,
                 scale_range: Sequence[float] | None = None, pairs_per_case: int = 1):
        """`max_shift`: largest offset between the views as a fraction of the patch (of the smaller box with
        scaling; < 1 keeps them overlapping); `mirror_axes`: spatial axes (of the patch) that may be flipped,
        default all; `local_transforms`, `num_voxels`, `scale_range`: see the module docstring; `pairs_per_case`:
        consecutive crop pairs of the batch drawn from one case (each pair its own crops), so a batch of b crops
        holds ceil(b / pairs_per_case) cases (Kats et al., vox2vec: 10 pairs from one volume)."""
        if int(pairs_per_case) < 1:
            raise ValueError(f"pairs_per_case must be >= 1, got {pairs_per_case}")
        if not 0.0 <= max_shift < 1.0:
            raise ValueError(f"max_shift must be in [0, 1) so that the views overlap, got {max_shift}")
        if scale_range is not None:
            found = scale_range
            try:
                scale_range = None if isinstance(found, str) else tuple(float(s) for s in found)
            except (TypeError, ValueError):
                scale_range = None
            if scale_range is None or len(scale_range) != 2 or not 0.0 < scale_range[0] <= scale_range[1]:
                raise ValueError(f"scale_range: expected (lo, hi) with 0 < lo <= hi, found {found!r}; pass two "
                                 f"numbers, e.g. (0.7, 1.4)")
            if num_voxels is not None:
                raise ValueError("scale_range with num_voxels: expected unscaled views for voxel correspondences "
                                 "(dense methods), found both; pass scale_range=None")
        super().__init__(data, batch_size, patch_size, patch_size, label_manager, oversample_foreground_percent=0.0,
                         transforms=view_transforms)
        spatial = self.patch_size[1:] if self.patch_size_was_2d else self.patch_size  # the network's patch
        self.spatial_patch = tuple(int(p) for p in spatial)
        self.max_shift = max_shift
        self.scale_range = scale_range
        self.mirror_axes = tuple(range(len(spatial))) if mirror_axes is None else tuple(mirror_axes)
        self.local_transforms = local_transforms
        self.num_voxels = num_voxels
        self.pairs_per_case = int(pairs_per_case)
        self.case_index = {key: i for i, key in enumerate(sorted(self.indices))}  # identifier -> case id

    def _crop(self, data, full_start: np.ndarray, mirror: np.ndarray, key: str = "?",
              full_size: np.ndarray | None = None) -> torch.Tensor:
        """Crop the box at `full_start` of `full_size` (case voxels, all data axes; default the patch; 0-padded
        outside the case), resize it to the patch (trilinear / bilinear, align_corners=False) and flip. A crop
        holding NaN/Inf (data preprocessed elsewhere: nnssl_prepare skips such cases) raises NnsslError naming
        case `key`."""
        size = self.patch_size if full_size is None else full_size
        bbox = [[int(s), int(s) + int(p)] for s, p in zip(full_start, size)]
        view = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()  # (c, *box)
        if not torch.isfinite(view).all():
            raise NnsslError(f"case {key} holds NaN/Inf values in its preprocessed data; re-run nnssl_prepare "
                             f"--overwrite (it skips such cases) or remove the case from the preprocessed folder")
        if self.patch_size_was_2d:
            view = view[:, 0]  # (c, y, x): the slice axis has size 1
        if tuple(view.shape[1:]) != self.spatial_patch:
            mode = "trilinear" if len(self.spatial_patch) == 3 else "bilinear"
            view = F.interpolate(view[None], size=self.spatial_patch, mode=mode, align_corners=False)[0]  # (c, *patch)
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

    def _boxes(self, crop_start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start1, size1, start2, size2), all data axes, of the two views' boxes around nnU-Net's crop at
        `crop_start`; without scaling the boxes are the patch and view 2 is shifted by at most max_shift · patch."""
        patch = np.asarray(self.patch_size, dtype=np.int64)  # all data axes (2d: slice axis 1)
        sizes = [patch.copy(), patch.copy()]
        if self.scale_range is not None:
            lo, hi = np.log(self.scale_range)
            for v in range(2):
                scale = float(np.exp(np.random.uniform(lo, hi)))  # log-uniform: zooming in and out alike
                sizes[v][-len(self.spatial_patch):] = [box_size(p, scale) for p in self.spatial_patch]
        start1 = crop_start + (patch - sizes[0]) // 2  # view 1's box centred on nnU-Net's crop
        d = len(self.spatial_patch)
        low, high = second_box_offsets(sizes[0][-d:], sizes[1][-d:], self.max_shift)
        offset = np.zeros(len(patch), dtype=np.int64)  # 2d: both views on the same slice
        offset[-d:] = [np.random.randint(a, b + 1) for a, b in zip(low, high)]
        return start1, sizes[0], start1 + offset, sizes[1]

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        if self.pairs_per_case > 1:  # same draws as one pair per case; every group of pairs repeats its first case
            keys = [keys[j - j % self.pairs_per_case] for j in range(len(keys))]
        d = len(self.spatial_patch)
        starts = np.zeros((2, self.batch_size, d), dtype=np.int64)
        sizes = np.zeros((2, self.batch_size, d), dtype=np.float32)
        mirrors = np.zeros((2, self.batch_size, d), dtype=bool)
        views: list[list[torch.Tensor]] = [[], []]
        cleans: list[list[torch.Tensor]] = [[], []]
        voxels: list[list[np.ndarray]] = [[], []]
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for j, key in enumerate(keys):
                data, _, _, _ = self._data.load_case(key)
                crop_start = np.asarray(self.get_bbox(data.shape[1:], False, None)[0], dtype=np.int64)
                full1, box1, full2, box2 = self._boxes(crop_start)
                body = None
                for v, (full, box) in enumerate(((full1, box1), (full2, box2))):
                    starts[v, j], sizes[v, j] = full[-d:], box[-d:]
                    mirrors[v, j] = [a in self.mirror_axes and np.random.uniform() < 0.5 for a in range(d)]
                    crop = self._crop(data, full, mirrors[v, j], key, box)
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
        if self.scale_range is not None:
            batch["size1"], batch["size2"] = torch.from_numpy(sizes[0]), torch.from_numpy(sizes[1])
        if self.local_transforms is not None:
            batch["clean1"], batch["clean2"] = torch.stack(cleans[0]), torch.stack(cleans[1])
        if self.num_voxels is not None:
            batch["voxels1"] = torch.from_numpy(np.concatenate(voxels[0]))
            batch["voxels2"] = torch.from_numpy(np.concatenate(voxels[1]))
            batch["voxel_batch"] = torch.from_numpy(np.concatenate([np.full(len(p), j, dtype=np.int64)
                                                                    for j, p in enumerate(voxels[0])]))
        return batch
