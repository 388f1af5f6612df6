"""Running ZCA whitening at batch 2 against numpy pooled moments and the issue's acceptance checks, on a stationary
synthetic stream: every image has its own mean (between-image covariance A) plus per-position noise (B)."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from nnssl_plugin.modules.whitening import RunningWhitening, apply_whitening, whitening_groups
from nnssl_plugin.ops.whitening import zca_matrix

C, SPATIAL = 8, (3, 3, 3)


def _factor(seed, scale):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(C, C)) * np.linspace(0.3, 1.5, C) * scale


A_FACTOR, B_FACTOR = _factor(100, 1.0), _factor(101, 0.4)
OFFSET = np.linspace(-2.0, 3.0, C)


def _images(n, rng):
    """n images (n, C, 3, 3, 3) float32: offset + image mean ~ N(0, A) + position noise ~ N(0, B)."""
    m = rng.normal(size=(n, C)) @ A_FACTOR.T + OFFSET  # (n, C)
    e = rng.normal(size=(n, int(np.prod(SPATIAL)), C)) @ B_FACTOR.T  # (n, positions, C)
    x = m[:, None, :] + e
    return torch.tensor(np.moveaxis(x, 2, 1).reshape(n, C, *SPATIAL), dtype=torch.float32)


def _flat(x):
    return x.movedim(1, -1).reshape(-1, x.shape[1]).double().numpy()  # (n * positions, C)


@functools.lru_cache(maxsize=None)
def _warmed(mode, groups, steps, eps, momentum, share, seed):
    rng = np.random.default_rng(seed)
    wh = RunningWhitening(C, groups, eps, momentum, mode, share).train()
    for _ in range(steps):
        wh.statistics(_images(2, rng))
    return wh, rng.bit_generator.state


def _warm(mode="hybrid", groups=1, steps=300, eps=1e-3, momentum=0.01, share=None, seed=0):
    """A RunningWhitening after `steps` batches of the stream, and the stream's generator from there (cached: each
    caller gets its own copies)."""
    wh, state = _warmed(mode, groups, steps, eps, momentum, share, seed)
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(state)
    return copy.deepcopy(wh), rng


def _pooled(wh, x):
    mean, w = wh.statistics(x)
    return apply_whitening(x.flatten(2).mean(2), mean, w)  # (n, C)


def test_first_update_gives_the_batch_moments_exactly():
    x = _images(2, np.random.default_rng(1))
    wh = RunningWhitening(C, 1, 1e-3, 0.01)
    wh.update(x)
    flat = _flat(x)
    np.testing.assert_allclose(wh.mean[0].numpy(), flat.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wh.cov[0].numpy(), np.cov(flat.T, bias=True), rtol=1e-4, atol=1e-5)
    assert int(wh.step) == 1


def test_running_moments_are_the_bias_corrected_ema_of_all_samples():
    """After t updates: the moments of all samples, batch s weighted (1 − m)^(t − s) (normalised)."""
    m, rng = 0.3, np.random.default_rng(2)
    batches = [_images(2, rng) for _ in range(4)]
    wh = RunningWhitening(C, 2, 1e-3, m)
    for x in batches:
        wh.update(x)
    flat = np.concatenate([_flat(x) for x in batches])
    per = len(flat) // len(batches)
    weights = np.repeat([(1 - m) ** (len(batches) - 1 - s) for s in range(len(batches))], per)
    weights /= weights.sum()
    mean = weights @ flat
    cov = (flat - mean).T @ ((flat - mean) * weights[:, None])
    for g in range(2):
        np.testing.assert_allclose(wh.mean[g].numpy(), mean[4 * g:4 * g + 4], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(wh.cov[g].numpy(), cov[4 * g:4 * g + 4, 4 * g:4 * g + 4], rtol=1e-4, atol=1e-4)
        lam, u = np.linalg.eigh(wh.cov[g].double().numpy())
        np.testing.assert_allclose(wh.w[g].numpy(), u @ np.diag((lam + 1e-3) ** -0.5) @ u.T, rtol=1e-4, atol=1e-4)


def test_pooled_pair_is_not_forced_to_be_negatives_at_batch_2():
    """Batch statistics make the two pooled whitened vectors exact negatives; running statistics do not."""
    wh, rng = _warm()
    cosines, batch_cosines = [], []
    for _ in range(20):
        x = _images(2, rng)
        z = _pooled(wh, x)
        cosines.append(float(torch.cosine_similarity(z[0], z[1], dim=0)))
        w, mean = zca_matrix(x.movedim(1, -1).reshape(-1, C), 1e-3)  # the old batch-statistics whitening
        zb = (x.flatten(2).mean(2) - mean) @ w
        batch_cosines.append(float(torch.cosine_similarity(zb[0], zb[1], dim=0)))
    assert np.allclose(batch_cosines, -1.0, atol=1e-4)
    assert min(cosines) > -0.95 and np.mean(cosines) > -0.5


@pytest.mark.parametrize("mode", ["hybrid", "running"])
def test_swapping_the_batch_mate_changes_a_crop_by_less_than_5_percent(mode):
    wh, rng = _warm(mode)
    for _ in range(10):
        a, b, c = _images(3, rng)
        za_b = _pooled(copy.deepcopy(wh), torch.stack([a, b]))[0]
        za_c = _pooled(copy.deepcopy(wh), torch.stack([a, c]))[0]
        assert (za_b - za_c).norm() < 0.05 * za_b.norm()


def test_held_out_whitened_covariance_is_identity_up_to_the_eps_factor():
    eps = 0.05
    wh, rng = _warm(groups=2, steps=800, eps=eps)
    wh.eval()
    held_out = _images(200, rng)
    z = _flat(wh(held_out))  # (200 * 27, C)
    for g in range(2):
        cov = np.cov(z[:, 4 * g:4 * g + 4].T, bias=True)
        lam, u = np.linalg.eigh(wh.cov[g].double().numpy())
        undo = np.diag(np.sqrt((lam + eps) / lam))  # divide by the ε-factor Λ / (Λ + ε)
        eig = np.linalg.eigvalsh(undo @ u.T @ cov @ u @ undo)
        assert eig.min() > 0.5 and eig.max() < 1.5, eig


@pytest.mark.parametrize("mode", ["hybrid", "running"])
def test_train_and_eval_outputs_agree_after_warm_up(mode):
    wh, rng = _warm(mode)
    x = _images(2, rng)
    train = wh(x)
    evaluated = wh.eval()(x)
    assert (train - evaluated).norm() < 0.05 * evaluated.norm()


def test_running_mode_is_a_fixed_linear_map_after_the_update():
    wh, rng = _warm("running", steps=5)
    x = _images(2, rng).requires_grad_()
    out = wh(x)
    mean, w = wh.mean[0].double().numpy(), wh.w[0].double().numpy()  # buffers after this step's update
    expected = (_flat(x.detach()) - mean) @ w
    np.testing.assert_allclose(_flat(out.detach()), expected, rtol=1e-4, atol=1e-4)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    np.testing.assert_allclose(_flat(x.grad), _flat(r) @ w.T, rtol=1e-4, atol=1e-4)


def test_hybrid_mode_differentiates_through_the_batch_statistics():
    wh, rng = _warm("hybrid", steps=5, share=0.3)
    wh = wh.double()
    x = _images(2, rng).double()[..., :1, :1, :2]  # 2 positions per image: a small gradcheck
    r = torch.randn_like(x)

    def f(inp):
        return (copy.deepcopy(wh)(inp) * r).sum()

    torch.autograd.gradcheck(f, (x.clone().requires_grad_(),))
    xg = x.clone().requires_grad_()
    f(xg).backward()
    fixed = _flat(r) @ copy.deepcopy(wh).statistics(x)[1][0].detach().numpy().T  # gradient if W were constant
    assert not np.allclose(_flat(xg.grad), fixed, rtol=1e-3, atol=1e-6)


def test_default_hybrid_forward_equals_running_mode_and_only_the_gradient_differs():
    """batch_share = momentum: the batch weighs in Σ what it weighs in the running estimate after the update."""
    hybrid, rng = _warm("hybrid", steps=20)
    running = copy.deepcopy(hybrid)
    running.mode = "running"
    x = _images(2, rng)
    xh, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yh, yr = hybrid(xh), running(xr)
    torch.testing.assert_close(yh, yr, rtol=1e-4, atol=1e-4)
    r = torch.randn_like(yh)
    (yh * r).sum().backward()
    (yr * r).sum().backward()
    assert not torch.allclose(xh.grad, xr.grad, rtol=1e-6, atol=1e-7)


def test_eval_uses_the_running_buffers_and_moves_nothing():
    wh, rng = _warm(steps=3)
    wh.eval()
    before = {k: v.clone() for k, v in wh.state_dict().items()}
    x = _images(2, rng)
    y = wh(x)
    expected = (_flat(x) - wh.mean[0].double().numpy()) @ wh.w[0].double().numpy()
    np.testing.assert_allclose(_flat(y), expected, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in wh.state_dict().items())


@pytest.mark.parametrize("mode", ["hybrid", "running"])
def test_a_non_finite_batch_leaves_the_running_state_untouched(mode):
    wh, rng = _warm(mode, steps=3)
    before = {k: v.clone() for k, v in wh.state_dict().items()}
    x = _images(2, rng)
    x[0, 0, 0, 0, 0] = float("nan")
    wh(x)
    assert all(torch.equal(before[k], v) for k, v in wh.state_dict().items())


def test_state_is_persistent_and_round_trips():
    wh, _ = _warm(steps=3, groups=2)
    assert set(wh.state_dict()) == {"mean", "w", "cov", "step"}
    fresh = RunningWhitening(C, 2, 1e-3, 0.01)
    fresh.load_state_dict(wh.state_dict())
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in wh.state_dict().items())


def test_groups_come_from_the_images_behind_the_estimate():
    assert whitening_groups(320, 2 / 0.01, 1.0) == 2  # 200 images < 320 channels: two groups of 160
    assert whitening_groups(80, 2 / 0.01, 1.0) == 1
    assert whitening_groups(80, 36, 1.0) == 4  # 20 channels per group
    with pytest.raises(ValueError, match="needs at least 1 image.* found 0.5 .*lower whitening_update_weight"):
        whitening_groups(3, 0.5, 1.0)


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="whitening_mode must be one of .* found 'batch'"):
        RunningWhitening(C, 1, 1e-3, 0.01, "batch")
