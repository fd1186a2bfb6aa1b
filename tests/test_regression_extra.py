"""The regression losses beyond torch.nn (log_cosh, quantile, charbonnier, mape, msle,
poisson): values worked out by hand from the formulas, the defining libraries themselves
(optax.losses.log_cosh, kornia.losses.charbonnier_loss, Keras 3's mean_absolute_percentage_error
/ mean_squared_logarithmic_error / poisson on its JAX backend), the derivatives at the
non-smooth points, and bad inputs and options (the message names the argument).

The parity grid against each spec's reference (values and gradients, float64 and float32) is
in tests/test_parity.py; quantile's reference is pytorch-forecasting's QuantileLoss formula
transcribed in torch (the package is not installed)."""

from __future__ import annotations

import math
import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import multiloss  # noqa: E402
from multiloss import testing  # noqa: E402

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
NAMES = ("log_cosh", "quantile", "charbonnier", "mape", "msle", "poisson")


_run = testing.value_and_grads  # value and gradients of the summed output


# ---------------------------------------------------------------------------------------------
# values by hand


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_cosh_by_hand(backend):
    x = np.array([0.0, 0.3, -2.0, 25.0, 1e4])
    t = np.array([0.0, -0.2, 1.0, 0.0, 0.0])
    e = x - t
    want = np.where(np.abs(e) < 20, np.log(np.cosh(np.minimum(np.abs(e), 20))),
                    np.abs(e) - math.log(2.0))
    v, (g,) = _run(backend, "log_cosh", (x, t), wrt=(0,), reduction="none")
    np.testing.assert_allclose(v, want, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(g, np.tanh(e), rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantile_by_hand(backend):
    t = np.array([1.0, 1.0, 2.0])
    x = np.array([0.0, 3.0, 2.0])  # under, over, a tie
    q = 0.8
    want = np.array([q * 1.0, (1 - q) * 2.0, 0.0])
    v, (gx, gt) = _run(backend, "quantile", (x, t), wrt=(0, 1), quantiles=q, reduction="none")
    np.testing.assert_allclose(v, want, rtol=1e-15)
    # d l / d x: -q below, 1 - q above, 0.5 - q at the tie (torch.max's even split)
    np.testing.assert_allclose(gx, [-q, 1 - q, 0.5 - q], rtol=1e-15)
    np.testing.assert_allclose(gt, [q, q - 1, q - 0.5], rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantile_several(backend):
    t = np.array([[0.0], [1.0]])[:, 0]
    x = np.array([[-1.0, 0.0, 1.0], [0.0, 2.0, 4.0]])
    qs = (0.1, 0.5, 0.9)
    e = t[:, None] - x
    want = np.maximum((np.array(qs) - 1) * e, np.array(qs) * e)
    v, _ = _run(backend, "pinball", (x, t), quantiles=list(qs), reduction="none")
    assert v.shape == (2, 3)
    np.testing.assert_allclose(v, want, rtol=1e-15)
    v, _ = _run(backend, "quantile", (x, t), quantiles=qs)
    assert float(v) == pytest.approx(want.mean(), rel=1e-15)  # mean over every element


@pytest.mark.parametrize("backend", BACKENDS)
def test_median_quantile_is_half_l1(backend):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    v, _ = _run(backend, "quantile", (x, t), reduction="sum")
    assert float(v) == pytest.approx(0.5 * np.abs(x - t).sum(), rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [1.0, 1e-3, 2.5])
def test_charbonnier_by_hand(backend, eps):
    x = np.array([0.0, 1e-4, 0.5, -3.0, 40.0])
    t = np.array([0.0, 0.0, -0.5, 1.0, 0.0])
    d = x - t
    want = np.sqrt(d**2 + eps**2) - eps
    v, (g,) = _run(backend, "charbonnier", (x, t), wrt=(0,), eps=eps, reduction="none")
    np.testing.assert_allclose(v, want, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(g, d / np.sqrt(d**2 + eps**2), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_formulas_by_hand(backend):
    x = np.array([1.0, 0.0, 3.0, 0.5])
    t = np.array([0.0, 2.0, -5.0, 0.5])
    v, _ = _run(backend, "mape", (x, t), reduction="none")
    np.testing.assert_allclose(v, 100 * np.abs(t - x) / np.maximum(np.abs(t), 1e-7), rtol=1e-15)
    xs, ts = np.array([0.0, 2.0, 3.0, -1.0]), np.array([1.0, 0.5, 0.0, 2.0])
    v, _ = _run(backend, "msle", (xs, ts), reduction="none")
    want = (np.log(np.maximum(xs, 1e-7) + 1) - np.log(np.maximum(ts, 1e-7) + 1)) ** 2
    np.testing.assert_allclose(v, want, rtol=1e-15)
    xp, tp = np.array([0.0, 1.0, 2.5]), np.array([3.0, 0.0, 2.0])
    v, _ = _run(backend, "poisson", (xp, tp), reduction="none")
    np.testing.assert_allclose(v, xp - tp * np.log(xp + 1e-7), rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_derivatives_at_kinks(backend):
    # mape at x == t: Keras-on-JAX's abs has derivative +1 at 0, so d l / d x = -100 / |t|
    # (torch's l1 would give 0); msle at x == eps: max splits the gradient evenly
    _, (g,) = _run(backend, "mape", (np.array([2.0]), np.array([2.0])), wrt=(0,),
                   reduction="sum")
    np.testing.assert_allclose(g, [-50.0])
    _, (g,) = _run(backend, "msle", (np.array([1e-7, -1.0]), np.array([1.0, 1.0])), wrt=(0,),
                   reduction="sum")
    a = np.log(1e-7 + 1) - np.log(2.0)
    np.testing.assert_allclose(g, [0.5 * 2 * a / (1e-7 + 1), 0.0], rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_targets_are_cast(backend):
    x = np.array([0.5, 2.0, 3.0])
    ti = np.array([1, 0, 4])
    for name in ("mape", "msle", "poisson"):
        a, _ = _run(backend, name, (x, ti), reduction="none")
        b, _ = _run(backend, name, (x, ti.astype(np.float64)), reduction="none")
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# the defining libraries themselves


def test_log_cosh_is_optax():
    import optax

    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(5, 3)) * 4, rng.normal(size=(5, 3))
    want = np.asarray(optax.losses.log_cosh(jnp.asarray(x), jnp.asarray(t)))
    gwant = np.asarray(jax.grad(lambda x: optax.losses.log_cosh(x, jnp.asarray(t)).sum())(
        jnp.asarray(x)))
    for backend in BACKENDS:
        v, (g,) = _run(backend, "log_cosh", (x, t), wrt=(0,), reduction="none")
        np.testing.assert_allclose(v, want, rtol=1e-13)
        np.testing.assert_allclose(g, gwant, rtol=1e-13)


def test_charbonnier_is_kornia():
    import kornia.losses

    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(2, 3, 4)) * 2, rng.normal(size=(2, 3, 4))
    xt = torch.tensor(x, requires_grad=True)
    want = kornia.losses.charbonnier_loss(xt, torch.tensor(t), reduction="none")
    (gwant,) = torch.autograd.grad(want.sum(), xt)
    for backend in BACKENDS:
        v, (g,) = _run(backend, "charbonnier", (x, t), wrt=(0,), reduction="none")
        np.testing.assert_allclose(v, want.detach().numpy(), rtol=1e-14)
        np.testing.assert_allclose(g, gwant.numpy(), rtol=1e-14)


@pytest.mark.parametrize("name,keras_name", [
    ("mape", "mean_absolute_percentage_error"),
    ("msle", "mean_squared_logarithmic_error"),
    ("poisson", "poisson"),
])
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 2e-7)])
def test_keras_itself_after_the_mean_over_the_last_axis(name, keras_name, dtype, rtol):
    """Keras' function = our unreduced loss averaged over the last axis. In float64 only to
    Keras' own rounding: its JAX mean computes in float32 (keras.ops.mean of a float64 array
    rounds to float32 precision)."""
    import keras

    rng = np.random.default_rng(3)
    t = rng.uniform(0.0, 3.0, size=(4, 5)).astype(dtype)
    x = rng.uniform(0.05, 3.0, size=(4, 5)).astype(dtype)
    fn = getattr(keras.losses, keras_name)
    want = np.asarray(fn(jnp.asarray(t), jnp.asarray(x)))
    gwant = np.asarray(jax.grad(lambda x: jnp.sum(fn(jnp.asarray(t), x)))(jnp.asarray(x)))
    for backend in BACKENDS:
        v, (g,) = _run(backend, name, (x, t), wrt=(0,), reduction="none")
        # relative to the largest entry (float32 cancellation in the small ones; Keras under
        # JAX's x64 mode computes msle's float32 inputs in float64)
        np.testing.assert_allclose(v.mean(axis=-1), want, rtol=rtol,
                                   atol=rtol * np.abs(want).max())
        np.testing.assert_allclose(g / x.shape[-1], gwant, rtol=rtol,
                                   atol=rtol * np.abs(gwant).max())
    keras_loss = getattr(keras.losses, {"mape": "MeanAbsolutePercentageError",
                                        "msle": "MeanSquaredLogarithmicError",
                                        "poisson": "Poisson"}[name])()
    got = multiloss.get(name, "jax", reduction="sum_over_batch_size")(x, t)
    # Keras' default reduction over its per-sample means = the mean of every element
    assert float(got) == pytest.approx(float(keras_loss(t, x)), rel=10 * rtol)


# ---------------------------------------------------------------------------------------------
# bad inputs and options


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("quantiles,exc,pattern", [
    (0.0, ValueError, r"quantiles: expected quantiles in \(0, 1\) \(exclusive\), got 0.0"),
    (1.0, ValueError, r"quantiles: expected quantiles in \(0, 1\)"),
    (-0.2, ValueError, r"quantiles: expected quantiles in \(0, 1\)"),
    ((0.5, 1.5), ValueError, r"quantiles: expected quantiles in \(0, 1\) \(exclusive\), got 1.5"),
    ((), ValueError, r"quantiles: expected at least one quantile"),
    ("0.5", TypeError, r"quantiles: expected a quantile in \(0, 1\) or a sequence"),
    (True, TypeError, r"quantiles: expected a quantile"),
])
def test_bad_quantiles_raise_at_construction(backend, quantiles, exc, pattern):
    with pytest.raises(exc, match=pattern):
        multiloss.get("quantile", backend=backend, quantiles=quantiles)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_shapes(backend):
    x3, t = np.zeros((4, 3)), np.zeros(4)
    with pytest.raises(ValueError, match=re.escape(
            "input: expected shape (..., 2) (one prediction per quantile, quantiles=(0.1, 0.9)), "
            "got shape (4, 3)")):
        multiloss.get("quantile", backend, quantiles=(0.1, 0.9))(x3, t)
    with pytest.raises(ValueError, match=re.escape(
            "target: expected the input's shape without its quantile axis, (4,), got (4, 1)")):
        multiloss.get("quantile", backend, quantiles=(0.1, 0.5, 0.9))(x3, np.zeros((4, 1)))
    for name in NAMES:
        with pytest.raises(ValueError, match=r"^target: expected the shape of input, \(4, 3\)"):
            multiloss.get(name, backend)(x3, np.zeros((4, 2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_dtypes(backend):
    xi = np.array([1, 2, 3])
    for name in NAMES:
        with pytest.raises(TypeError, match=r"^input: expected a floating-point array, got int64"):
            multiloss.get(name, backend)(xi, np.zeros(3))
    for name in ("log_cosh", "charbonnier", "quantile"):
        with pytest.raises(TypeError, match=r"^target: expected a floating-point array"):
            multiloss.get(name, backend)(np.zeros(3), xi)
    with pytest.raises(TypeError, match=r"^target: expected a floating or integer array"):
        multiloss.get("mape", backend)(np.zeros(3), np.array([True, False, True]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.0, -1.0])
def test_charbonnier_eps_must_be_positive(backend, eps):
    with pytest.raises(ValueError, match=r"^eps: expected a value in \(0.0, inf\], got"):
        multiloss.get("charbonnier", backend, eps=eps)


def test_names_resolve_and_options():
    for alias, name in [("pinball", "quantile"), ("PinballLoss".lower(), "quantile"),
                        ("logcosh", "log_cosh"), ("CharbonnierLoss", "charbonnier"),
                        ("MAPELoss", "mape"), ("MSLELoss", "msle"), ("poisson_loss", "poisson")]:
        assert multiloss.info(alias)["name"] == name
    opts = {o["name"]: o["default"] for o in multiloss.info("quantile")["options"]}
    assert opts["quantiles"] == 0.5 and opts["reduction"] == "mean"
    assert {o["name"]: o["default"] for o in multiloss.info("charbonnier")["options"]}["eps"] == 1.0
    for name in NAMES:
        info = multiloss.info(name)
        assert info["reference"] and info["formula"] and info["notes"]
