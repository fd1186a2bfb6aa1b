"""Keras 3's losses (``keras.*``): Keras' own reductions and sample_weight rules against Keras
itself (keras.losses.X(reduction=...)(y_true, y_pred, sample_weight=...) on its JAX backend),
Keras' masks (ignore_class, circle), the edge cases, the names and aliases, and bad input.

The reference is Keras 3.15 itself on its JAX backend. In float64 it runs with Keras'
float64 -> float32 type promotion switched off (``multiloss.losses.keras.keras_float64``):
Keras' ``ops.mean`` otherwise computes float64 inputs in float32 (test below). The value and
gradient parity over each loss's sample grid is tests/test_parity.py's (``-k keras``)."""

from __future__ import annotations

import functools
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
from multiloss import testing  # noqa: E402
from multiloss.losses.keras import keras_dtype, keras_float64, keras_loss  # noqa: E402

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
                      axis=0)(np.zeros(3, np.int64), np.ones((3, 4)))
    with pytest.raises(TypeError, match="ignore_class: expected an int"):
        multiloss.get("keras.sparse_categorical_crossentropy", backend="jax", ignore_class=1.5)
    with pytest.raises(ValueError, match="reduction: expected one of"):
        multiloss.get("keras.mse", backend="jax", reduction="batchmean")


# ---------------------------------------------------------------------------------------------
# Keras' call order, Keras' names, Keras' input handling, non-finite values (issues 14, 19),
# each rule for every keras.* loss on both backends, against Keras' own Loss objects.
# MULTILOSS_LONG=1 adds every reduction, more positions, the options and the gradients.

LONG = os.environ.get("MULTILOSS_LONG") == "1"
SPECS = [s for s in testing.all_specs() if s.family == "keras"]
SPEC_IDS = [s.name for s in SPECS]


def _class_of(spec):
    return spec.reference_name.split()[0].rpartition(".")[2]


def _keras_value(spec, inputs, options=None, reduction="sum_over_batch_size",
                 sample_weight=None):
    """Keras' Loss object called as Keras' are, ``loss(y_true, y_pred, sample_weight=...)``,
    in the dtype multiloss computes in (``keras_dtype``)."""
    arrays = [jnp.asarray(x) for x in inputs]
    bound = spec.bind(dict(options or {}))
    loss = keras_loss(_class_of(spec), [o.name for o in spec.options], bound, reduction,
                      keras_dtype(*arrays))
    sw = None if sample_weight is None else jnp.asarray(sample_weight)
    with keras_float64():
        return np.asarray(loss(*arrays, sample_weight=sw))


@functools.cache
def _loss(name, backend, options):
    return multiloss.get(name, backend=backend, **dict(options))


def _value(backend, spec, inputs, options=None, reduction="sum_over_batch_size",
           sample_weight=None, keywords=False):
    """multiloss's value, positionally in the spec's order (or by keyword)."""
    loss = _loss(spec.name, backend, tuple(sorted({**(options or {}),
                                                   "reduction": reduction}.items())))
    conv = np.asarray if backend == "jax" else torch.as_tensor
    arrays = [conv(np.asarray(x)) for x in inputs]
    sw = None if sample_weight is None else conv(np.asarray(sample_weight))
    if keywords:
        out = loss(**{i.name: a for i, a in zip(spec.inputs, arrays)}, sample_weight=sw)
    else:
        out = loss(*arrays, sample_weight=sw)
    return out.detach().numpy() if backend == "torch" else np.asarray(out)


def _base(spec):
    """The first sample of the loss's grid (Keras' order), its loss options only."""
    s = testing.samples_for(spec, "float64")[0]
    return s._replace(options={k: v for k, v in s.options.items() if k != "reduction"})


def _agree(got, want, what):
    """Keras' value to rounding: float64 1e-12; float32 (integer inputs: Keras' floatx) the
    parity harness's float32 tolerance; non-finite entries exactly."""
    dtype = "float32" if np.asarray(want).dtype == np.float32 else "float64"
    err = testing.rel_error(got, want, testing.SCALE_FLOOR[dtype])
    assert err <= testing.TOLERANCE[dtype], f"{what}: got {got}, Keras {want} (error {err:.2e})"


