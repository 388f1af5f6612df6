"""The collapse measurement of Hassanpour et al. 2024 (arXiv 2402.14611, Fig. 1) for any dataset: pooled bottleneck
embeddings of the same patches under several checkpoints, their sorted singular spectra on one plot, the effective
rank of each.

Patches: `num_patches` crops of the planned patch size at seeded random positions of the dataset's preprocessed
cases (pass a dataset the checkpoints were not pretrained on to measure held-out patches). Each checkpoint is read
as `nnssl_export` reads it (our weights file or checkpoint, an export, a MIC-DKFZ nnssl checkpoint) and loaded into
the planned network's encoder; a freshly initialised network of the same plans is the reference. For `moco_zca`
sources the whitened embedding (the exported running whitening) is measured as well: every figure names the
representation it is of (raw or whitened).

Shape: embeddings (num_patches, bottleneck channels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

from nnssl_plugin.ops.pooling import avg_pool
from nnssl_plugin.export import build_planned_network, check_architecture, pretrained_prefixes, transfer
from nnssl_plugin.export_sources import read_source
from nnssl_plugin.modules.whitening import FrozenWhitening
from nnssl_plugin.ops.rank import effective_rank, singular_spectrum
from nnssl_plugin.plans import resolve_configuration


@dataclass
class Measurement:
    name: str  # checkpoint label and representation, e.g. "run_a (moco_zca, whitened)"
    embeddings: np.ndarray  # (num_patches, c)
    effective_rank: float
    spectrum: np.ndarray  # (c,) sorted singular values of the embedding covariance


def sample_patches(folder: str, patch_size: list[int], num_patches: int, seed: int) -> torch.Tensor:
    """Seeded random crops (num_patches, c, *patch) from the preprocessed cases in `folder` (0-padded like
    nnU-Net's loader where a case is smaller than the patch)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset = infer_dataset_class(folder)(folder)
    keys = sorted(dataset.identifiers)
    if not keys:
        raise ValueError(f"{folder} holds no preprocessed cases")
    rng = np.random.default_rng(seed)
    is_2d = len(patch_size) == 2
    crops = []
    for i in range(num_patches):
        data = np.asarray(dataset.load_case(keys[i % len(keys)])[0])  # (c, z, y, x)
        shape = data.shape[1:]
        patch = [1, *patch_size] if is_2d else list(patch_size)
        start = [int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(shape, patch)]
        crop = crop_and_pad_nd(data, [[a, a + p] for a, p in zip(start, patch)], 0)
        crops.append(torch.from_numpy(np.ascontiguousarray(crop[:, 0] if is_2d else crop)).float())
    return torch.stack(crops)


@torch.no_grad()
def pooled_bottleneck(network: torch.nn.Module, patches: torch.Tensor, batch: int = 4,
                      whitening: FrozenWhitening | None = None) -> np.ndarray:
    """Global-average-pooled bottleneck (n, c) of the network's encoder, whitened first if given."""
    network.eval()
    out = []
    for chunk in patches.split(batch):
        bottleneck = network.encoder(chunk)[-1]
        if whitening is not None:
            bottleneck = whitening(bottleneck)
        out.append(avg_pool(bottleneck))
    return torch.cat(out).numpy()


def _measure(name: str, z: np.ndarray) -> Measurement:
    t = torch.from_numpy(z)
    return Measurement(name, z, effective_rank(t), singular_spectrum(t).numpy())


def measure_checkpoints(checkpoints: list[Path], plans: dict, configuration: str, dataset_json: dict,
                        num_input_channels: int, patches: torch.Tensor, seed: int = 0,
                        include_random: bool = True) -> list[Measurement]:
    architecture = resolve_configuration(plans, configuration)["architecture"]
    results = []
    if include_random:
        torch.manual_seed(seed)
        network = build_planned_network(plans, configuration, num_input_channels, dataset_json)
        results.append(_measure("random init", pooled_bottleneck(network, patches)))
    for path in checkpoints:
        source = read_source(path)
        check_architecture(source, architecture, num_input_channels)
        network = build_planned_network(plans, configuration, num_input_channels, dataset_json)
        state, _ = transfer(network.state_dict(), source.state, pretrained_prefixes(network, source.encoder_only))
        network.load_state_dict(state)
        label = f"{_label(path)} ({source.method}"
        results.append(_measure(f"{label}, raw)", pooled_bottleneck(network, patches)))
        if source.whitening is not None:
            w = source.whitening
            whitening = FrozenWhitening(int(w["w"].shape[0]), int(w["w"].shape[1]))
            whitening.load_state_dict({"mean": w["mean"].float(), "w": w["w"].float()})
            results.append(_measure(f"{label}, whitened)", pooled_bottleneck(network, patches, whitening=whitening)))
    return results


def _label(path: Path) -> str:
    """A short name for a checkpoint: its run folder for files inside fold_all/fold_N, else the file name."""
    path = Path(path)
    if path.parent.name.startswith("fold_"):
        from nnssl_plugin.trainer_names import trainer_of_run_folder

        return trainer_of_run_folder(path.parent.parent.name)
    return path.stem
