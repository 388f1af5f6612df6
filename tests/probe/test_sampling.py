"""Class-balanced seeded voxel draws: counts, classes, no repeats, seeds, nnU-Net's label conventions."""
from __future__ import annotations

import numpy as np

from nnssl_plugin.probe.sampling import class_counts, draw_ranks, probe_labels, voxels_at_ranks


def _labels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, size=(6, 10, 12), p=[0.85, 0.1, 0.04, 0.01]).astype(np.int16)
    return labels


def _draw(maps, per_class, seed):
    counts = np.stack([class_counts(m, 4) for m in maps])
    ranks = draw_ranks(counts, per_class, seed)
    return [voxels_at_ranks(m, r) for m, r in zip(maps, ranks)], counts


def test_every_class_gets_min_of_n_and_its_voxels_and_only_its_own():
    maps = [_labels(s) for s in range(3)]
    drawn, counts = _draw(maps, 40, seed=0)
    got = np.zeros(4, dtype=int)
    for m, (voxels, classes) in zip(maps, drawn):
        assert np.array_equal(m[tuple(voxels.T)], classes), "each voxel has the class it was drawn for"
        assert len(np.unique(voxels, axis=0)) == len(voxels), "no voxel twice"
        got += np.bincount(classes, minlength=4)
    assert got.tolist() == np.minimum(40, counts.sum(0)).tolist()


def test_the_draw_depends_on_the_seed_only():
    maps = [_labels(s) for s in range(3)]
    first, _ = _draw(maps, 25, seed=3)
    again, _ = _draw(maps, 25, seed=3)
    other, _ = _draw(maps, 25, seed=4)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_cases_are_drawn_in_proportion_to_their_share_of_a_class():
    """Uniform over all voxels of a class: a case holding 90 % of class 1 gets about 90 % of its draw."""
    big = np.zeros((10, 10, 10), dtype=np.int16)
    big[:9] = 1
    small = np.zeros((10, 10, 10), dtype=np.int16)
    small[:1] = 1
    drawn, _ = _draw([big, small], 200, seed=0)
    share = (drawn[0][1] == 1).sum() / 200
    assert 0.84 < share < 0.96


def test_minus_one_is_background_and_the_ignore_label_is_never_drawn():
    seg = np.array([[[[-1, 0, 1, 5], [2, 5, 1, 0]]]], dtype=np.int8)  # (1, 1, 2, 4)
    labels = probe_labels(seg, ignore_label=5)
    assert labels.tolist() == [[[0, 0, 1, -1], [2, -1, 1, 0]]]
    assert class_counts(labels, 3).tolist() == [3, 2, 1]
    ranks = draw_ranks(class_counts(labels, 3)[None], 10, seed=0)
    voxels, classes = voxels_at_ranks(labels, ranks[0])
    assert len(classes) == 6 and (labels[tuple(voxels.T)] >= 0).all()
