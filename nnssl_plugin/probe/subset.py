"""The labelled training cases of a label-efficiency probe: `n` of a fold's training cases, drawn by a seeded
permutation of their sorted names, so that for one seed the draws are nested (the 1 case of n = 1 is among the 2 of
n = 2, and so on) and a curve over n adds cases instead of swapping them."""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from nnssl_plugin.errors import NnsslError

T = TypeVar("T")


def nested_subset(cases: Sequence[T], n: int, seed: int, name=lambda case: case.name) -> list[T]:
    """The first `n` cases of `numpy.random.RandomState(seed).permutation` over the cases sorted by name."""
    if not 1 <= n <= len(cases):
        raise NnsslError(f"--train-cases {n}: the fold has {len(cases)} training case(s); pass 1 to {len(cases)}")
    ordered = sorted(cases, key=name)
    order = np.random.RandomState(seed).permutation(len(ordered))
    return [ordered[i] for i in order[:n]]