def test_every_keras_loss_declares_keras_order():
    for spec in SPECS:
        assert [i.name for i in spec.inputs] == ["y_true", "y_pred"], spec.name
        assert spec.order == "Keras' order, loss(y_true, y_pred)"
        assert multiloss.info(spec.name)["order"] == spec.order
        assert "Inputs, in Keras' order, loss(y_true, y_pred)" in spec.doc()
    assert multiloss.info("mse")["order"] == "torch's order"
    assert "Inputs, in torch's order" in multiloss.get("mse", backend="jax").__doc__


def test_the_issue_case_keras_order():
    """Issue 19: keras.binary_crossentropy(y_true, y_pred) is Keras' number; with the order
    swapped (torch's, the old one) it is not."""
    y_true = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    y_pred = np.array([[0.1, 0.8, 0.6, 0.3], [0.7, 0.2, 0.4, 0.9]])
    want = float(keras.losses.BinaryCrossentropy()(y_true, y_pred))
    swapped = float(keras.losses.BinaryCrossentropy()(y_pred, y_true))
    assert abs(want - swapped) > 1.0
    for backend in BACKENDS:
        got = _value(backend, multiloss.resolve("keras.binary_crossentropy"), (y_true, y_pred))
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_keras_order_positional_and_keywords(spec):
    """Every keras.* loss takes Keras' positional order and the keywords y_true= / y_pred=,
    on both backends, and gives Keras' number."""
    s = _base(spec)
    want = _keras_value(spec, s.inputs, s.options)
    for backend in BACKENDS:
        _agree(_value(backend, spec, s.inputs, s.options), want, f"{backend} positional")
        _agree(_value(backend, spec, s.inputs, s.options, keywords=True), want,
               f"{backend} keywords")
        loss = _loss(spec.name, backend, tuple(sorted(s.options.items())))
        conv = np.asarray if backend == "jax" else torch.as_tensor
        y_true, y_pred = (conv(np.asarray(x)) for x in s.inputs)
        _agree(np.asarray(loss(y_true, y_pred=y_pred)), want, f"{backend} mixed")


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_by_keyword_errors(backend):
    loss = multiloss.get("keras.mse", backend=backend)
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match=r"^keras.mean_squared_error: input 'y_true' given by "
                       r"position and by keyword"):
        loss(x, x, y_true=x)
    with pytest.raises(TypeError, match=r"^keras.mean_squared_error: missing input\(s\) "
                       r"'y_pred' \(the inputs, in order: y_true, y_pred\)$"):
        loss(y_true=x)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'target'; the call takes "
                       r"y_true, y_pred"):
        loss(x, target=x)
    # torch's losses take their inputs' names too
    mse = multiloss.get("mse", backend=backend)
    conv = np.asarray if backend == "jax" else torch.as_tensor
    a, b = conv(np.array([1.0, 2.0])), conv(np.array([0.0, 4.0]))
    assert float(mse(target=b, input=a)) == float(mse(a, b)) == 2.5


