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


METHODS: dict[str, MocoConfig] = {
    "moco": MocoConfig(),
    "moco_zca": replace(MocoConfig(), method="moco_zca", zca=True, local_weight=0.5),
}


def method_config(name: str) -> MocoConfig:
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
