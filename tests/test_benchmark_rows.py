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


def test_the_spectrum_records_are_read_by_representation_and_paired_by_seed(bench, tmp_path):
    """Records as `nnssl_spectrum` writes them: the random init and each run's raw / whitened curves; the effective
    ranks are paired by seed (the mean of the per-seed differences), random init of the same seed included."""
    import json

    _, report = bench
    ranks = {("mocov2", 0): (70.0, None), ("mocov2", 1): (72.0, None), ("moco_zca", 0): (60.0, 30.0),
             ("moco_zca", 1): (65.0, 33.0)}
    random_rank = {0: 77.0, 1: 76.0}
    (tmp_path / "spectrum").mkdir()
    for (row, seed), (raw, white) in ranks.items():
        results = [{"name": "random init", "effective_rank": random_rank[seed], "singular_values": [2.0, 1.0]},
                   {"name": f"nnsslPretrainer_{row}_seed{seed} ({row}, raw)", "effective_rank": raw,
                    "singular_values": [4.0, 1.0]}]
        if white is not None:
            results.append({"name": f"nnsslPretrainer_{row}_seed{seed} ({row}, whitened)", "effective_rank": white,
                            "singular_values": [1.0, 1.0]})
        (tmp_path / "spectrum" / f"{row}_seed{seed}.json").write_text(json.dumps({"results": results}))
    spectra, comparisons = report._spectra(tmp_path, ["moco_zca", "mocov2"], [0, 1])
    assert {k: sorted(v) for k, v in spectra.items()} == {("moco_zca", "raw"): [0, 1], ("moco_zca", "whitened"): [0, 1],
                                                          ("mocov2", "raw"): [0, 1], ("random", "raw"): [0, 1]}
    by_name = {c["comparison"]: c for c in comparisons}
    assert by_name["moco_zca − mocov2 (raw)"]["mean"] == pytest.approx(((60 - 70) + (65 - 72)) / 2)
    assert by_name["mocov2 − random init (raw)"]["mean"] == pytest.approx(((70 - 77) + (72 - 76)) / 2)
    assert by_name["moco_zca − random init (raw)"]["n"] == 2
