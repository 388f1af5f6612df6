"""Kats et al.'s local voxel shuffling, checked against a block-by-block numpy loop over the same draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnssl_plugin.data.genesis_shuffle import (KATS_BLOCK_VOLUME_FRACTION, GenesisVoxelShuffle, genesis_block_side,
                                               genesis_num_blocks)


def _loop_reference(x: np.ndarray, starts: np.ndarray, side: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Every block read from the original, written in order (later writes win), one shared permutation."""
    out = x.copy()
    for start in starts:
        sl = (slice(None),) + tuple(slice(int(s), int(s + k)) for s, k in zip(start, side))
        block = x[sl].reshape(x.shape[0], -1)
        out[sl] = block[:, perm].reshape(x[sl].shape)
    return out


@pytest.mark.parametrize("spatial", [(16, 48, 48), (32, 128, 128), (40, 56)])
def test_kats_scale_blocks_and_count(spatial):
    side = genesis_block_side(spatial)
    assert list(side) == [max(1, s // 20) for s in spatial]
    n = genesis_num_blocks(spatial)
    volume = n * np.prod(side) / np.prod(spatial)
    assert KATS_BLOCK_VOLUME_FRACTION <= volume < KATS_BLOCK_VOLUME_FRACTION + np.prod(side) / np.prod(spatial)
    assert genesis_num_blocks((32, 128, 128)) == 5000  # Kats et al.'s crop (axes in any order): their 5,000 blocks


@pytest.mark.parametrize("spatial", [(8, 40, 40), (60, 60)])
def test_shuffle_equals_the_block_by_block_loop_and_shares_the_permutation_across_channels(spatial):
    np.random.seed(3)
    x = np.random.rand(2, *spatial).astype(np.float32)
    x[1] = x[0] * 2  # channel 1 determined by channel 0: one permutation for both keeps the relation
    t = GenesisVoxelShuffle()
    params = t.get_parameters(image=torch.from_numpy(x))
    out = t._apply_to_image(torch.from_numpy(x.copy()), **params).numpy()
    np.testing.assert_array_equal(out, _loop_reference(x, params["starts"], params["side"], params["perm"]))
    np.testing.assert_array_equal(out[1], out[0] * 2)
    moved = (out[0] != x[0]).mean()
    assert 0.15 < moved < 0.34, moved  # ~29 % of voxels inside a block; a few keep their value under the permutation


def test_non_contiguous_input_is_shuffled_in_place():
    np.random.seed(0)
    base = torch.rand(8, 40, 40, 2)
    img = base.permute(3, 0, 1, 2)  # (c, *spatial) not contiguous
    before = img.clone()
    out = GenesisVoxelShuffle()(image=img)["image"]
    assert out is img and not torch.equal(img, before)  # the caller's tensor holds the shuffled view
