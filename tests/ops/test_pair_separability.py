"""B/W and pair top-1 against loops in numpy and their closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.ops.pair_separability import between_within_ratio, pair_top1, top1_chance


def _bw_numpy(a: np.ndarray, b: np.ndarray) -> float:
    m, c = a.shape
    between = within = 0.0
    for ch in range(c):
        means = [(a[i, ch] + b[i, ch]) / 2 for i in range(m)]
        mu = sum(means) / m
        between += sum((x - mu) ** 2 for x in means) / (m - 1)
        within += sum((a[i, ch] - b[i, ch]) ** 2 / 2 for i in range(m)) / m
    return between / within


def _top1_numpy(a: np.ndarray, b: np.ndarray) -> float:
    both = np.concatenate([a, b])
    mu, sd = both.mean(0), both.std(0)
    sd[sd == 0] = 1
    a, b = (a - mu) / sd, (b - mu) / sd
    hits = 0
    for i in range(len(a)):
        sims = [a[i] @ b[j] / (np.linalg.norm(a[i]) * np.linalg.norm(b[j])) for j in range(len(b))]
        hits += int(np.argmax(sims) == i)
    return hits / len(a)


def test_against_numpy_loops():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)) * rng.uniform(0.1, 5, size=6) + rng.normal(size=6) * 10
    a, b = x + rng.normal(size=x.shape), x + rng.normal(size=x.shape)
    assert between_within_ratio(torch.tensor(a), torch.tensor(b)) == pytest.approx(_bw_numpy(a, b), rel=1e-12)
    assert pair_top1(torch.tensor(a), torch.tensor(b)) == pytest.approx(_top1_numpy(a, b))


def test_closed_forms():
    rng = np.random.default_rng(1)
    m, c = 40000, 3
    unrelated = between_within_ratio(torch.tensor(rng.normal(size=(m, c))), torch.tensor(rng.normal(size=(m, c))))
    assert unrelated == pytest.approx(0.5, abs=0.01)  # two independent draws: half the variance between
    x = rng.normal(size=(m, c)) * 2.0  # crop signal s = 2, view noise sigma = 1: (s² + σ²/2) / σ² = 4.5
    shared = between_within_ratio(torch.tensor(x + rng.normal(size=(m, c))), torch.tensor(x + rng.normal(size=(m, c))))
    assert shared == pytest.approx(4.5, rel=0.02)
    same = torch.tensor(rng.normal(size=(50, 4)))
    assert between_within_ratio(same, same.clone()) == float("inf")
    assert pair_top1(same, same.clone()) == 1.0


def test_a_constant_channel_and_bad_shapes():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20, 3))
    a[:, 1] = 7.0  # no spread in one channel: left at 0 after standardising, the others decide
    assert pair_top1(torch.tensor(a), torch.tensor(a.copy())) == 1.0
    with pytest.raises(ValueError):
        between_within_ratio(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError):
        pair_top1(torch.zeros(4, 3), torch.zeros(4, 2))


def test_groups_leave_the_other_crops_of_a_case_out():
    rng = np.random.default_rng(3)
    case = rng.normal(size=(5, 4)) * 5  # 5 cases, 3 crops each: crops of one case differ a little, views less
    groups = np.repeat(np.arange(5), 3)
    x = case[groups] + rng.normal(size=(15, 4)) * 0.3
    a, b = x + rng.normal(size=x.shape) * 0.01, x + rng.normal(size=x.shape) * 0.01
    a_t, b_t, g_t = torch.tensor(a), torch.tensor(b), torch.tensor(groups)
    assert pair_top1(a_t, b_t, g_t) == 1.0  # every view finds its partner once its case-mates are not candidates
    confused = np.repeat(case, 3, axis=0)  # crops of one case identical: only the case can be told
    assert pair_top1(torch.tensor(confused), torch.tensor(confused), g_t) == 1.0
    assert pair_top1(torch.tensor(confused), torch.tensor(confused)) <= 1 / 3 + 1e-9  # argmax: the first case-mate
    assert top1_chance(g_t, 15) == pytest.approx(1 / 13)
    assert top1_chance(None, 15) == pytest.approx(1 / 15)
