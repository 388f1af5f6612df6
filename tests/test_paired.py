"""The paired statistics of the benchmark, against independent computations: scipy's paired t-test interval, and a
Monte-Carlo simulation (numpy) of the t-test's rejection rate at the detectable difference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from nnssl_plugin.paired import detectable_difference, paired, power, seeds_needed


def test_the_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 0.02, 6), rng.normal(0.29, 0.02, 6)
    result = paired(list(a), list(b))
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert result.n == 6
    assert result.mean == pytest.approx(float(np.mean(a - b)))
    assert result.sd == pytest.approx(float(np.std(a - b, ddof=1)))
    assert (result.low, result.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_the_issue_example_three_seeds_is_not_decided():
    """hier − voxel2vec per seed 0.030, 0.024, 0.005 (one fold): paired t = 2.6, df 2, interval across 0."""
    result = paired([0.030, 0.024, 0.005], [0.0, 0.0, 0.0])
    assert result.mean / (result.sd / math.sqrt(3)) == pytest.approx(2.6, abs=0.05)
    assert result.low < 0 < result.high and not result.above


def test_one_seed_has_no_interval():
    result = paired([0.3], [0.2])
    assert result.mean == pytest.approx(0.1) and math.isnan(result.low) and "no interval" in result.text()


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError):
        paired([0.1, 0.2], [0.1])


@pytest.mark.parametrize("n", [3, 6])
def test_the_detectable_difference_is_rejected_eighty_percent_of_the_time(n):
    sd = 0.013
    delta = detectable_difference(sd, n)
    rng = np.random.default_rng(n)
    d = rng.normal(delta, sd, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    rate = float(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)))
    assert rate == pytest.approx(0.8, abs=0.01)
    assert power(delta, sd, n) == pytest.approx(0.8, abs=1e-6)


def test_many_seeds_approach_the_normal_formula():
    sd, n = 0.01, 100
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert detectable_difference(sd, n) == pytest.approx(normal, rel=0.02)


def test_seeds_needed_is_the_first_n_that_reaches_delta():
    sd, delta = 0.013, 0.02
    n = seeds_needed(sd, delta)
    assert detectable_difference(sd, n) <= delta < detectable_difference(sd, n - 1)
    assert seeds_needed(0.5, 0.001, most=20) is None
