"""One definition of the levels: `nnssl_probe` reads exactly the features `nnUNetTrainerSSLLinear` reads after
`initialize()`, for every kind of source (an export's plans, the pretrained-weights file it was exported from, the
export's weights file, random init against a random-init export), moco_zca's whitening included, on the phantom's
3d_cpu, 2d_cpu and a residual-encoder configuration."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.export import build_planned_network, export_weights
from nnssl_plugin.export_sources import read_source
from nnssl_plugin.families import level_set_of_method
from nnssl_plugin.modules.probe_levels import level_set_for, read_levels
from nnssl_plugin.nnunet_trainers.registry import trainer_class
from nnssl_plugin.plans import resolve_configuration
from nnssl_plugin.pretrained import FORMAT, architecture_hash, package_versions
from nnssl_plugin.probe.sources import load_frozen_source

LAB = "Dataset991_PhantomBTCV"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


@pytest.fixture(scope="module")
def target(world, tmp_path_factory):
    """A private copy of nnUNet_preprocessed/Dataset991 with a residual-encoder configuration derived from 3d_cpu,
    and an empty nnUNet_results. The trainer's constructor looks its data folder up (initialize() reads no case):
    the 2d one links to the 3d data."""
    root = tmp_path_factory.mktemp("probe_levels")
    folder = root / "nnUNet_preprocessed" / LAB
    shutil.copytree(world.preprocessed / LAB, folder, ignore=shutil.ignore_patterns("nnsslPlans_*"))
    (folder / "nnUNetPlans_2d").symlink_to(folder / "nnUNetPlans_3d_fullres")
    plans = json.loads((world.preprocessed / LAB / "nnUNetPlans.json").read_text())
    resenc = copy.deepcopy(resolve_configuration(plans, "3d_cpu"))
    kwargs = resenc["architecture"]["arch_kwargs"]
    kwargs["n_blocks_per_stage"] = kwargs.pop("n_conv_per_stage")
    resenc["architecture"]["network_class_name"] = RESENC
    plans["configurations"]["3d_cpu_resenc"] = resenc
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    return root, plans, json.loads((folder / "dataset.json").read_text())


@pytest.fixture
def env(target, monkeypatch):
    root, plans, dataset_json = target
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(root / "nnUNet_results"))
    return root / "nnUNet_preprocessed" / LAB, plans, dataset_json


def _pretrained_file(path, plans, configuration, dataset_json, method):
    """A pretrained-weights file as the pretrainer writes it, with weights and (moco_zca) a whitening that are not
    the identity, so every part of the loading path shows in the features."""
    torch.manual_seed(11)
    net = build_planned_network(plans, configuration, 1, dataset_json)
    encoder_only = method.startswith("moco")
    state = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.") or (
        not encoder_only and k.startswith("decoder.") and not k.startswith(("decoder.encoder.", "decoder.seg_layers")))}
    whitening = None
    if method == "moco_zca":
        c = net.encoder.output_channels[-1]
        groups, per = 2, c // 2
        a = torch.randn(groups, per, per)
        whitening = {"mean": torch.randn(groups, per), "w": a @ a.transpose(1, 2) / per + torch.eye(per),
                     "groups": groups, "eps": 1e-3, "mode": "hybrid", "momentum": 0.01, "batches": 7}
    architecture = resolve_configuration(plans, configuration)["architecture"]
    torch.save({"format": FORMAT, "method": method, "pretrained_prefixes": ["encoder"] if encoder_only else
                ["encoder", "decoder"], "network_weights": state, "whitening": whitening,
                "plans": {"plans_name": "nnsslPretrainPlans", "dataset_name": "Dataset990_PhantomUnlabelled",
                          "configuration": configuration, "architecture": architecture,
                          "architecture_sha256": architecture_hash(architecture), "patch_size": [1]},
                "num_input_channels": 1, "training": {}, "versions": package_versions()}, path)


def _linear_trainer(folder, plans_name, configuration, dataset_json):
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    trainer = trainer_class("nnUNetTrainerSSLLinear_1epochs_1iters")(dict(plans, continue_training=False),
                                                                     configuration, 0, dataset_json,
                                                                     torch.device("cpu"))
    trainer.initialize()
    return trainer.network


def _assert_same_levels(linear, source, configuration, plans):
    patch = resolve_configuration(plans, configuration)["patch_size"]
    x = torch.randn(2, 1, *patch, generator=torch.Generator().manual_seed(5))
    assert source.levels == linear.levels
    with torch.no_grad():
        expected, got = linear.features(x), read_levels(source.unet, x, source.levels)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


@pytest.mark.parametrize("configuration", ["3d_cpu", "2d_cpu", "3d_cpu_resenc"])
@pytest.mark.parametrize("method", ["moco_zca", "hier"])
def test_every_source_reads_the_linear_trainers_levels(env, tmp_path, configuration, method):
    folder, plans, dataset_json = env
    pretrained = tmp_path / "ssl_weights.pth"
    _pretrained_file(pretrained, plans, configuration, dataset_json, method)
    name = f"nnsslPlans_probe_{method}_{configuration}"
    weights = folder / f"{name}_weights.pth"
    export_weights(read_source(pretrained), plans, configuration, dataset_json, weights, folder / f"{name}.json",
                   name, "Dataset990_PhantomUnlabelled")
    linear = _linear_trainer(folder, name, configuration, dataset_json)
    assert linear.levels == ("encoder" if method == "moco_zca" else "decoder")
    assert hasattr(linear.unet, "bottleneck_whitening") == (method == "moco_zca")
    for text in (name, str(pretrained), str(weights), str(tmp_path)):  # the run folder holds ssl_weights.pth
        source = load_frozen_source(text, folder, plans, configuration, dataset_json, 1)
        assert source.whitened == (method == "moco_zca") and source.method == method
        _assert_same_levels(linear, source, configuration, plans)


def test_random_init_reads_the_levels_of_the_method_it_is_compared_with(env):
    folder, plans, dataset_json = env
    from nnssl_plugin.cli import export as export_cli

    assert export_cli.main(["-t", "991", "-c", "3d_cpu", "--random-init", "--seed", "3", "--plans-name",
                            "nnsslPlans_probe_random"]) == 0
    linear = _linear_trainer(folder, "nnsslPlans_probe_random", "3d_cpu", dataset_json)
    source = load_frozen_source("random", folder, plans, "3d_cpu", dataset_json, 1, levels_like="moco", seed=3)
    _assert_same_levels(linear, source, "3d_cpu", plans)  # the Linear trainer reads a random export's encoder
    decoder = load_frozen_source("random", folder, plans, "3d_cpu", dataset_json, 1, levels_like="hier", seed=3)
    assert decoder.levels == "decoder" and decoder.own_levels is None
    with pytest.raises(NnsslError, match="random init has no level set of its own; pass --levels-like"):
        load_frozen_source("random", folder, plans, "3d_cpu", dataset_json, 1)


def test_level_sets_of_methods_and_prefixes():
    assert [level_set_of_method(m) for m in ("moco", "moco_zca", "hier", "voxel2vec")] == \
        ["encoder", "encoder", "decoder", "decoder"]
    assert level_set_for(["encoder.stages"]) == "encoder"
    assert level_set_for(["decoder.stages", "decoder.transpconvs", "encoder.stages"]) == "decoder"
