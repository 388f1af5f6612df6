import math

import numpy as np
import pytest

from nnssl_plugin.evidence import fmt, mean_sd, separation


def test_mean_sd_matches_numpy_sample_sd():
    rng = np.random.default_rng(0)
    values = rng.normal(size=7).tolist()
    mean, sd = mean_sd(values)
    assert mean == pytest.approx(np.mean(values))
    assert sd == pytest.approx(np.std(values, ddof=1))


def test_single_value_has_no_spread():
    mean, sd = mean_sd([0.4])
    assert mean == 0.4 and math.isnan(sd)
    assert math.isnan(separation([0.4], [0.1]))


def test_separation_closed_form():
    a, b = [0.5, 0.6, 0.7], [0.1, 0.1, 0.4]  # sd_a = 0.1, sd_b = sqrt(0.03)
    assert separation(a, b) == pytest.approx((0.6 - 0.2) / math.sqrt(0.03))
    assert separation(b, a) == pytest.approx(-separation(a, b))
    assert separation([1, 1], [1, 1]) == 0.0
    assert separation([2, 2], [1, 1]) == math.inf


def test_fmt():
    assert fmt([0.5, 0.7]) == f"0.600 ± {np.std([0.5, 0.7], ddof=1):.3f} (2)"
    assert fmt([0.25]) == "0.250 (1)"


def test_pseudo_dice_curve_reads_both_numpy_formats(tmp_path):
    from nnssl_plugin.evidence import pseudo_dice_curve

    (tmp_path / "training_log_2026_1_1_00_00_00.txt").write_text(
        "2026-11-23 16:52:43.694112: Epoch 0 \n"
        "2026-11-23 16:52:43.694112: Pseudo dice [np.float32(0.0), np.float32(0.1979), np.float32(1e-3)] \n"
        "2026-11-23 16:52:43.694184: Epoch time: 2.47 s \n"
        "2026-11-23 16:52:47.125129: Pseudo dice [0.5, 0.25, 0.0] \n")
    assert pseudo_dice_curve(tmp_path) == pytest.approx([(0.1979 + 0.001) / 3, 0.75 / 3])
    assert pseudo_dice_curve(tmp_path / "missing") == []