#: Keras' and tf.keras' names without the prefix: what each resolves to (docs/keras.md).
NAME_TABLE = {
    # Keras-only spellings: the keras.* loss
    "binary_crossentropy": "keras.binary_crossentropy",
    "BinaryCrossentropy": "keras.binary_crossentropy",
    "binary_focal_crossentropy": "keras.binary_focal_crossentropy",
    "BinaryFocalCrossentropy": "keras.binary_focal_crossentropy",
    "categorical_crossentropy": "keras.categorical_crossentropy",
    "CategoricalCrossentropy": "keras.categorical_crossentropy",
    "categorical_focal_crossentropy": "keras.categorical_focal_crossentropy",
    "CategoricalFocalCrossentropy": "keras.categorical_focal_crossentropy",
    "sparse_categorical_crossentropy": "keras.sparse_categorical_crossentropy",
    "SparseCategoricalCrossentropy": "keras.sparse_categorical_crossentropy",
    "categorical_generalized_cross_entropy": "keras.categorical_generalized_cross_entropy",
    "CategoricalGeneralizedCrossEntropy": "keras.categorical_generalized_cross_entropy",
    "categorical_hinge": "keras.categorical_hinge", "CategoricalHinge": "keras.categorical_hinge",
    "hinge": "keras.hinge", "Hinge": "keras.hinge",
    "squared_hinge": "keras.squared_hinge", "SquaredHinge": "keras.squared_hinge",
    "MeanSquaredError": "keras.mean_squared_error",
    "MeanAbsoluteError": "keras.mean_absolute_error",
    "mean_absolute_percentage_error": "keras.mean_absolute_percentage_error",
    "MeanAbsolutePercentageError": "keras.mean_absolute_percentage_error",
    "mean_squared_logarithmic_error": "keras.mean_squared_logarithmic_error",
    "MeanSquaredLogarithmicError": "keras.mean_squared_logarithmic_error",
    "cosine_similarity": "keras.cosine_similarity", "CosineSimilarity": "keras.cosine_similarity",
    "Huber": "keras.huber", "LogCosh": "keras.log_cosh", "KLDivergence": "keras.kl_divergence",
    "kullback_leibler_divergence": "keras.kl_divergence", "Poisson": "keras.poisson",
    "CTC": "keras.ctc", "Dice": "keras.dice", "Tversky": "keras.tversky",
    "circle": "keras.circle", "Circle": "keras.circle",
    # spellings multiloss registers itself keep their loss
    "mean_squared_error": "mse", "mse": "mse", "MSE": "mse",
    "mean_absolute_error": "l1", "mae": "l1", "MAE": "l1",
    "mape": "mape", "MAPE": "mape", "msle": "msle", "MSLE": "msle",
    "huber": "huber", "log_cosh": "log_cosh", "logcosh": "log_cosh",
    "kl_divergence": "kl_div", "kld": "kl_div", "KLD": "kl_div",
    "poisson": "poisson", "ctc": "ctc", "dice": "dice", "tversky": "tversky",
    "bce": "binary_cross_entropy", "BCE": "binary_cross_entropy",
    # the loose spellings of an exact alias keep their loss
    "binarycrossentropy": "binary_cross_entropy",
    "Binary_Cross_Entropy": "binary_cross_entropy",
    "binary_cross_entropy": "binary_cross_entropy",
    "mean-squared-error": "mse", "HUBER": "huber", "dIce": "dice",
}


def test_keras_names_without_the_prefix():
    for name, want in NAME_TABLE.items():
        assert multiloss.resolve(name).name == want, name
    # every Keras loss class and function name resolves to a loss, and Keras' order is what
    # a keras.* result expects
    for name in keras.losses.ALL_OBJECTS_DICT if hasattr(keras.losses, "ALL_OBJECTS_DICT") \
            else ():
        if name not in ("Loss", "LossFunctionWrapper"):
            multiloss.resolve(name)
    got = multiloss.get("sparse_categorical_crossentropy", backend="jax", from_logits=True)
    x = np.random.default_rng(0).normal(size=(4, 3))
    t = np.array([0, 2, 1, 1])
    want = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")(t, x)
    assert float(got(t, x)) == pytest.approx(float(want), rel=1e-6)


def _int_like(x):
    """An integer array of about x's values (probabilities and logits alike)."""
    return np.round(np.asarray(x) * 3).astype(np.int64)


#: keras.ctc only with MULTILOSS_LONG=1: Keras' own ctc takes ~15 s to trace the first time
INPUT_SPECS = [s for s in SPECS if LONG or s.name != "keras.ctc"]


