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
    level_dim: int = 32  # Kats et al. 2024: every pyramid level projected to the same width (hierarchical balance)
    project_levels: bool = True  # False (voxel2vec): raw level features concatenated, coarse levels dominate
    hidden_dim: int = 512  # projection head on the concatenated vector; small: it runs on every sampled voxel
    out_dim: int = 128  # Kats et al. 2024: voxel embedding width
    head_layers: int = 3  # Kats et al. 2024 / vox2vec (Goncharov et al. 2023, arXiv 2307.14725): 3-layer MLP head
    head_batch_norm: bool = True  # BN over thousands of sampled voxels is well estimated (MoCo's 2 crops are not)
    restoration_weight: float = 10.0  # Kats et al. 2024: NT-Xent + 10 * MSE on [0, 1] intensities; 0 disables it
    augmentation: str = "local"  # "local": shuffle / Bezier / in-painting (Kats et al.); "global": voxel2vec's
    flips: bool = False  # Kats et al. and vox2vec use translation-only views
    family: str = "hier"


METHODS: dict[str, HierConfig] = {
    "hier": HierConfig(),
    "voxel2vec": replace(HierConfig(), method="voxel2vec", project_levels=False, restoration_weight=0.0,
                         augmentation="global"),
}

# Adam 3e-4, constant, gradient clip 1.0 (Kats et al.'s code)
RECIPE = Recipe(optimizer="adamw", lr=3e-4, momentum=0.9, weight_decay=0.0, warmup_steps=0, schedule="constant",
                grad_clip=1.0)
