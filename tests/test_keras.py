"""Keras 3's losses (``keras.*``): Keras' own reductions and sample_weight rules against Keras
itself (keras.losses.X(reduction=...)(y_true, y_pred, sample_weight=...) on its JAX backend),
Keras' masks (ignore_class, circle), the edge cases, the names and aliases, and bad input.

The reference is Keras 3.15 itself on its JAX backend. In float64 it runs with Keras'
float64 -> float32 type promotion switched off (``multiloss.losses.keras.keras_float64``):
Keras' ``ops.mean`` otherwise computes float64 inputs in float32 (test below). The value and
gradient parity over each loss's sample grid is tests/test_parity.py's (``-k keras``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import multiloss  # noqa: E402
from multiloss.losses.keras import keras_float64  # noqa: E402

BACKENDS = ("jax", "torch")

NAMES = (
    "binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
    "categorical_focal_crossentropy", "sparse_categorical_crossentropy",
    "categorical_generalized_cross_entropy", "categorical_hinge", "hinge", "squared_hinge",
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "cosine_similarity", "huber", "log_cosh",
    "kl_divergence", "poisson", "ctc", "dice", "tversky", "circle",
)

#: Keras' reduction -> multiloss's (Keras' "mean" is the contract's "sum_over_batch_size")
REDUCTION = {"sum_over_batch_size": "sum_over_batch_size", "sum": "sum", "none": "none",
             "mean": "sum_over_batch_size", "mean_with_sample_weight": "mean_with_sample_weight"}


def _ours(backend, name, y_true, y_pred, sample_weight=None, **options):
    """multiloss's keras.* loss called as Keras' are: loss(y_true, y_pred)."""
    loss = multiloss.get(name, backend=backend, **options)
    if backend == "jax":
        return np.asarray(loss(y_true, y_pred, sample_weight=sample_weight))
    sw = None if sample_weight is None else torch.as_tensor(sample_weight)
    return loss(torch.as_tensor(y_true), torch.as_tensor(y_pred), sample_weight=sw).numpy()


def _keras(cls, y_true, y_pred, sample_weight=None, **kwargs):
    with keras_float64():
        loss = getattr(keras.losses, cls)(dtype="float64", **kwargs)
        return np.asarray(loss(jnp.asarray(y_true), jnp.asarray(y_pred),
                               sample_weight=sample_weight))


def test_names_aliases_and_defaults():
    keras_names = [n for n in multiloss.available() if n.startswith("keras.")]
    assert sorted(keras_names) == sorted(f"keras.{n}" for n in NAMES)
    aliases = {"bce": "binary_crossentropy", "BCE": "binary_crossentropy",
               "mse": "mean_squared_error", "MSE": "mean_squared_error",
               "mae": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
               "msle": "mean_squared_logarithmic_error", "kld": "kl_divergence",
               "KLD": "kl_divergence", "logcosh": "log_cosh",
               "BinaryCrossentropy": "binary_crossentropy",
               "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
               "KLDivergence": "kl_divergence", "CTC": "ctc", "Huber": "huber",
               "CategoricalGeneralizedCrossEntropy": "categorical_generalized_cross_entropy"}
    for alias, name in aliases.items():
        assert multiloss.info(f"keras.{alias}")["name"] == f"keras.{name}"
    for name in NAMES:
        info = multiloss.info(f"keras.{name}")
        opts = {o["name"]: o["default"] for o in info["options"]}
        assert opts["reduction"] == "sum_over_batch_size"
        assert opts["empty_reduction"] == "zero"
        assert "keras.losses." in info["reference"]
    loss = multiloss.get("keras.mse", backend="jax", reduction="mean_with_sample_weight")
    assert loss.options["reduction"] == "mean"


def _case(name, rng):
    """(keras class, y_pred, y_true, options) for the reduction tests; float64."""
    if name == "binary_crossentropy":
        return ("BinaryCrossentropy", rng.uniform(0.05, 0.95, (4, 3, 5)),
                (rng.random((4, 3, 5)) < 0.5) * 1.0, {"label_smoothing": 0.1})
    if name == "categorical_crossentropy":
        return ("CategoricalCrossentropy", rng.normal(size=(6, 4)),
                np.eye(4)[rng.integers(0, 4, 6)], {"from_logits": True})
    if name == "sparse_categorical_crossentropy":
        t = rng.integers(0, 4, (3, 5))
        t[0, :3] = 2
        return ("SparseCategoricalCrossentropy", rng.normal(size=(3, 5, 4)), t,
                {"from_logits": True, "ignore_class": 2})
    if name == "huber":
        return ("Huber", rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), {"delta": 0.7})
    if name == "circle":
        x = rng.normal(size=(8, 3))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        t = np.array([0, 0, 1, 1, 2, 2, 2, 3])  # label 3 has no positive: masked
        return ("Circle", x, t, {"gamma": 20.0})
    if name == "dice":
        return ("Dice", rng.uniform(size=(3, 4, 4)), (rng.random((3, 4, 4)) < 0.3) * 1.0,
                {"axis": (1, 2)})
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy", "huber", "circle", "dice"])
def test_keras_reductions_and_sample_weight(name):
    rng = np.random.default_rng(7)
    cls, x, t, opts = _case(name, rng)
    loss_shape = _ours("jax", f"keras.{name}", t, x, reduction="none", **opts).shape
    weights = {"none": None, "per-element": rng.uniform(0, 2, loss_shape),
               "zeros": np.zeros(loss_shape)}
    weights["per-element"].flat[0] = 0.0
    for red_keras, red in REDUCTION.items():
        for wname, sw in weights.items():
            want = _keras(cls, t, x, sample_weight=sw, reduction=red_keras, **opts)
            for backend in BACKENDS:
                got = _ours(backend, f"keras.{name}", t, x, sample_weight=sw, reduction=red,
                            **opts)
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15,
                                           err_msg=f"{backend} {red_keras} {wname}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_sample_weight_rank_rule(backend):
    """Keras squeezes or adds one trailing axis of size 1 (squeeze_or_expand_to_same_rank)."""
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    # (N, 1) weights on the (N,) loss of an (N, D) input
    for sw in (rng.uniform(size=(4, 1)), rng.uniform(size=(4,)), np.float64(2.5)):
        for red in ("sum_over_batch_size", "sum"):
            want = _keras("MeanSquaredError", t, x, sample_weight=sw, reduction=red)
            got = _ours(backend, "keras.mse", t, x, sample_weight=sw, reduction=red)
            np.testing.assert_allclose(got, want, rtol=1e-12)
    # a loss with a trailing axis of 1, (N, 1), and (N,) weights: they align on the left
    x3, t3 = rng.normal(size=(4, 1, 3)), rng.normal(size=(4, 1, 3))
    sw = np.array([0.0, 1.0, 2.0, 3.0])
    want = _keras("MeanSquaredError", t3, x3, sample_weight=sw, reduction="sum")
    got = _ours(backend, "keras.mse", t3, x3, sample_weight=sw, reduction="sum")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # (N,) weights on an (N, T) loss do not broadcast, in Keras as in multiloss
    with pytest.raises(ValueError, match="sample_weight"):
        _ours(backend, "keras.mse", rng.normal(size=(4, 2, 3)), rng.normal(size=(4, 2, 3)),
              sample_weight=sw)


def test_keras_float64_mean_is_float32_without_the_switch():
    """Keras 3.15 on JAX computes ops.mean of float64 in float32 (its result_type maps
    float64 to float32); the reference switches that off, multiloss computes in float64."""
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(64, 7)), rng.normal(size=(64, 7))
    exact = ((x - t) ** 2).mean(axis=-1)
    plain = np.asarray(keras.losses.mean_squared_error(jnp.asarray(t), jnp.asarray(x)))
    assert plain.dtype == np.float64
    assert np.max(np.abs(plain - exact) / exact) > 1e-10
    with keras_float64():
        fixed = np.asarray(keras.losses.mean_squared_error(jnp.asarray(t), jnp.asarray(x)))
    np.testing.assert_allclose(fixed, exact, rtol=1e-14)
    for backend in BACKENDS:
        np.testing.assert_allclose(_ours(backend, "keras.mse", t, x, reduction="none"), exact,
                                   rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_ignored_and_empty_give_zero(backend):
    x = np.random.default_rng(1).normal(size=(3, 4))
    for red in ("sum_over_batch_size", "mean", "sum"):
        got = _ours(backend, "keras.sparse_categorical_crossentropy", np.full(3, 1), x,
                    from_logits=True, ignore_class=1, reduction=red)
        keras_red = {"mean": "mean_with_sample_weight"}.get(red, red)
        want = _keras("SparseCategoricalCrossentropy", np.full(3, 1), x, from_logits=True,
                      ignore_class=1, reduction=keras_red)
        assert got == 0.0 and want == 0.0
    empty = _ours(backend, "keras.bce", np.zeros((0, 3)), np.zeros((0, 3)))
    assert empty == 0.0  # Keras returns the empty unreduced array here


def test_all_ignored_gradient_is_zero():
    x = np.random.default_rng(1).normal(size=(3, 4))
    loss = multiloss.get("keras.sparse_categorical_crossentropy", backend="jax",
                         from_logits=True, ignore_class=0)
    g = jax.grad(lambda z: loss(np.zeros(3, np.int64), z))(x)
    assert np.all(g == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,cls", [("binary_crossentropy", "BinaryCrossentropy"),
                                      ("binary_focal_crossentropy", "BinaryFocalCrossentropy")])
def test_extreme_logits_and_probabilities(backend, name, cls):
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    for x, opts in ((np.array([[1e4, -1e4, 1e4, -1e4]]), {"from_logits": True}),
                    (np.array([[0.0, 1.0, 0.0, 1.0]]), {})):
        got = _ours(backend, f"keras.{name}", t, x, reduction="none", **opts)
        want = _keras(cls, t, x, reduction="none", **opts)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_argument(backend):
    x = np.random.default_rng(0).uniform(0.1, 0.9, size=(3, 4))
    with pytest.raises(ValueError, match=r"y_true: expected the shape of y_pred, \(3, 4\)"):
        _ours(backend, "keras.bce", x[:, :2], x)
    with pytest.raises(TypeError, match="y_pred: expected a real-valued array"):
        _ours(backend, "keras.mse", x, np.ones((3, 4), np.complex128))
    with pytest.raises(ValueError, match=r"y_true: expected class indices in \[0, 4\)"):
        _ours(backend, "keras.sparse_categorical_crossentropy", np.array([0, 4, 1]), x)
    with pytest.raises(ValueError, match=r"y_true: expected class indices of shape \(3,\)"):
        _ours(backend, "keras.sparse_categorical_crossentropy", np.zeros((3, 2), np.int64), x)
    with pytest.raises(ValueError, match="axis: expected an axis in"):
        _ours(backend, "keras.bce", x, x, axis=2)
    with pytest.raises(ValueError, match="y_pred: expected real-valued logits of shape"):
        _ours(backend, "keras.ctc", np.ones((3, 2), np.int64), x)
    with pytest.raises(ValueError, match=r"y_true: expected labels in \[0, 4\)"):
        _ours(backend, "keras.ctc", np.full((3, 2), 7), np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match="y_true: expected one label per embedding"):
        _ours(backend, "keras.circle", np.zeros(4, np.int64), x)
    with pytest.raises(ValueError, match="sample_weight: expected an array that broadcasts"):
        _ours(backend, "keras.mse", x, x, sample_weight=np.ones(4 + 1))


def test_bad_options():
    with pytest.raises(ValueError, match=r"q: expected a value in \(0.0, 1.0\)"):
        multiloss.get("keras.categorical_generalized_cross_entropy", backend="jax", q=1.0)
    with pytest.raises(ValueError, match=r"label_smoothing: expected a value in \[0.0, 1.0\]"):
        multiloss.get("keras.bce", backend="jax", label_smoothing=1.5)
    with pytest.raises(ValueError, match="axis: Keras' JAX backend computes the sparse"):
        multiloss.get("keras.sparse_categorical_crossentropy", backend="jax",
                      axis=0)(np.ones((3, 4)), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="ignore_class: expected an int"):
        multiloss.get("keras.sparse_categorical_crossentropy", backend="jax", ignore_class=1.5)
    with pytest.raises(ValueError, match="reduction: expected one of"):
        multiloss.get("keras.mse", backend="jax", reduction="batchmean")