@pytest.mark.parametrize("spec", INPUT_SPECS, ids=[s.name for s in INPUT_SPECS])
def test_keras_input_handling(spec):
    """Keras' Loss converts y_pred and y_true to the float dtype (integer and bool
    predictions give a number) and its wrapper squeezes or expands y_true or y_pred by one
    trailing axis of 1 (squeeze_or_expand_to_same_rank); both backends as Keras."""
    s = _base(spec)
    y_true, y_pred = (np.asarray(x) for x in s.inputs)
    cases = {}
    if LONG or y_true.dtype.kind != "f":
        cases["int-y_pred"] = (y_true, _int_like(y_pred))
    if LONG:
        cases["bool-y_pred"] = (y_true, y_pred > np.median(y_pred))
    if y_true.dtype.kind == "f":  # both integer: computed in Keras' floatx, float32
        cases["int-both"] = (np.round(y_true).astype(np.int64), _int_like(y_pred))
    m = y_pred.size
    # rank rules on flat inputs: (M,) against (M, 1) both ways, (2, M/2, 1) against (2, M/2)
    flat_t, flat_p = y_true.reshape(-1), y_pred.reshape(-1)
    if y_true.size == m:
        if m % 2 == 0:  # y_pred squeezed: the loss is per row of 2
            cases["rank (2,M/2) vs (2,M/2,1)"] = (flat_t.reshape(2, -1), flat_p.reshape(2, -1, 1))
        if LONG or m % 2:
            cases["rank (M,) vs (M,1)"] = (flat_t, flat_p[:, None])
        if LONG:
            cases["rank (M,1) vs (M,)"] = (flat_t[:, None], flat_p)
            if m % 2 == 0:
                cases["rank (2,M/2,1) vs (2,M/2)"] = (flat_t.reshape(2, -1, 1),
                                                     flat_p.reshape(2, -1))
    elif spec.name == "keras.sparse_categorical_crossentropy":  # a trailing axis of 1
        cases["rank labels (...,1)"] = (y_true[..., None], y_pred)
    else:
        # (N, 1) labels: Keras' gce and circle broadcast them into an (N, N) result without an
        # error (one_hot (N, 1, C) times (N, C)); multiloss refuses (a documented difference)
        for backend in BACKENDS:
            with pytest.raises(ValueError, match="^y_true: expected"):
                _value(backend, spec, (y_true[..., None], y_pred), s.options)
    opts = {k: v for k, v in s.options.items() if k != "axis"}
    for what, inputs in cases.items():
        try:
            want = _keras_value(spec, inputs, opts)
        except Exception:  # noqa: BLE001 - Keras refuses it: so does multiloss
            for backend in BACKENDS:
                with pytest.raises((TypeError, ValueError)):
                    _value(backend, spec, inputs, opts)
            continue
        for backend in BACKENDS:
            got = _value(backend, spec, inputs, opts)
            assert got.dtype == want.dtype, f"{what} {backend}: {got.dtype} vs {want.dtype}"
            _agree(got, want, f"{what} {backend}")


@pytest.mark.parametrize("name,opts", [("keras.dice", {}),
                                       ("keras.tversky", {"alpha": 0.3, "beta": 0.7}),
                                       ("keras.mse", {}), ("keras.circle", {})])
def test_sample_weight_broadcasts_the_loss(name, opts):
    """Keras weights by loss * sample_weight: a per-sample weight on the one-number loss of
    dice / tversky (axis=None) gives loss * mean(w) under sum_over_batch_size, and a weight
    with more axes than the loss broadcasts it; every reduction as Keras'."""
    spec = multiloss.resolve(name)
    s = _base(spec)
    rng = np.random.default_rng(4)
    n = np.shape(s.inputs[1])[0]
    loss_shape = testing._loss_shape(spec, s._replace(options=opts))
    weights = [rng.uniform(0.5, 2.0, size=(n,)), rng.uniform(0.5, 2.0, size=(3,) + loss_shape)]
    if not LONG:  # per sample on the scalar losses; a weight with more axes on the others
        weights = weights[:1] if loss_shape == () else weights[1:]
    for sw in weights:
        for red in ("sum_over_batch_size", "sum", "none", "mean"):
            want = _keras_value(spec, s.inputs, opts, red, sw)
            for backend in BACKENDS:
                _agree(_value(backend, spec, s.inputs, opts, red, sw), want,
                       f"{backend} {red} sw{sw.shape}")
    if loss_shape == ():
        one = float(_value("jax", spec, s.inputs, opts))
        w = weights[0]
        assert w.shape == (n,)
        assert float(_value("torch", spec, s.inputs, opts, sample_weight=w)) == \
            pytest.approx(one * w.mean(), rel=1e-12)


