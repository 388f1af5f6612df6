"""The family table and the pretraining-network contract: every method has a family row, every row's network class
builds from a plan and satisfies the protocol, the views are options the two-view loader takes, the probe's level
set follows from the state the network actually exports, and no trainer-side module branches on a family's name."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.config import METHODS, method_config
from nnssl_plugin.data.two_view import TwoViewDataLoader
from nnssl_plugin.families import FAMILIES, family_of, level_set_of_method
from nnssl_plugin.modules.network_protocol import PlanContext, PretrainingNetwork
from nnssl_plugin.modules.probe_levels import LEVEL_SETS

ROOT = Path(__file__).resolve().parents[1]
STRIDES = ((1, 1, 1), (1, 2, 2), (2, 2, 2))
PLAN = PlanContext(num_input_channels=1, batch_size=2, patch_size=(8, 16, 16), stage_strides=STRIDES,
                   unit_ranges=((-3.0, 3.0),))
CT_PLANS = {"foreground_intensity_properties_per_channel": {"0": {"mean": 50.0, "std": 100.0,
                                                                  "percentile_00_5": -1000.0,
                                                                  "percentile_99_5": 1500.0}}}
CT_CONFIGURATION = {"normalization_schemes": ["CTNormalization"]}


def _unet() -> nn.Module:
    return PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [list(s) for s in STRIDES], 2, 3, [2, 2], True,
                         nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                         {"inplace": True})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_builds_through_its_family_row_into_a_network_that_keeps_the_contract(method):
    config = method_config(method)
    family = family_of(config)
    torch.manual_seed(0)
    network = family.network.from_plan(_unet(), config, PLAN)
    assert isinstance(network, PretrainingNetwork) and isinstance(network, family.network)
    assert network.config == config and network.min_cases >= 1 and network.sample_unit in ("crops", "voxels")
    assert isinstance(network.summary(), str) and network.summary()
    state = network.pretrained_state()
    exported = {key.split(".", 1)[0] for key in state}
    assert exported == set(network.pretrained_prefixes)  # the class declares exactly what the export carries
    # the probe reads the decoder pyramid exactly when decoder weights are exported (independent of the table)
    assert level_set_of_method(method) == ("decoder" if "decoder" in exported else "encoder")
    assert level_set_of_method(method) in LEVEL_SETS


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("is_2d", [False, True])
def test_every_family_views_are_options_the_two_view_loader_takes(method, is_2d):
    config = method_config(method)
    options = family_of(config).views(config, is_2d, CT_PLANS, CT_CONFIGURATION)
    accepted = set(inspect.signature(TwoViewDataLoader.__init__).parameters)
    assert options and set(options) <= accepted
    dense = "decoder" in family_of(config).network.pretrained_prefixes
    assert ("num_voxels" in options) == dense  # corresponding voxels only for the dense pretext
    if dense:
        assert options["num_voxels"] == config.num_voxels and options["mirror_axes"] == ()  # translation only
        assert ("local_transforms" in options) == (config.augmentation == "local")  # hier's corruptions


def test_a_config_naming_an_unknown_family_gets_one_line_naming_the_known_ones():
    from dataclasses import replace

    with pytest.raises(KeyError, match="names family 'mae'.*known: moco, hier"):
        family_of(replace(method_config("hier"), method="mae", family="mae"))


def test_every_family_row_is_used_by_a_method_and_rows_name_themselves():
    assert {config.family for config in METHODS.values()} == set(FAMILIES)
    assert all(name == row.name for name, row in FAMILIES.items())


def test_no_module_that_reads_the_table_branches_on_a_family_name():
    readers = [ROOT / "pretrain" / "trainer.py", ROOT / "nnssl_plugin" / "heldout.py",
               ROOT / "nnssl_plugin" / "modules" / "probe_levels.py", ROOT / "nnssl_plugin" / "probe" / "sources.py",
               ROOT / "nnssl_plugin" / "cli" / "demo.py"]
    branch = re.compile(r"""family\s*(==|!=|in)\s*['"(]|['"](moco|hier)['"]\s*(==|!=)\s*\S*family""")
    offenders = [f"{path.name}:{i}" for path in readers
                 for i, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert offenders == []
