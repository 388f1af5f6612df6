"""The label-efficiency draw of nnssl_probe: n cases, nested over n for one seed, independent of the input order."""
import numpy as np
import pytest

from nnssl_plugin.errors import NnsslError
from nnssl_plugin.probe.subset import nested_subset

NAMES = [f"case_{i:03d}" for i in range(9)]


def draw(names, n, seed):
    return nested_subset(names, n, seed, name=lambda s: s)


def test_nested_over_n_and_independent_of_order():
    chains = [draw(NAMES, n, 3) for n in (1, 2, 4, 9)]
    for small, large in zip(chains, chains[1:]):
        assert large[:len(small)] == small
    assert sorted(chains[-1]) == NAMES
    assert draw(list(reversed(NAMES)), 4, 3) == chains[2]


def test_is_numpy_permutation_of_sorted_names():
    expected = [NAMES[i] for i in np.random.RandomState(5).permutation(9)[:2]]
    assert draw(NAMES[::-1], 2, 5) == expected
    assert len({tuple(draw(NAMES, 2, s)) for s in range(10)}) > 1  # the seed matters


@pytest.mark.parametrize("n", [0, 10])
def test_out_of_range_is_one_line(n):
    with pytest.raises(NnsslError, match="pass 1 to 9"):
        draw(NAMES, n, 0)