def _non_finite_cases(spec):
    """The loss's first sample with a NaN, +inf or -inf in each floating input (at the first
    element and the middle one; LONG: every element) and in the sample weight."""
    s = _base(spec)
    out = []
    for i, x in enumerate(s.inputs):
        x = np.asarray(x)
        if x.dtype.kind != "f" or not x.size:
            continue  # class indices: a NaN label is refused, not a Keras number
        positions = range(x.size) if LONG else (x.size // 2,)
        for v in (np.nan, np.inf, -np.inf):
            for pos in positions:
                y = x.copy()
                y.flat[pos] = v
                inputs = list(s.inputs)
                inputs[i] = y
                out.append((f"{spec.inputs[i].name}[{pos}]={v}", tuple(inputs), None))
    shape = testing._loss_shape(spec, s)
    for v in (np.nan, np.inf):
        sw = np.ones(shape)
        sw.flat[0] = v
        out.append((f"sample_weight[0]={v}", s.inputs, sw))
    return s.options, out


def _keras_grad(spec, inputs, opts, sw, pos):
    bound = spec.bind(dict(opts))
    arrays = [jnp.asarray(x) for x in inputs]
    loss = keras_loss(_class_of(spec), [o.name for o in spec.options], bound,
                      "sum_over_batch_size", keras_dtype(*arrays))

    def f(*diff):
        a = list(arrays)
        for i, d in zip(pos, diff):
            a[i] = d
        return loss(*a, sample_weight=sw)

    with keras_float64():
        return [np.asarray(g) for g in jax.grad(f, argnums=tuple(range(len(pos))))(
            *[arrays[i] for i in pos])]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_non_finite_values_propagate_as_in_keras(spec):
    """Issue 14: a NaN or an infinity in an input or a sample weight gives Keras' result on
    both backends (keras.circle with a NaN embedding: NaN, as Keras; it was 0 when the NaN rows
    were masked). The value under the default reduction (LONG: every position, every
    reduction, and the gradients w.r.t. the floating inputs)."""
    opts, cases = _non_finite_cases(spec)
    reductions = ("none", "sum_over_batch_size", "sum", "mean") if LONG else (
        "sum_over_batch_size",)
    for what, inputs, sw in cases:
        for red in reductions:
            want = _keras_value(spec, inputs, opts, red, sw)
            for backend in BACKENDS:
                _agree(_value(backend, spec, inputs, opts, red, sw), want,
                       f"{what} {red} {backend}")
        if not LONG:
            continue
        pos = [i for i, (inp, x) in enumerate(zip(spec.inputs, inputs))
               if inp.differentiable and np.asarray(x).dtype.kind == "f"]
        want = _keras_grad(spec, inputs, opts, sw, pos)
        for backend in BACKENDS:
            _, got = testing.value_and_grads(backend, spec.name, inputs, pos, sample_weight=sw,
                                             **opts)
            for i, g, w in zip(pos, got, want):
                err = testing.rel_error(g, w)
                assert err <= 1e-12, f"{what} {backend} d{spec.inputs[i].name}: {g} vs {w}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_circle_nan_embedding_is_nan(backend):
    """The issue's case: one NaN coordinate makes every row's loss NaN (each row meets the NaN
    row as a positive or a negative); Keras gives NaN, not the 0 of 'every row masked'."""
    spec = multiloss.resolve("keras.circle")
    x = np.random.default_rng(2).normal(size=(6, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[2, 1] = np.nan
    t = np.array([0, 0, 1, 1, 2, 2])
    for red in ("sum_over_batch_size", "sum", "none"):
        assert np.isnan(_keras_value(spec, (t, x), {}, red)).all()
        assert np.isnan(_value(backend, spec, (t, x), {}, red)).all()
    # mean_with_sample_weight: Keras divides by the summed mask, 0, and divide_no_nan gives 0
    assert _keras_value(spec, (t, x), {}, "mean") == 0.0
    assert _value(backend, spec, (t, x), {}, "mean") == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_combine_takes_each_part_in_its_own_order(backend):
    """multiloss.combine calls each part with its positional inputs: torch's order for
    cross_entropy, Keras' for a keras.* part (named without the prefix, as a Keras user
    would)."""
    rng = np.random.default_rng(6)
    logits, labels = rng.normal(size=(4, 3)), np.array([0, 2, 1, 1])
    masks, probs = (rng.random((4, 5)) < 0.5) * 1.0, rng.uniform(0.05, 0.95, (4, 5))
    total = multiloss.combine({"ce": "cross_entropy", "bce": "BinaryCrossentropy"},
                              {"ce": 1.0, "bce": 0.5}, backend=backend)
    conv = np.asarray if backend == "jax" else torch.as_tensor
    out = total({"ce": (conv(logits), conv(labels)), "bce": (conv(masks), conv(probs))})
    value = out[0] if isinstance(out, tuple) else out
    ce = torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(labels))
    bce = keras.losses.BinaryCrossentropy(dtype="float64")(masks, probs)
    assert float(value) == pytest.approx(float(ce) + 0.5 * float(bce), rel=1e-6)
