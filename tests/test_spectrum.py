"""nnssl_spectrum: a checkpoint whose bottleneck embeddings are constructed to span r directions reports an
effective rank of at most r (and near it); the random-init reference and the json/png outputs are there."""
from __future__ import annotations

import json

import pytest
import torch

from nnssl_plugin.cli import spectrum as spectrum_cli
from nnssl_plugin.export import build_planned_network
from nnssl_plugin.plans import resolve_configuration
from nnssl_plugin.pretrained import FORMAT

LAB = "Dataset991_PhantomBTCV"


def _rank_r_weights(world, tmp_path, r: int):
    """Our weights-file format with a random encoder whose last normalisation keeps only r channels varying:
    gamma = 0 makes every other channel the constant LeakyReLU(beta), so the pooled embeddings span <= r
    directions."""
    plans = json.loads((world.preprocessed / LAB / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((world.preprocessed / LAB / "dataset.json").read_text())
    torch.manual_seed(3)
    network = build_planned_network(plans, "3d_cpu", 1, dataset_json)
    last_norm = [m for m in network.encoder.stages[-1].modules() if isinstance(m, torch.nn.InstanceNorm3d)][-1]
    with torch.no_grad():
        last_norm.weight[r:] = 0.0  # the module, not a state-dict copy: the block also lists it under an alias
    state = {k: v.clone() for k, v in network.state_dict().items() if k.startswith("encoder.")}
    path = tmp_path / f"rank{r}.pth"
    torch.save({"format": FORMAT, "method": f"rank{r}", "pretrained_prefixes": ["encoder"], "network_weights": state,
                "whitening": None, "num_input_channels": 1, "training": {}, "versions": {},
                "plans": {"architecture": resolve_configuration(plans, "3d_cpu")["architecture"]}}, path)
    return path


@pytest.mark.parametrize("r", [2, 5])
def test_constructed_rank_r_embeddings_report_effective_rank_near_r(in_world, tmp_path, capsys, r):
    weights = _rank_r_weights(in_world, tmp_path, r)
    code = spectrum_cli.main(["-d", "991", "-c", "3d_cpu", "--checkpoints", str(weights), "--patches", "48",
                              "-o", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "out" / "spectrum.json").read_text())
    ranks = {m["name"]: m["effective_rank"] for m in result["results"]}
    assert set(ranks) == {"random init", f"rank{r} (rank{r}, raw)"}
    assert 0.6 * r < ranks[f"rank{r} (rank{r}, raw)"] <= r + 1e-6
    assert ranks["random init"] > r + 1, "the unconstrained network spans more directions"
    singular = next(m["singular_values"] for m in result["results"] if m["name"].startswith("rank"))
    assert all(v < 1e-10 * singular[0] for v in singular[r:]), "exactly r non-zero directions"
    assert (tmp_path / "out" / "spectrum.png").is_file() and "| random init |" in capsys.readouterr().out


def test_unknown_checkpoint_file_is_one_line(in_world, tmp_path, capsys):
    code = spectrum_cli.main(["-d", "991", "-c", "3d_cpu", "--checkpoints", str(tmp_path / "missing.pth")])
    assert code == 1 and "missing.pth not found" in capsys.readouterr().err
