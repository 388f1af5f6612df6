"""Projection head: MoCo's stays Linear-ReLU-Linear without BN (same checkpoint keys); the dense methods' head has
three layers with BatchNorm over the sampled voxels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnssl_plugin.config import method_config
from nnssl_plugin.modules.projector import ProjectionHead


def test_moco_head_is_linear_relu_linear_without_batch_norm_and_keeps_its_keys():
    head = ProjectionHead(16, 32, 8)
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert set(head.state_dict()) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}


def test_dense_head_has_three_layers_with_batch_norm_from_the_config():
    config = method_config("hier")
    head = ProjectionHead(96, config.hidden_dim, config.out_dim, config.head_layers, config.head_batch_norm)
    assert [type(m) for m in head.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert method_config("voxel2vec").head_layers == 3 and method_config("voxel2vec").head_batch_norm


def test_batch_norm_head_equals_a_numpy_forward_with_batch_statistics():
    torch.manual_seed(0)
    head = ProjectionHead(6, 5, 3, num_layers=3, batch_norm=True).train()
    x = torch.randn(40, 6) * 3 + 2
    got = head(x).detach().numpy()
    h = x.numpy().astype(np.float64)
    for i in (0, 3):
        lin, bn = head.net[i], head.net[i + 1]
        h = h @ lin.weight.detach().numpy().T
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + bn.eps) * bn.weight.detach().numpy() + bn.bias.detach().numpy()
        h = np.maximum(h, 0)
    h = h @ head.net[6].weight.detach().numpy().T + head.net[6].bias.detach().numpy()
    np.testing.assert_allclose(got, h / np.linalg.norm(h, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layers,bn", [(2, False), (3, True), (1, False)])
def test_head_outputs_unit_vectors(layers, bn):
    out = ProjectionHead(16, 32, 8, layers, bn)(torch.randn(10, 16))
    assert out.shape == (10, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(10))


def test_zero_layers_is_refused():
    with pytest.raises(ValueError, match="at least 1 layer"):
        ProjectionHead(4, 4, 4, num_layers=0)
