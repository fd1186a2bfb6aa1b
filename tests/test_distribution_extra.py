"""generalized_kl (optax.losses.generalized_kl_divergence) and js_divergence (kornia's
js_div_loss_2d): the libraries themselves, values by hand (the Jensen-Shannon divergence from
its definition in NumPy), the axis option, the zero entries, and bad inputs and options.
The parity grid against each spec's reference is in tests/test_parity.py."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")


_run = testing.value_and_grads  # value and gradients of the summed output


def _js_by_hand(p, q, axis=-1):
    """JSD(p, q) = 0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2, 0 log 0 = 0."""
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log(a / b), 0.0).sum(axis=axis)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


# ---------------------------------------------------------------------------------------------
# generalized_kl


@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None])
def test_generalized_kl_is_optax(axis):
    import optax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5))
    t = rng.uniform(0.0, 2.0, size=(3, 4, 5))
    f = lambda x, t: optax.losses.generalized_kl_divergence(x, t, axis=axis)  # noqa: E731
    want = np.asarray(f(jnp.asarray(x), jnp.asarray(t)))
    gx, gt = jax.grad(lambda x, t: jnp.sum(f(x, t)), argnums=(0, 1))(jnp.asarray(x),
                                                                    jnp.asarray(t))
    for backend in BACKENDS:
        v, (ax, at) = _run(backend, "generalized_kl", (x, t), wrt=(0, 1), axis=axis,
                           reduction="none")
        assert v.shape == want.shape
        np.testing.assert_allclose(v, want, rtol=1e-13)
        np.testing.assert_allclose(ax, np.asarray(gx), rtol=1e-13)
        np.testing.assert_allclose(at, np.asarray(gt), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generalized_kl_of_distributions_is_kl(backend):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), size=3)
    q = rng.dirichlet(np.ones(4), size=3)
    v, _ = _run(backend, "generalized_kl", (np.log(q), p), reduction="none")
    np.testing.assert_allclose(v, (p * np.log(p / q)).sum(-1), rtol=1e-12)
    kl, _ = _run(backend, "kl_div", (np.log(q), p), reduction="batchmean")
    assert float(kl) == pytest.approx(v.mean(), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generalized_kl_zero_target_gradient_is_nan_as_optax(backend):
    x = np.array([[0.5, -1.0]])
    t = np.array([[0.0, 2.0]])
    v, (gx, gt) = _run(backend, "generalized_kl", (x, t), wrt=(0, 1), reduction="sum")
    want = 2.0 * (math.log(2.0) + 1.0) + math.exp(0.5) + math.exp(-1.0) - 2.0
    assert float(v) == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(gx, [[math.exp(0.5), math.exp(-1.0) - 2.0]], rtol=1e-14)
    assert np.isnan(gt[0, 0]) and np.isfinite(gt[0, 1])  # optax's where(t == 0, 0, log t)


# ---------------------------------------------------------------------------------------------
# js_divergence


@pytest.mark.parametrize("backend", BACKENDS)
def test_js_by_hand(backend):
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(5), size=(2, 3))
    q = rng.dirichlet(np.ones(5), size=(2, 3))
    p[0, 0, :2] = 0.0
    q[0, 0, 1:3] = 0.0  # index 1: zero in both
    v, _ = _run(backend, "js_divergence", (q, p), reduction="none")
    np.testing.assert_allclose(v, _js_by_hand(p, q), rtol=1e-13)
    v2, _ = _run(backend, "jsd", (p, q), reduction="none")
    np.testing.assert_allclose(v2, v, rtol=1e-14)  # symmetric


@pytest.mark.parametrize("backend", BACKENDS)
def test_js_bounds(backend):
    a = np.array([[1.0, 0.0], [0.3, 0.7]])
    b = np.array([[0.0, 1.0], [0.3, 0.7]])
    v, (g,) = _run(backend, "js_divergence", (a, b), wrt=(0,), reduction="none")
    np.testing.assert_allclose(v, [math.log(2.0), 0.0], atol=1e-15)
    assert np.all(np.isfinite(g))
    # a zero in both inputs contributes nothing, also to the gradient (kornia)
    v, (g,) = _run(backend, "js_divergence", (np.array([0.0, 0.5, 0.5]), np.array([0.0, 1.0, 0.0])),
                   wrt=(0,), reduction="sum")
    assert g[0] == 0.0 and np.all(np.isfinite(g))


def test_js_is_kornia():
    import kornia.losses

    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(12), size=(2, 3)).reshape(2, 3, 3, 4)
    q = rng.dirichlet(np.ones(12), size=(2, 3)).reshape(2, 3, 3, 4)
    pt = torch.tensor(p, requires_grad=True)
    want = kornia.losses.js_div_loss_2d(pt, torch.tensor(q), reduction="none")
    (gwant,) = torch.autograd.grad(want.sum(), pt)
    for backend in BACKENDS:
        v, (g,) = _run(backend, "js_divergence", (p, q), wrt=(0,), axis=(2, 3),
                       reduction="none")
        np.testing.assert_allclose(v, want.detach().numpy(), rtol=1e-13)
        np.testing.assert_allclose(g, gwant.numpy(), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_axis_shapes_and_sample_weight(backend):
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(4), size=(2, 3))
    q = rng.dirichlet(np.ones(4), size=(2, 3))
    for axis, shape in [(-1, (2, 3)), (0, (3, 4)), ((1, 2), (2,)), (None, ())]:
        loss = multiloss.get("js_divergence", backend, axis=axis, reduction="none")
        assert tuple(np.shape(loss(p, q))) == shape
    # "mean" with sample weights averages the per-distribution divergences
    sw = np.array([[1.0, 0.0, 2.0], [0.5, 0.5, 1.0]])
    per = _js_by_hand(q, p)
    loss = multiloss.get("js_divergence", backend)
    got = loss(p, q, sample_weight=sw)
    assert float(got) == pytest.approx((per * sw).sum() / sw.sum(), rel=1e-13)


# ---------------------------------------------------------------------------------------------
# bad inputs and options


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["generalized_kl", "js_divergence"])
def test_bad_inputs(backend, name):
    x = np.full((2, 3), 1.0 / 3)
    with pytest.raises(ValueError, match=re.escape(
            "target: expected the shape of input, (2, 3), got (2, 4)")):
        multiloss.get(name, backend)(x, np.zeros((2, 4)))
    with pytest.raises(TypeError, match=r"^input: expected a floating-point array, got int64"):
        multiloss.get(name, backend)(np.ones((2, 3), np.int64), x)
    with pytest.raises(TypeError, match=r"^target: expected a floating-point array"):
        multiloss.get(name, backend)(x, np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match=re.escape(
            "axis: expected axes in [-2, 2) for an input of rank 2, got 2")):
        multiloss.get(name, backend, axis=2)(x, x)
    with pytest.raises(ValueError, match=r"axis: expected distinct axes, got \(0, -2\)"):
        multiloss.get(name, backend, axis=(0, -2))(x, x)
    with pytest.raises(ValueError, match=re.escape(
            "axis: expected axes in [0, 0) for an input of rank 0, got -1")):
        multiloss.get(name, backend)(np.array(0.5), np.array(0.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", ["last", 1.0, True, (), [0, "a"]])
def test_bad_axis_option(backend, axis):
    with pytest.raises(TypeError, match=r"^axis: expected None, an int or a non-empty tuple"):
        multiloss.get("generalized_kl", backend, axis=axis)


def test_names_resolve():
    assert multiloss.info("generalized_kl_divergence")["name"] == "generalized_kl"
    assert multiloss.info("convex_kl_divergence")["name"] == "generalized_kl"
    assert multiloss.info("jensen_shannon")["name"] == "js_divergence"
    for name in ("generalized_kl", "js_divergence"):
        opts = {o["name"]: o["default"] for o in multiloss.info(name)["options"]}
        assert opts["axis"] == -1 and opts["reduction"] == "mean"
