"""The readout candidates: the last conv found in a planned U-Net's last stage, its output captured before the norm
(checked by recomputing the conv by hand), and each statistic against numpy."""
from __future__ import annotations

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnssl_plugin.methods.moco.readout import captured_output, last_conv, readouts


def _unet() -> PlainConvUNet:
    torch.manual_seed(0)
    return PlainConvUNet(1, 3, (4, 8, 8), nn.Conv3d, 3, (1, 2, 2), (2, 2, 2), 2, (2, 2), False, nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True})


def test_last_conv_output_is_the_prenorm_map_of_the_bottleneck():
    unet = _unet()
    stage = unet.encoder.stages[-1]
    block = stage[0].convs[-1]
    assert last_conv(stage) is block.conv
    x = torch.randn(2, 1, 8, 12, 12)
    with torch.no_grad(), captured_output(last_conv(stage)) as outputs:
        skips = unet.encoder(x)
    assert len(outputs) == 1
    conv_input = stage[0].convs[0](skips[-2])  # the stage's first block, then its last conv by hand
    expected = nn.functional.conv3d(conv_input, block.conv.weight, None, block.conv.stride, block.conv.padding)
    torch.testing.assert_close(outputs[0], expected)
    after = block.nonlin(block.norm(outputs[0].clone()))
    torch.testing.assert_close(after, skips[-1])  # the captured map is what the norm and nonlinearity then read
    assert not block.conv._forward_hooks  # the hook is gone after the block


def test_readouts_against_numpy():
    rng = np.random.default_rng(0)
    f, g = rng.normal(size=(3, 5, 2, 3, 4)), rng.normal(size=(3, 5, 2, 3, 4)) * 3 + 1
    out = readouts(torch.tensor(f), torch.tensor(g))
    flat_f, flat_g = f.reshape(3, 5, -1), g.reshape(3, 5, -1)
    np.testing.assert_allclose(out["avg"].numpy(), flat_f.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(out["max"].numpy(), flat_f.max(-1), rtol=1e-6)
    np.testing.assert_allclose(out["std"].numpy(), flat_f.std(-1), rtol=1e-5)
    np.testing.assert_allclose(out["prenorm_avg"].numpy(), flat_g.mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["prenorm_std"].numpy(), flat_g.std(-1), rtol=1e-5)


def test_moco_network_reads_the_prenorm_map_when_asked():
    from dataclasses import replace

    from nnssl_plugin.methods.moco.config import METHODS
    from nnssl_plugin.methods.moco.network import build_moco_network

    x1, x2 = torch.randn(2, 1, 8, 12, 12), torch.randn(2, 1, 8, 12, 12)
    for readout in ("output", "prenorm"):
        unet = _unet()
        network = build_moco_network(unet, replace(METHODS["moco"], global_readout=readout), 2, (8, 12, 12), ranks=1)
        network.eval()
        stage = network.encoder.stages[-1]
        with torch.no_grad(), captured_output(last_conv(stage)) as pre:
            skips = network.encoder(x1)
        expected = (pre[0] if readout == "prenorm" else skips[-1]).flatten(2).mean(2)
        with torch.no_grad():
            raw = network.pair_embeddings(x1, x2)["raw"]
        torch.testing.assert_close(raw, expected)
    network.train()
    network.pair_embeddings(x1, x2)["q"].sum().backward()  # the prenorm path keeps its gradient to the encoder
    assert last_conv(network.encoder.stages[-1]).weight.grad.abs().sum() > 0
    import copy
    import pickle
    pickle.loads(pickle.dumps(copy.deepcopy(network).cpu().state_dict()))  # the hooks do not stop a deep copy
