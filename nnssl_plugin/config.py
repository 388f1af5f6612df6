"""Method configurations: one frozen object per method; every default carries its reason. A variant is a config."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MocoConfig:
    method: str = "moco"
    temperature: float = 0.2  # MoCo v2 / paper 000
    momentum: float = 0.99  # key-encoder EMA; 0.999 suits 200 ImageNet epochs, short medical runs need fresher keys
    queue_size: int = 4096  # DESIGN §4: sized for nnU-Net's small batches (4096-16384)
    hidden_dim: int = 2048  # MoCo v2 projector
    out_dim: int = 128  # MoCo v2 projector
    zca: bool = False  # moco_zca: ZCA whitening of the bottleneck before pooling and the projector
    zca_eps: float = 1e-3  # regularises the smallest eigenvalues of the (small-sample) covariance
    zca_momentum: float = 0.1  # running (mean, W) for evaluation and export, like batch-norm statistics
    zca_min_samples_per_channel: float = 2.0  # groups are chosen so that samples >= 2 x channels per group
    local_weight: float = 0.0  # moco_zca: total = global + 0.5 * local (paper 000)
    local_grid: int = 2  # regions per axis of the views' overlap (2 -> 8 regions in 3d, 4 in 2d)
    local_temperature: float = 0.2  # paper 000
    family: str = "moco"  # which network and two-view loader the trainer assembles


@dataclass(frozen=True)
class HierConfig:
    method: str = "hier"
    temperature: float = 0.1  # paper 002: voxel NT-Xent
    num_voxels: int = 1024  # paper 002: corresponding voxels per view pair
    level_dim: int = 32  # paper 002: every pyramid level projected to the same width (hierarchical balance)
    project_levels: bool = True  # False (voxel2vec): raw level features concatenated, coarse levels dominate
    hidden_dim: int = 512  # projection head on the concatenated vector; small: it runs on every sampled voxel
    out_dim: int = 128  # paper 002: voxel embedding width
    restoration_weight: float = 10.0  # paper 002: total = NT-Xent + 10 * MSE; 0 disables the restorative branch
    augmentation: str = "local"  # "local": shuffle / Bezier / in-painting (paper 002); "global": voxel2vec's
    family: str = "hier"


MethodConfig = MocoConfig | HierConfig

METHODS: dict[str, MethodConfig] = {
    "moco": MocoConfig(),
    "moco_zca": replace(MocoConfig(), method="moco_zca", zca=True, local_weight=0.5),
    "hier": HierConfig(),
    "voxel2vec": replace(HierConfig(), method="voxel2vec", project_levels=False, restoration_weight=0.0,
                         augmentation="global"),
}


def method_config(name: str) -> MethodConfig:
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_from_trainer_name(name: str) -> str | None:
    """The method of a pretraining trainer name `nnsslPretrainer_<method>[_...]` (longest match: moco_zca, not
    moco), or None."""
    for method in sorted(METHODS, key=len, reverse=True):
        prefix = f"nnsslPretrainer_{method}"
        if name == prefix or name.startswith(prefix + "_"):
            return method
    return None
