"""multi_margin, multilabel_margin, soft_margin, multilabel_soft_margin, poisson_nll and
gaussian_nll: values worked out by hand from the formulas (independent of torch and of both
backends), the torch behaviours that the parity grid relies on, and bad input on both backends.
The parity against torch itself is in test_parity.py (every sample of every loss)."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")


def _value(out):
    return np.asarray(out.detach().numpy() if isinstance(out, torch.Tensor) else out)


def _call(name, backend, *inputs, sample_weight=None, **options):
    loss = multiloss.get(name, backend=backend, **options)
    if backend == "torch":
        inputs = [torch.as_tensor(x) for x in inputs]
        if sample_weight is not None:
            sample_weight = torch.as_tensor(sample_weight)
    return _value(loss(*inputs, sample_weight=sample_weight))


# ---------------------------------------------------------------------------------------------
# values by hand


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_margin_by_hand(backend):
    x = np.array([[0.1, 0.2, 0.4, 0.8], [1.0, 0.0, 2.0, 1.5]])
    y = np.array([3, 2])
    # row 0: target score 0.8; others: max(0, 1 - 0.8 + x_i) = 0.3, 0.4, 0.6 -> 1.3 / 4
    # row 1: target score 2.0; others: 0 (tie at 1 - 2 + 1 = 0), 0, 0.5 -> 0.5 / 4
    got = _call("multi_margin", backend, x, y, reduction="none")
    np.testing.assert_allclose(got, [1.3 / 4, 0.5 / 4], rtol=1e-15)
    got = _call("multi_margin", backend, x, y, reduction="none", p=2, margin=0.5,
                weight=np.array([1.0, 1.0, 3.0, 2.0]))
    # row 0, margin 0.5: 0.5 - 0.8 + x_i = -0.2, -0.1, 0.1 -> 0.01 / 4, times w[3] = 2
    # row 1: 0.5 - 2 + x_i = -0.5, -1.5, 0 -> 0, times w[2] = 3
    np.testing.assert_allclose(got, [2 * 0.01 / 4, 0.0], rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_margin_by_hand(backend):
    x = np.array([[0.1, 0.2, 0.4, 0.8]])
    # targets {3, 0} (read up to the first -1; the 1 after it is ignored); others {1, 2}:
    # j=3: 1 - 0.8 + 0.2, 1 - 0.8 + 0.4 = 0.4, 0.6;  j=0: 1 - 0.1 + 0.2, 1 - 0.1 + 0.4 = 1.1, 1.3
    got = _call("multilabel_margin", backend, x, np.array([[3, 0, -1, 1]]), reduction="none")
    np.testing.assert_allclose(got, [(0.4 + 0.6 + 1.1 + 1.3) / 4], rtol=1e-15)
    # a repeated target counts twice
    got = _call("multilabel_margin", backend, x, np.array([[3, 3, -1, 1]]), reduction="none")
    np.testing.assert_allclose(got, [2 * (0.3 + 0.4 + 0.6) / 4], rtol=1e-15)
    # a leading -1: no targets, loss 0
    got = _call("multilabel_margin", backend, x, np.array([[-1, 3, 0, 1]]), reduction="none")
    np.testing.assert_array_equal(got, [0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_margins_by_hand(backend):
    x = np.array([[0.5, -2.0, 3.0]])
    y = np.array([[1.0, -1.0, -1.0]])
    want = np.log1p(np.exp(-y * x))
    np.testing.assert_allclose(_call("soft_margin", backend, x, y, reduction="none"), want,
                               rtol=1e-15)
    t = np.array([[1.0, 0.0, 0.25]])
    w = np.array([2.0, 1.0, 0.5])
    sig = 1 / (1 + np.exp(-x))
    per = -(t * np.log(sig) + (1 - t) * np.log(1 - sig)) * w
    got = _call("multilabel_soft_margin", backend, x, t, reduction="none", weight=w)
    np.testing.assert_allclose(got, per.sum(-1) / 3, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_margin_overflows_like_torch(backend):
    # log1p(exp(1000)) is inf in torch's kernel (it is not softplus); multiloss keeps that
    got = _call("soft_margin", backend, np.array([-1000.0]), np.array([1.0]), reduction="none")
    assert got[0] == np.inf


@pytest.mark.parametrize("backend", BACKENDS)
def test_poisson_nll_by_hand(backend):
    x = np.array([0.5, -1.0, 2.0])
    t = np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(_call("poisson_nll", backend, x, t, reduction="none"),
                               np.exp(x) - t * x, rtol=1e-15)
    # Stirling term only where t > 1: t = 3 gets 3 log 3 - 3 + 0.5 log(6 pi)
    stirling = 3 * math.log(3) - 3 + 0.5 * math.log(2 * math.pi * 3)
    got = _call("poisson_nll", backend, x, t, reduction="none", full=True)
    np.testing.assert_allclose(got, np.exp(x) - t * x + [0, 0, stirling], rtol=1e-15)
    rate = np.array([0.0, 2.0, 0.5])
    got = _call("poisson_nll", backend, rate, t, reduction="none", log_input=False, eps=0.1)
    np.testing.assert_allclose(got, rate - t * np.log(rate + 0.1), rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_poisson_nll_integer_counts_in_the_input_dtype(backend):
    # torch computes the Stirling term of an int64 target in float32; multiloss in float64
    x = np.array([0.5, 0.25])
    t = np.array([7, 2])
    got = _call("poisson_nll", backend, x, t, reduction="none", full=True)
    tf = t.astype(np.float64)
    want = np.exp(x) - tf * x + tf * np.log(tf) - tf + 0.5 * np.log(2 * np.pi * tf)
    np.testing.assert_allclose(got, want, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_nll_by_hand(backend):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[0.0, 2.5], [3.0, 1.0]])
    v = np.array([[1e-8, 0.5], [0.0, 2.0]])
    vc = np.maximum(v, 1e-6)
    want = 0.5 * (np.log(vc) + (x - t) ** 2 / vc)
    np.testing.assert_allclose(_call("gaussian_nll", backend, x, t, v, reduction="none"), want,
                               rtol=1e-15)
    # one variance per row (the input's shape without its last dimension), full=True
    vr = np.array([0.5, 2.0])
    want = 0.5 * (np.log(vr[:, None]) + (x - t) ** 2 / vr[:, None]) + 0.5 * math.log(2 * math.pi)
    got = _call("gaussian_nll", backend, x, t, vr, reduction="none", full=True)
    np.testing.assert_allclose(got, want, rtol=1e-15)
    # a scalar variance (torch's Python float)
    got = _call("gaussian_nll", backend, x, t, np.array(2.0), reduction="sum")
    np.testing.assert_allclose(got, np.sum(0.5 * (np.log(2.0) + (x - t) ** 2 / 2.0)), rtol=1e-15)


def test_gaussian_nll_gradient_passes_straight_through_the_clamp():
    x, t, v = np.array([1.0]), np.array([0.0]), np.array([1e-8])
    vc = 1e-6
    want = 0.5 * (1 / vc - 1.0 / vc**2)  # at the clamped variance, as if not clamped
    loss = multiloss.get("gaussian_nll", backend="jax", reduction="sum")
    g = jax.grad(lambda v: loss(x, t, v), argnums=0)(jnp.asarray(v))
    np.testing.assert_allclose(np.asarray(g), [want], rtol=1e-15)
    tv = torch.tensor(v, requires_grad=True)
    multiloss.get("gaussian_nll", backend="torch", reduction="sum")(
        torch.tensor(x), torch.tensor(t), tv).backward()
    np.testing.assert_allclose(tv.grad.numpy(), [want], rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# tie gradients and values that only a trace hides


def test_margin_ties_pass_no_gradient_on_either_backend():
    x = np.array([[1.0, 0.0, 2.0, 1.5]])  # margin - x_y + x_0 = 1 - 2 + 1 = 0: a tie
    y = np.array([2])
    gj = jax.grad(lambda x: multiloss.get("multi_margin", backend="jax")(x, y))(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    multiloss.get("multi_margin", backend="torch")(xt, torch.tensor(y)).backward()
    np.testing.assert_array_equal(np.asarray(gj), [[0.0, 0.0, -0.25, 0.25]])
    np.testing.assert_array_equal(xt.grad.numpy(), [[0.0, 0.0, -0.25, 0.25]])


@pytest.mark.parametrize("name,target", [
    ("multi_margin", np.array([4])),
    ("multilabel_margin", np.array([[0, 4, -1, 0]])),
])
def test_margin_index_out_of_range_is_nan_under_jit(name, target):
    loss = multiloss.get(name, backend="jax")
    x = np.ones((1, 4))
    out = jax.jit(lambda x, t: loss(x, t))(x, target)
    assert np.isnan(np.asarray(out))


def test_negative_variance_is_nan_under_jit():
    loss = multiloss.get("gaussian_nll", backend="jax", reduction="none")
    out = jax.jit(loss)(np.zeros(2), np.zeros(2), np.array([1.0, -1.0]))
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_validate_false_skips_the_variance_check_on_jax():
    loss = multiloss.get("gaussian_nll", backend="jax", reduction="none", validate=False)
    out = loss(np.zeros(2), np.zeros(2), np.array([1.0, -1.0]))
    assert np.isnan(np.asarray(out)[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_of_the_margin_losses_follows_the_contract(backend):
    # torch's kernels return uninitialised memory for "sum" of an empty batch
    for name, t in (("multi_margin", np.zeros(0, np.int64)),
                    ("multilabel_margin", np.zeros((0, 3), np.int64))):
        assert _call(name, backend, np.zeros((0, 3)), t, reduction="sum") == 0.0
        assert np.isnan(_call(name, backend, np.zeros((0, 3)), t))
        assert _call(name, backend, np.zeros((0, 3)), t, empty_reduction="zero") == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_targets_for_the_margin_losses(backend):
    x = np.random.default_rng(0).normal(size=(3, 4))
    a = _call("multi_margin", backend, x, np.array([0, 3, 1], np.int32))
    b = _call("multi_margin", backend, x, np.array([0, 3, 1], np.int64))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# bad input


def _raises(exc, pattern, name, backend, *inputs, **options):
    with pytest.raises(exc, match=pattern):
        _call(name, backend, *inputs, **options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_margin_bad_input(backend):
    x = np.zeros((2, 4))
    _raises(ValueError, r"^target: expected class indices in \[0, 4\), got 4 at index \(1,\)",
            "multi_margin", backend, x, np.array([0, 4]))
    _raises(ValueError, r"^target: expected class indices of shape \(2,\) for input of shape "
            r"\(2, 4\), got shape \(2, 1\)", "multi_margin", backend, x, np.array([[0], [1]]))
    _raises(TypeError, r"^target: expected integer class indices, got float64",
            "multi_margin", backend, x, np.array([0.0, 1.0]))
    _raises(ValueError, r"^weight: expected one weight per class, shape \(4,\), got shape \(3,\)",
            "multi_margin", backend, x, np.array([0, 1]), weight=np.ones(3))
    _raises(ValueError, r"^input: expected shape \(\), \(C,\) or \(N, C\), got shape \(2, 3, 4\)",
            "multi_margin", backend, np.zeros((2, 3, 4)), np.array([0, 1]))
    # multilabel: every entry, padding included, in [-1, C)
    _raises(ValueError, r"^target: expected class indices or -1 \(end of the targets\) in "
            r"\[-1, 4\), got 5 at index \(0, 3\)", "multilabel_margin", backend, x,
            np.array([[3, 0, -1, 5], [0, -1, 0, 0]]))
    _raises(ValueError, r"got -2 at index \(1, 0\)", "multilabel_margin", backend, x,
            np.array([[3, 0, -1, 1], [-2, -1, 0, 0]]))
    _raises(ValueError, r"^target: expected class indices padded with -1 of the input's shape "
            r"\(2, 4\), got shape \(2,\)", "multilabel_margin", backend, x, np.array([0, 1]))


def test_margin_bad_options():
    with pytest.raises(ValueError, match=r"^p: expected 1 or 2 \(as torch\), got 3"):
        multiloss.get("multi_margin", p=3)
    with pytest.raises(TypeError, match=r"^p: expected an int, got float 1.5"):
        multiloss.get("multi_margin", p=1.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_margin_bad_input(backend):
    _raises(ValueError, r"^target: expected the shape of input, \(2, 3\), got \(3,\)",
            "soft_margin", backend, np.zeros((2, 3)), np.ones(3))
    _raises(ValueError, r"^input: expected shape \(C,\) or \(N, C\), got shape \(\)",
            "multilabel_soft_margin", backend, np.zeros(()), np.zeros(()))
    _raises(ValueError, r"^weight: expected a shape that broadcasts to \(2, 3\), got \(2,\)",
            "multilabel_soft_margin", backend, np.zeros((2, 3)), np.zeros((2, 3)),
            weight=np.ones(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_likelihood_bad_input(backend):
    x = np.zeros((2, 3))
    _raises(ValueError, r"^var: expected non-negative variances, got -0.5 at index \(1,\)",
            "gaussian_nll", backend, x, x, np.array([1.0, -0.5]))
    _raises(ValueError, re.escape("var: expected the input's shape (2, 3), the input's shape "
                                  "without its last dimension (2,), the input's shape with one "
                                  "dimension of size 1, or a scalar, got shape (1, 1)"),
            "gaussian_nll", backend, x, x, np.ones((1, 1)))
    _raises(TypeError, r"^var: expected a floating-point array of variances, got int64",
            "gaussian_nll", backend, x, x, np.ones((2, 3), np.int64))
    _raises(ValueError, r"^target: expected a shape that broadcasts to \(2, 3\), got \(4,\)",
            "gaussian_nll", backend, x, np.zeros(4), np.ones((2, 3)))
    _raises(ValueError, r"^target: expected the shape of input, \(2, 3\), got \(3,\)",
            "poisson_nll", backend, x, np.zeros(3))
    # bool targets are counts of 0 and 1 to torch (tests/test_torch_dtypes.py has the table)
    _raises(TypeError, r"^target: expected counts \(a floating or integer array\), got "
            r"complex128", "poisson_nll", backend, x, np.zeros((2, 3), np.complex128))


def test_likelihood_bad_options():
    with pytest.raises(ValueError, match=r"^eps: expected a value in \[0.0, inf\], got -1.0"):
        multiloss.get("gaussian_nll", eps=-1.0)
    with pytest.raises(TypeError, match=r"^full: expected a bool, got int 1"):
        multiloss.get("poisson_nll", full=1)
