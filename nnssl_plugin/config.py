"""Method configurations: one frozen object per method; every default carries its reason. A variant is a config."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class MocoConfig:
    method: str = "moco"
    temperature: float = 0.2  # MoCo v2 (Chen et al. 2020, arXiv 2003.04297); Hassanpour et al. 2024 keep it
    momentum: float = 0.99  # key-encoder EMA; 0.999 suits 200 ImageNet epochs, short medical runs need fresher keys
    queue_size: int | None = None  # None: derived from batch and momentum (queue_horizon_ratio), not ImageNet's
    queue_horizon_ratio: float = 0.256  # MoCo v2's queue/EMA-horizon ratio: 65536/256 = 256 steps vs 1/(1-0.999)
    queue_min_size: int = 64  # floor of the derived size: 32 steps of keys at batch 2, still inside the EMA horizon
    min_queue_keys: int = 16  # the global InfoNCE waits for this many real keys: fewer make it a near-trivial choice
    hidden_dim: int = 2048  # MoCo v2 projector
    out_dim: int = 128  # MoCo v2 projector
    zca: bool = False  # whiten the bottleneck before pooling and the projector (moco: per channel; moco_zca: ZCA)
    zca_eps: float = 1e-3  # regularises the smallest eigenvalues of the (small-sample) covariance
    zca_mode: str = "hybrid"  # "hybrid": gradient through the batch's share of Σ, as the paper's batch whitening
    zca_momentum: float = 0.01  # running (mean, Σ) over ~100 steps: the key encoder's horizon, 200 images at batch 2
    zca_batch_share: float | None = None  # hybrid: None = zca_momentum; the paper's 2/64 moved crops 8 % (limit 5 %)
    zca_min_images_per_channel: float = 1.0  # groups only if batch/zca_momentum < channels: between-image Σ full rank
    # one channel per group: per-channel running standardisation, what the BatchNorm at the end of MoCo v2's ResNet
    # does over the batch (nnU-Net's encoder ends in InstanceNorm, whose pooled output barely varies between crops)
    zca_diagonal: bool = False
    local_weight: float = 0.0  # moco_zca: total = global + 0.5 * local (Hassanpour et al. 2024, arXiv 2402.14611)
    local_grid: int = 2  # regions per axis of the views' overlap (2 -> 8 regions in 3d, 4 in 2d)
    local_temperature: float = 0.2  # Hassanpour et al. 2024 (arXiv 2402.14611)
    view_scale: tuple[float, float] | None = None  # per-view random resized crop; off until (0.7, 1.4) is measured
    view_shift: float = 0.25  # largest offset between the views per axis, a fraction of the patch (0.5: at chance)
    key_update: str = "period"  # "period": key function frozen per queue turnover (no age cue); "step": MoCo v2's EMA
    pooling: str = "avg"  # MoCo v2's global average pool; "max": the average of an instance-normalised map barely varies
    family: str = "moco"  # which network and two-view loader the trainer assembles


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


MethodConfig = MocoConfig | HierConfig

METHODS: dict[str, MethodConfig] = {
    # MoCo v2 with its bottleneck standardised per channel by running statistics (zca_diagonal): the BatchNorm its
    # ResNet ends in. Plain MoCo v2 on nnU-Net's InstanceNorm encoder maps every crop to one vector: held-out loss at
    # chance through 1,000 steps with 5 recipes; standardised, it falls steadily (docs/RESULTS.md, "constant")
    "moco": replace(MocoConfig(), zca=True, zca_diagonal=True),
    "moco_zca": replace(MocoConfig(), method="moco_zca", zca=True, local_weight=0.5),
    "hier": HierConfig(),
    "voxel2vec": replace(HierConfig(), method="voxel2vec", project_levels=False, restoration_weight=0.0,
                         augmentation="global"),
}


def method_config(name: str) -> MethodConfig:
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


FIXED_FIELDS = ("method", "family")  # what makes the method itself; never an option


def parse_option(config: MethodConfig, key: str, text: str):
    """`text` as a value of `config`'s field `key`, by the field's annotation (int, float, bool, str, a tuple of
    floats written "a,b", `| None`)."""
    kinds = {f.name: str(f.type) for f in fields(config)}
    if key not in kinds or key in FIXED_FIELDS:
        options = sorted(k for k in kinds if k not in FIXED_FIELDS)
        raise ValueError(f"'{key}' is not an option of {config.method}; options: {', '.join(options)}")
    kind = kinds[key]
    if text.lower() == "none" and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("tuple[float"):
            return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{key}={text}: expected {kind}") from None
    return text


def with_options(config: MethodConfig, options: dict) -> MethodConfig:
    """`config` with fields replaced by `options` ({field: value}, values already typed; see parse_option)."""
    unknown = sorted(set(options) - {f.name for f in fields(config)} | (set(options) & set(FIXED_FIELDS)))
    if unknown:
        raise ValueError(f"{unknown} are not options of {config.method}")
    return replace(config, **options)
