"""The hierarchical dense family's config, its methods and its default optimiser recipe (foundation layer: no torch
modules). hier: Kats, Hirsch, Heinrich 2024 (arXiv 2401.06473); voxel2vec: hier without level projections and
restoration, with vox2vec's per-view transforms (Goncharov et al. 2023, arXiv 2307.14725).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from nnssl_plugin.recipe import Recipe


@dataclass(frozen=True)
class HierConfig:
    method: str = "hier"
    temperature: float = 0.1  # Kats et al. 2024 (arXiv 2401.06473): voxel NT-Xent
    num_voxels: int = 1024  # Kats et al. 2024: corresponding voxels per view pair
    level_dim: int = 32  # Kats et al. 2024: every pyramid level projected to the same width (hierarchical balance);
    #                     0: the widest level's channel count, so no level is cut below its own rank
    train_level_projections: bool = True  # the paper trains them; False: frozen random (Kats et al.'s code holds
    #                                       its 1×1×1 convs in a plain list, outside the optimiser)
    project_levels: bool = True  # False (voxel2vec): raw level features concatenated, coarse levels dominate
    hidden_dim: int = 512  # projection head width; 0: the head's input width (Kats et al.: 160 → 160 → 160 → 128)
    out_dim: int = 128  # Kats et al. 2024: voxel embedding width
    head_layers: int = 3  # Kats et al. 2024 / vox2vec (Goncharov et al. 2023, arXiv 2307.14725): 3-layer MLP head
    head_batch_norm: bool = True  # BN over thousands of sampled voxels is well estimated (MoCo's 2 crops are not)
    restoration_weight: float = 10.0  # Kats et al. 2024: NT-Xent + 10 * MSE on [0, 1] intensities; 0 disables it
    restoration_window: str = "plans"  # "plans": the plans' CT clip range → [0, 1]; "kats": [−175, 250] HU →
    #                                    [0, 1] (Kats et al.); non-CT channels: ±3 sd either way (intensity.py)
    augmentation: str = "local"  # "local": shuffle / Bezier / in-painting (Kats et al.); "global": voxel2vec's
    shuffle: str = "wide"  # hier's voxel shuffle: "wide" blocks up to side/8 covering 10–25 % of the crop, each its
    #                        own permutation; "genesis": Models Genesis' many small blocks (Kats et al.'s scale)
    view_windows: str = "soft_tissue"  # voxel2vec's random window: "soft_tissue" narrows from the plans' clip range
    #                                    to a soft-tissue window; "vox2vec": vox2vec's HU bounds (Goncharov et al.)
    photometric_views: bool = False  # hier: voxel2vec's photometric view transforms before the local corruptions
    pairs_per_case: int = 1  # crop pairs drawn from one case in a batch (Kats et al.: 10 from one volume, so
    #                          negatives include same-patient voxels); must divide the batch size
    flips: bool = False  # Kats et al. and vox2vec use translation-only views
    family: str = "hier"

    def __post_init__(self):
        """One line naming the field and its allowed values (at `--option` parsing, before anything runs)."""
        for field, allowed in CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{self.method}: {field}={getattr(self, field)!r} is not one of {allowed}; pass "
                                 f"--option {field}={allowed[0]}")
        for field in ("level_dim", "hidden_dim"):
            if getattr(self, field) < 0:
                raise ValueError(f"{self.method}: {field}={getattr(self, field)} must be >= 0 (0: derived from the "
                                 f"network); pass --option {field}=0")
        if self.pairs_per_case < 1:
            raise ValueError(f"{self.method}: pairs_per_case={self.pairs_per_case} must be >= 1; pass --option "
                             f"pairs_per_case=1")


CHOICES = {"restoration_window": ("plans", "kats"), "shuffle": ("wide", "genesis"),
           "view_windows": ("soft_tissue", "vox2vec")}


METHODS: dict[str, HierConfig] = {
    "hier": HierConfig(),
    "voxel2vec": replace(HierConfig(), method="voxel2vec", project_levels=False, restoration_weight=0.0,
                         augmentation="global"),
}

# Adam 3e-4, constant, gradient clip 1.0 (Kats et al.'s code)
RECIPE = Recipe(optimizer="adamw", lr=3e-4, momentum=0.9, weight_decay=0.0, warmup_steps=0, schedule="constant",
                grad_clip=1.0)
