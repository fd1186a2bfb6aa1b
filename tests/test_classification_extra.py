"""The classification extras (focal, softmax_focal, poly1_cross_entropy,
generalized_cross_entropy, multiclass_hinge, perceptron, multiclass_perceptron, sparsemax,
multiclass_sparsemax, ranking_softmax).

tests/test_parity.py compares every sample of their grids with the references of the specs:
torchvision's sigmoid_focal_loss transcribed on torch (torchvision does not import here),
kornia.losses.focal_loss, the paper's formula for generalized_cross_entropy (Zhang & Sabuncu
2018, written on torch: no library defines it), and optax's functions of the same names for
the rest. Here: values by hand, focal against optax.sigmoid_focal_loss, the conventions where
multiloss and its references differ (kornia's alpha and 'mean'), the gradient at ties (optax's
rule) and bad input."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import multiloss
from multiloss import testing

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
NAMES = ("focal", "softmax_focal", "poly1_cross_entropy", "generalized_cross_entropy",
         "multiclass_hinge", "perceptron", "multiclass_perceptron", "sparsemax",
         "multiclass_sparsemax", "ranking_softmax")


def _run(backend, name, inputs, wrt=(0,), sample_weight=None, **options):
    """Value and gradients (w.r.t. the inputs at positions ``wrt``) of the summed output."""
    value, grads = testing.value_and_grads(backend, name, inputs, wrt,
                                           sample_weight=sample_weight, **options)
    return np.sum(value), grads


def _optax_grad(fn, *args):
    value = jnp.sum(fn(*args))
    return np.asarray(value), np.asarray(jax.grad(lambda x: jnp.sum(fn(x, *args[1:])))(args[0]))


# ---------------------------------------------------------------------------------------------
# registration, docs


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_reference_and_edge_cases(name):
    info = multiloss.info(name)
    assert info["family"] == "classification"
    assert info["reference"] and info["formula"]
    ids = [s.id for s in testing.samples_for(multiloss.resolve(name), "float64")]
    assert any("empty" in i for i in ids)
    assert any("zero-sample-weights" in i for i in ids)
    assert len(ids) <= 40


def test_aliases():
    assert multiloss.resolve("sigmoid_focal").name == "focal"
    assert multiloss.resolve("sigmoid_focal_loss").name == "focal"
    assert multiloss.resolve("poly_loss_cross_entropy").name == "poly1_cross_entropy"
    assert multiloss.resolve("gce").name == "generalized_cross_entropy"
    assert multiloss.resolve("multiclass_sparsemax_loss").name == "multiclass_sparsemax"


def test_reference_names():
    assert "torchvision.ops.sigmoid_focal_loss" in multiloss.info("focal")["reference"]
    assert "kornia.losses.focal_loss" in multiloss.info("softmax_focal")["reference"]
    assert "Zhang & Sabuncu" in multiloss.info("gce")["reference"]
    for name in ("poly1_cross_entropy", "multiclass_hinge", "perceptron",
                 "multiclass_perceptron", "sparsemax", "multiclass_sparsemax", "ranking_softmax"):
        assert multiloss.info(name)["reference"].startswith("optax.")


# ---------------------------------------------------------------------------------------------
# values by hand


@pytest.mark.parametrize("backend", BACKENDS)
def test_focal_by_hand(backend):
    x = np.array([0.0, 2.0, -1.0])
    t = np.array([1.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-x))
    p_t = np.where(t == 1, p, 1 - p)
    alpha_t = np.where(t == 1, 0.25, 0.75)
    want = -alpha_t * (1 - p_t) ** 2 * np.log(p_t)
    v, _ = _run(backend, "focal", (x, t), reduction="none", wrt=())
    np.testing.assert_allclose(v, want.sum(), rtol=1e-14)
    # alpha < 0: no weighting (torchvision's alpha=-1)
    v, _ = _run(backend, "sigmoid_focal", (x, t), alpha=-1.0, gamma=0.0, reduction="mean",
                wrt=())
    np.testing.assert_allclose(v, -np.log(p_t).mean(), rtol=1e-14)
    # the default reduction is torchvision's, "none"
    out = multiloss.get("focal", backend)(x, t)
    np.testing.assert_allclose(np.asarray(out.tolist()), want, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_optax(backend, alpha):
    """optax.sigmoid_focal_loss, for the alphas it supports (None is multiloss's alpha < 0),
    values and gradients, logits where 1 - p_t does not round to 0 (gamma=0: the parity grid's
    torchvision reference)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)) * 4
    t = (rng.random((6, 4)) < 0.5).astype(float)
    t[0, :2] = [0.3, 0.8]
    for gamma in (2.0, 0.5):
        want, want_g = _optax_grad(
            lambda x, t, g=gamma: optax.sigmoid_focal_loss(x, t, alpha=alpha, gamma=g), x, t)
        v, (g,) = _run(backend, "focal", (x, t), reduction="sum",
                       alpha=-1.0 if alpha is None else alpha, gamma=gamma)
        np.testing.assert_allclose(v, want, rtol=1e-12)
        np.testing.assert_allclose(g, want_g, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_focal_saturated_logits(backend):
    # p exactly 0 or 1: torchvision's formula, finite values and gradients for gamma >= 1
    x = np.array([1e4, -1e4, 1e4, -1e4])
    t = np.array([1.0, 0.0, 0.0, 1.0])
    v, (g,) = _run(backend, "focal", (x, t), reduction="none")
    assert np.isfinite(v) and np.all(np.isfinite(g))
    np.testing.assert_allclose(v, 0.75 * 1e4 + 0.25 * 1e4)
    np.testing.assert_array_equal(g[:2], 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_focal_gamma0_is_cross_entropy(backend):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4, 3)) * 2
    t = rng.integers(0, 4, size=(5, 3))
    t[0, 0] = t[2, 1] = -100
    v, (g,) = _run(backend, "softmax_focal", (x, t), gamma=0.0, reduction="mean")
    xt = torch.tensor(x, requires_grad=True)
    ce = torch.nn.functional.cross_entropy(xt, torch.tensor(t))
    (ce_g,) = torch.autograd.grad(ce, xt)
    np.testing.assert_allclose(v, ce.item(), rtol=1e-13)
    np.testing.assert_allclose(g, ce_g.numpy(), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_focal_alpha_conventions(backend):
    """A number: kornia's 1 - alpha for class 0, alpha for the others; an array: alpha[t]."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3))
    t = np.array([0, 1, 2, 0, 1, 2])
    base = multiloss.get("softmax_focal", backend, reduction="none")(x, t)
    base = np.asarray(base.tolist())
    scalar = multiloss.get("softmax_focal", backend, reduction="none", alpha=0.3)(x, t)
    np.testing.assert_allclose(np.asarray(scalar.tolist()),
                               np.where(t == 0, 0.7, 0.3) * base, rtol=1e-14)
    a = np.array([0.1, 0.5, 0.9])
    w = np.array([2.0, 1.0, 0.5])
    per_class = multiloss.get("softmax_focal", backend, reduction="none", alpha=a, weight=w)(x, t)
    np.testing.assert_allclose(np.asarray(per_class.tolist()), a[t] * w[t] * base, rtol=1e-14)


def test_softmax_focal_mean_vs_kornia():
    """kornia's 'mean' divides by C times every element (ignored ones included); multiloss's
    by the elements not ignored. Their sums agree."""
    from kornia.losses import focal_loss

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3, 2))
    t = rng.integers(0, 3, size=(4, 2))
    t[1, 1] = -100
    kw = dict(alpha=0.25, gamma=2.0)
    xt, tt = torch.tensor(x), torch.tensor(t)
    k_sum = focal_loss(xt, tt, reduction="sum", **kw).item()
    k_mean = focal_loss(xt, tt, reduction="mean", **kw).item()
    for backend in BACKENDS:
        s = float(multiloss.get("softmax_focal", backend, reduction="sum", **kw)(x, t))
        m = float(multiloss.get("softmax_focal", backend, reduction="mean", **kw)(x, t))
        assert s == pytest.approx(k_sum, rel=1e-13)
        assert m == pytest.approx(k_sum / 7, rel=1e-13)  # 8 elements, 1 ignored
        assert k_mean == pytest.approx(k_sum / (3 * 8), rel=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generalized_cross_entropy_by_hand(backend):
    x = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    t = np.array([1, 0])
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    p_t = p[[0, 1], t]
    for q in (0.7, 1.0):
        v, _ = _run(backend, "generalized_cross_entropy", (x, t), q=q, wrt=())
        np.testing.assert_allclose(v, ((1 - p_t**q) / q).mean(), rtol=1e-14)
    # q = 1 is the MAE of the probabilities (1 - p_t); q -> 0 approaches cross-entropy
    v, _ = _run(backend, "gce", (x, t), q=1e-6, wrt=())
    np.testing.assert_allclose(v, -np.log(p_t).mean(), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_poly1_by_hand_and_index_equals_onehot(backend):
    x = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    t = np.array([1, 2])
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    want = -np.log(p[[0, 1], t]) + 2.0 * (1 - p[[0, 1], t])
    v, (g,) = _run(backend, "poly1_cross_entropy", (x, t), reduction="none")
    np.testing.assert_allclose(v, want.sum(), rtol=1e-14)
    v2, (g2,) = _run(backend, "poly1", (x, np.eye(3)[t]), reduction="none")
    np.testing.assert_allclose(v2, v, rtol=1e-15)
    np.testing.assert_allclose(g2, g, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranking_softmax_mean_is_optax_default(backend):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(3, 5)), rng.integers(0, 3, size=(3, 5)).astype(float)
    v, _ = _run(backend, "ranking_softmax", (x, y), wrt=())
    np.testing.assert_allclose(v, optax.losses.ranking_softmax_loss(x, y), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# non-smooth points: optax's gradients (the reference is differentiated with jax.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiclass_hinge_tie_splits_evenly(backend):
    # s + 1 - onehot = [2, 2, 1]: two maxima, each gets half the gradient (optax's jnp.max)
    x = np.array([[1.0, 1.0, 1.0]])
    t = np.array([2])
    _, want = _optax_grad(optax.losses.multiclass_hinge_loss, x, t)
    v, (g,) = _run(backend, "multiclass_hinge", (x, t), reduction="sum")
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(g, [[0.5, 0.5, -1.0]])
    assert v == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_perceptron_tie_gives_half_gradient(backend):
    x, y = np.array([0.0, 0.0, 1.0]), np.array([1.0, -1.0, -1.0])
    _, want = _optax_grad(optax.losses.perceptron_loss, x, y)
    _, (g,) = _run(backend, "perceptron", (x, y), reduction="sum")
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(g, [-0.5, 0.5, 1.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiclass_sparsemax_gradient_is_sparsemax_minus_onehot(backend):
    # ties, an entry at the boundary of the support, the target outside the support
    x = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, -3.0], [3.0, -1.0, 0.0]])
    t = np.array([1, 1, 0, 1])
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    _, want = _optax_grad(optax.losses.multiclass_sparsemax_loss, x, t)
    _, (g,) = _run(backend, "multiclass_sparsemax", (x, t), reduction="sum")
    np.testing.assert_allclose(g, p - np.eye(3)[t], atol=1e-15)
    np.testing.assert_allclose(g, want, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparsemax_knots(backend):
    # sparse_plus is continuously differentiable: gradient 0 at z = -1 and 1 at z = 1
    x = np.array([1.0, -1.0, 1.0, -1.0])
    y = np.array([1.0, 1.0, 0.0, 0.0])  # z = -x, -x, x, x
    _, want = _optax_grad(optax.losses.sparsemax_loss, x, y)
    v, (g,) = _run(backend, "sparsemax", (x, y), reduction="sum")
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(g, [0.0, -1.0, 1.0, 0.0])
    assert v == 2.0


# ---------------------------------------------------------------------------------------------
# the weighting contract, traces


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_focal_all_ignored(backend):
    x = np.zeros((3, 2))
    t = np.full(3, -100)
    v, (g,) = _run(backend, "softmax_focal", (x, t), reduction="mean")
    assert np.isnan(v) and np.all(g == 0)
    v, (g,) = _run(backend, "softmax_focal", (x, t), reduction="mean", empty_reduction="zero")
    assert v == 0 and np.all(g == 0)


@pytest.mark.parametrize("name", ["multiclass_hinge", "multiclass_perceptron",
                                  "multiclass_sparsemax", "poly1_cross_entropy"])
def test_out_of_range_index_under_jit_is_nan(name):
    loss = multiloss.get(name, backend="jax", reduction="none")
    out = jax.jit(lambda x, t: loss(x, t))(jnp.ones((2, 3)), jnp.array([1, 3]))
    assert np.isfinite(out[0]) and np.isnan(out[1])


# ---------------------------------------------------------------------------------------------
# bad input


BAD = [
    ("focal", {}, (np.zeros(3), np.zeros(4)), ValueError, "target: expected the shape of input"),
    ("focal", {}, (np.zeros(3), np.zeros(3, int)), TypeError, "target: expected floating"),
    ("focal", {}, (np.zeros(2), np.array([0.0, 1.5])), ValueError,
     "target: expected values in [0, 1], got 1.5"),
    ("softmax_focal", {}, (np.zeros(3), np.zeros(3, int)), ValueError,
     "input: expected logits of shape (N, C)"),
    ("softmax_focal", {}, (np.zeros((2, 3)), np.zeros((2, 1), int)), ValueError,
     "target: expected class indices of shape (2,)"),
    ("softmax_focal", {}, (np.zeros((2, 3)), np.array([0, 3])), ValueError,
     "target: expected class indices in [0, 3)"),
    ("softmax_focal", {"alpha": np.ones(2)}, (np.zeros((2, 3)), np.array([0, 1])), ValueError,
     "alpha: expected a number or one value per class, shape (3,), got shape (2,)"),
    ("softmax_focal", {"weight": np.ones(4)}, (np.zeros((2, 3)), np.array([0, 1])), ValueError,
     "weight: expected one weight per class, shape (3,), got shape (4,)"),
    ("poly1_cross_entropy", {}, (np.zeros((2, 3)), np.zeros((2, 2))), ValueError,
     "target: expected integer class indices of shape (2,) or class probabilities"),
    ("poly1_cross_entropy", {}, (np.zeros((2, 3)), np.array([0, -1])), ValueError,
     "target: expected class indices in [0, 3), got -1"),
    ("generalized_cross_entropy", {}, (np.zeros((2, 3)), np.zeros(2)), TypeError,
     "target: expected integer class indices"),
    ("multiclass_hinge", {}, (np.zeros((2, 3)), np.zeros((2, 3), int)), ValueError,
     "target: expected class indices of shape (2,)"),
    ("multiclass_hinge", {}, (np.zeros((2, 3)), np.array([0, 5])), ValueError,
     "target: expected class indices in [0, 3), got 5 at index (1,)"),
    ("multiclass_sparsemax", {}, (np.zeros((2, 3), int), np.array([0, 1])), TypeError,
     "input: expected floating-point scores"),
    ("multiclass_perceptron", {}, (np.zeros(()), np.array(0)), ValueError,
     "input: expected scores of shape (..., C)"),
    ("perceptron", {}, (np.zeros(3), np.ones(3, bool)), TypeError,
     "target: expected labels +1 / -1"),
    ("sparsemax", {}, (np.zeros(3), np.array([0.0, 1.0, 2.0])), ValueError,
     "target: expected labels 0 or 1, got 2.0 at index (2,)"),
    ("ranking_softmax", {}, (np.zeros((2, 3)), np.zeros((2, 4))), ValueError,
     "target: expected the shape of input"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,opts,inputs,exc,msg", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input(backend, name, opts, inputs, exc, msg):
    loss = multiloss.get(name, backend=backend, **opts)
    with pytest.raises(exc, match=re.escape(msg)):
        loss(*inputs)


@pytest.mark.parametrize("name,opts,msg", [
    ("focal", {"gamma": -1.0}, "gamma: expected a value in [0.0, inf]"),
    ("focal", {"alpha": 1.5}, "alpha: expected a value in [-inf, 1.0]"),
    ("softmax_focal", {"ignore_index": 1.5}, "ignore_index: expected an int"),
    ("generalized_cross_entropy", {"q": 0.0}, "q: expected a value in (0.0, 1.0]"),
    ("generalized_cross_entropy", {"q": 1.5}, "q: expected a value in (0.0, 1.0]"),
    ("poly1_cross_entropy", {"epsilon": "2"}, "epsilon: expected a real number"),
    ("softmax_focal", {"alpha": "x"}, "alpha: expected"),
])
def test_bad_options(name, opts, msg):
    with pytest.raises((TypeError, ValueError), match=re.escape(msg)):
        multiloss.get(name, backend="jax", **opts)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("e", [1, 2, 3, 2.0, 0.5, 1.5, 2.5, -1.0])
def test_torch_pow_matches_torch(dtype, e):
    """The focal factor's power (``(1 - p_t) ** gamma``): ``torch_pow`` gives torch.pow's
    bits for the integer exponents torch's kernel computes as products (1, 2, 3), and its
    value within 2 ulps elsewhere (torch's vectorised pow is within 1 ulp), the gradient too
    (XLA:CPU's general power is a scalar call per element: the products are also faster)."""
    from multiloss.losses.classification._fused_jax import torch_pow

    x = np.random.default_rng(3).uniform(0.0, 2.0, 257).astype(dtype)
    x[:3] = [0.0, 1.0, 1e-3]  # (results in the normal range: denormals are not the point)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    ref = t.pow(e)
    (gref,) = torch.autograd.grad(ref.sum(), t)
    out, vjp = jax.vjp(lambda v: torch_pow(v, e), jnp.asarray(x))
    (g,) = vjp(jnp.ones_like(out))
    eps = np.finfo(dtype).eps
    if e in (1, 2, 3):
        np.testing.assert_array_equal(np.asarray(out), ref.detach().numpy())
    else:
        np.testing.assert_allclose(np.asarray(out), ref.detach().numpy(), rtol=2 * eps, atol=0)
    np.testing.assert_allclose(np.asarray(g), gref.numpy(), rtol=4 * eps, atol=0)
