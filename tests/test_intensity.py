"""Fixed intensity scales from the plans: CT clip range and soft-tissue window in network units."""
from __future__ import annotations

import pytest

from nnssl_plugin.intensity import restoration_ranges, soft_tissue_windows, unit_ranges, vox2vec_windows

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


def test_kats_restoration_window_is_minus_175_to_250_hu_even_beyond_the_clip_range():
    config = {"normalization_schemes": ["CTNormalization", "ZScoreNormalization"]}
    (lo, hi), other = restoration_ranges(PLANS, config)
    assert (lo, hi) == pytest.approx(((-175 - 100) / 50, (250 - 100) / 50))  # -5.5, 3.0
    assert other == (-3.0, 3.0)
    clipped = {"foreground_intensity_properties_per_channel": {  # clip range ends at 209 HU, inside the window
        "0": {"mean": 94.0, "std": 71.0, "percentile_00_5": -429.0, "percentile_99_5": 209.0}}}
    (lo, hi), = restoration_ranges(clipped, {"normalization_schemes": ["CTNormalization"]})
    assert ((209 - 94) / 71 - lo) / (hi - lo) == pytest.approx((209 + 175) / 425)  # bone tops out at u = 0.90


def test_vox2vec_windows_are_its_hu_bounds_in_network_units():
    config = {"normalization_schemes": ["CTNormalization", "ZScoreNormalization"]}
    widest, narrowest = vox2vec_windows(PLANS, config)
    assert widest[0] == pytest.approx(((-1350 - 100) / 50, (1000 - 100) / 50))
    assert narrowest[0] == pytest.approx(((-1000 - 100) / 50, (300 - 100) / 50))
    assert widest[1][0] < narrowest[1][0] < narrowest[1][1] < widest[1][1]
