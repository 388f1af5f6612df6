"""Reading an upsampled feature map at voxels equals F.interpolate's full map read there."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnssl_plugin.probe.points import upsampled_at


@pytest.mark.parametrize("size,out", [((2, 3, 3), (16, 48, 48)), ((4, 6, 6), (16, 48, 48)), ((1, 3, 3), (8, 12, 12)),
                                      ((8, 12, 12), (8, 12, 12)), ((3, 5), (48, 40)), ((12, 10), (12, 10))])
def test_equals_interpolate_of_the_whole_map_at_the_voxels(size, out):
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 5, *size, generator=g)
    voxels = torch.stack([torch.randint(0, o, (300,), generator=g) for o in out], 1)
    full = F.interpolate(feature, size=out, mode="trilinear" if len(out) == 3 else "bilinear", align_corners=False)
    expected = full[0][(slice(None), *voxels.t())].t()
    torch.testing.assert_close(upsampled_at(feature, voxels, out), expected, rtol=0, atol=1e-5)


def test_full_resolution_is_read_exactly():
    feature = torch.randn(1, 3, 4, 6, 5)
    voxels = torch.tensor([[0, 0, 0], [3, 5, 4], [1, 2, 3]])
    expected = feature[0, :, voxels[:, 0], voxels[:, 1], voxels[:, 2]].t()
    assert torch.equal(upsampled_at(feature, voxels, (4, 6, 5)), expected)


def test_a_voxel_list_of_the_wrong_dimension_is_refused():
    with pytest.raises(ValueError, match="voxels"):
        upsampled_at(torch.zeros(1, 2, 4, 4, 4), torch.zeros(3, 2, dtype=torch.long), (8, 8, 8))
