"""Fixed intensity scales from the plans: CT clip range and soft-tissue window in network units."""
from __future__ import annotations

import pytest

from nnssl_plugin.intensity import soft_tissue_windows, unit_ranges

PLANS = {"foreground_intensity_properties_per_channel": {
    "0": {"mean": 100.0, "std": 50.0, "percentile_00_5": -900.0, "percentile_99_5": 400.0},
    "1": {"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0}}}


def test_ct_clip_range_in_network_units_and_non_ct_equivalent():
    config = {"normalization_schemes": ["CTNormalization", "ZScoreNormalization"]}
    (lo, hi), other = unit_ranges(PLANS, config)
    assert (lo, hi) == pytest.approx(((-900 - 100) / 50, (400 - 100) / 50))
    assert other == (-3.0, 3.0)


def test_soft_tissue_window_is_w400_l40_inside_the_clip_range():
    config = {"normalization_schemes": ["CTNormalization", "ZScoreNormalization"]}
    (lo, hi), other = soft_tissue_windows(PLANS, config)
    assert (lo, hi) == pytest.approx(((-160 - 100) / 50, (240 - 100) / 50))
    narrow = {"foreground_intensity_properties_per_channel": {
        "0": {"mean": 0.0, "std": 10.0, "percentile_00_5": -50.0, "percentile_99_5": 100.0}}}
    assert soft_tissue_windows(narrow, {"normalization_schemes": ["CTNormalization"]})[0] == pytest.approx((-5, 10))
    assert other == (-2.0, 2.0)


def test_missing_ct_statistics_name_the_fix():
    with pytest.raises(ValueError, match="nnUNetv2_plan_and_preprocess"):
        unit_ranges({}, {"normalization_schemes": ["CTNormalization"]})
