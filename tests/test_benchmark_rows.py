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


def test_moco_rows_are_scored_on_as_many_common_view_crops_as_the_training_hold_out(bench):
    """A MoCo pair is one query (a dense pair thousands): the MoCo rows' common views hold 4 crops per bottleneck
    channel like the training hold-out (`nnssl_plugin.heldout.batches_for_rank`), the dense rows keep 16 batches."""
    benchmark, _ = bench
    from nnssl_plugin.heldout import batches_for_rank
    phantom_bottleneck_channels, batch_size = 80, 2
    for name in benchmark.ORDER:
        expected = (batches_for_rank(phantom_bottleneck_channels, batch_size) if benchmark.VARIANTS[name][0].startswith(
            "moco") else 16)
        assert benchmark.common_view_batches(name) == expected, name


def test_the_common_views_tables_show_loss_and_top1_per_family(bench):
    """One table per family (its own view sets), loss / top-1 averaged over seeds, chance below it."""
    _, report = bench

    def record(loss, top1, negatives, crops):
        import math
        return {"loss": loss, "top1": top1, "chance_loss": math.log(negatives + 1), "chance_top1": 1 / (negatives + 1),
                "negatives": negatives, "crops": crops}

    views = {"hier": {0: {"clean": record(5.0, 0.02, 4095, 32), "hier": record(5.5, 0.01, 4095, 32)},
                      1: {"clean": record(4.0, 0.04, 4095, 32), "hier": record(4.5, 0.03, 4095, 32)}},
             "moco": {0: {"clean": record(5.7, 0.10, 309, 320), "moco": record(5.6, 0.20, 309, 320)}}}
    text = "\n".join(report._common_view_lines(views))
    assert "| hier | 2 | 4.500 / 0.030 | 5.000 / 0.020 |" in text
    assert "| moco | 1 | 5.700 / 0.100 | 5.600 / 0.200 |" in text
    assert text.count("| run | seeds |") == 2 and "held-out crops per view set: 320" in text
