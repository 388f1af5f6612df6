"""Paired comparison over pretraining seeds: the mean paired difference, its 95 % interval, and the smallest
difference a design could detect.

For arms A and B scored on the same seeds s = 1 … n (same folds, same sampled voxels), the paired differences
d_s = A_s − B_s are the independent units:

    mean d̄ = (1/n) Σ d_s,   sd s_d = sqrt( Σ (d_s − d̄)² / (n − 1) ),   95 % CI  d̄ ± t_{0.975, n−1} · s_d / √n

(Student 1908; the paired t interval). The smallest detectable difference δ of a two-sided paired t-test at level α
with power 1 − β is the true mean difference at which the test rejects with probability 1 − β when the differences
have sd σ:

    P( |T| > t_{1−α/2, n−1} ) = 1 − β,   T ~ noncentral t(df = n − 1, nc = δ √n / σ),

solved for δ exactly (not the normal approximation (z_{1−α/2} + z_{1−β}) σ / √n, which understates δ at a few
seeds). `seeds_needed` inverts it for n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float  # d̄
    sd: float  # s_d (nan for n = 1)
    low: float  # 95 % interval (nan for n = 1)
    high: float

    @property
    def above(self) -> bool:
        """The interval lies above 0."""
        return self.low > 0

    def text(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (1 seed, no interval)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """The paired difference a − b (module docstring); `a` and `b` in seed order, equal length."""
    from scipy import stats

    if len(a) != len(b) or not a:
        raise ValueError(f"paired needs two equal, non-empty lists of per-seed values, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    if n == 1:
        return Paired(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half)


def power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Probability that the two-sided paired t-test at level `alpha` rejects when the true mean difference is
    `delta` and the differences have sd `sd`, with n seeds."""
    from scipy import stats

    if n < 2:
        return math.nan
    df, nc = n - 1, delta * math.sqrt(n) / sd
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    value = float(stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc))
    if not math.isfinite(value):  # scipy's nct fails for a large nc; there T is close to normal(nc, 1)
        value = float(stats.norm.sf(critical - nc) + stats.norm.cdf(-critical - nc))
    return value


def detectable_difference(sd: float, n: int, alpha: float = 0.05, target_power: float = 0.8) -> float:
    """The smallest true difference δ detected with `target_power` (module docstring); inf for n < 2."""
    from scipy.optimize import brentq

    if n < 2:
        return math.inf
    if sd == 0:
        return 0.0
    high = sd
    while power(high, sd, n, alpha) < target_power:
        high *= 2
    return float(brentq(lambda x: power(x, sd, n, alpha) - target_power, 0.0, high, xtol=1e-10 * sd))


def seeds_needed(sd: float, delta: float, alpha: float = 0.05, target_power: float = 0.8,
                 most: int = 1000) -> int | None:
    """The fewest seeds n ≥ 2 whose detectable difference is ≤ `delta`; None if more than `most` are needed."""
    for n in range(2, most + 1):
        if detectable_difference(sd, n, alpha, target_power) <= delta:
            return n
    return None
