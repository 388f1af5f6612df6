"""The benchmark's rows: every named variant resolves to a valid method config, is run in ORDER, and the report
pairs each with what it must be compared against."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(STUDIES))
    try:
        import benchmark
        import benchmark_report
        yield benchmark, benchmark_report
    finally:
        sys.path.remove(str(STUDIES))


def test_every_row_resolves_to_a_config_and_is_ordered(bench):
    benchmark, _ = bench
    assert sorted(benchmark.ORDER) == sorted(benchmark.VARIANTS)
    configs = {}
    for name in benchmark.VARIANTS:
        method, options, config = benchmark.variant_config(name)
        assert config["method"] == method and all(config[k] == v for k, v in options.items())
        configs[name] = tuple(sorted(config.items(), key=lambda kv: kv[0]))
    assert len(set(configs.values())) == len(configs)  # no two rows train the same thing
    _, options, config = benchmark.variant_config("hier_paper")
    assert config["level_dim"] == 0 and config["restoration_window"] == "kats" and config["shuffle"] == "genesis"


def test_the_report_compares_each_paper_recipe_ablation_and_moco_component_with_its_reference(bench):
    benchmark, report = bench
    from nnssl_plugin.families import level_set_of_method
    rows = list(benchmark.ORDER)
    own = {m: level_set_of_method(benchmark.VARIANTS[m][0]) for m in rows}
    pairs = {(a, b) for _, a, b, _ in report.comparisons(rows, own, "encoder")}
    assert ("hier_paper", "voxel2vec_paper") in pairs and ("hier_paper", "hier") in pairs
    assert {(m, "hier_paper") for m in rows if m.startswith("hier_paper_")} <= pairs
    assert {("mocov2_local", "mocov2"), ("mocov2_zca", "mocov2"), ("moco_zca", "mocov2")} <= pairs
    assert {(m, "random") for m in rows} <= pairs
