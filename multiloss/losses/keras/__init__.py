"""Keras 3's losses, exactly: every function of ``keras.losses`` as ``keras.<name>``, with Keras'
aliases (``keras.bce``, ``keras.mse``, ...) and class names (``keras.BinaryCrossentropy``, ...).
Specs only; implementations in ``_jax.py`` and ``_torch.py``.

Semantics are Keras 3.15's (measured on its JAX backend, float64 with ``dtype="float64"``):

- ``from_logits=False`` by default; probabilities are clipped to [1e-7, 1 - 1e-7]
  (``keras.backend.epsilon()``), and the categorical losses first renormalise ``y_pred`` to sum
  to 1 over the class axis;
- the element-wise losses average over the last axis (``axis=-1``), so the unreduced loss of an
  (N, D) input has shape (N,), as in Keras (not torch's element-wise (N, D));
- the default reduction is ``"sum_over_batch_size"`` (Σ s·l / number of elements of the
  unreduced loss, Keras' default), ``"mean_with_sample_weight"`` is the contract's ``"mean"``
  (Σ s·l / Σ s), and a reduction over nothing gives 0 (Keras' ``divide_no_nan``);
- Keras' masks (``ignore_class`` of the sparse crossentropy, circle's mask of rows with a
  positive and a negative) are the contract's count: the masked elements are 0 and the
  reductions divide by the number (or weight) of the unmasked ones, as Keras' ``apply_mask``.

The call order is Keras', ``loss(y_true, y_pred)`` (``INPUTS``, the specs' input order), and
the keywords ``y_true=`` / ``y_pred=`` work on both backends. Keras' input handling holds too:
integer or bool inputs are converted to the float dtype, a ``y_true`` whose rank differs from
``y_pred``'s by one trailing axis of 1 is squeezed or expanded (``squeeze_or_expand_to_same_rank``,
``same_rank_shapes``), and ``sample_weight`` broadcasts against the unreduced loss both ways
(a per-sample weight on the scalar loss of ``dice`` / ``tversky`` with ``axis=None``).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..._registry import (
    ArrayInfo,
    InputSpec,
    LossSpec,
    Option,
    Sample,
    array_info,
    boolean,
    real,
    register,
)
from .._common import REDUCTIONS, case_id, jax_reference, loss_shape_weight
from ._constants import FLOATX, same_rank_shapes

FAMILY = "keras"
KERAS_VERSION = "Keras 3.15 (JAX backend)"

#: The positional order of every keras.* loss: Keras' ``loss(y_true, y_pred)``. It is the
#: specs' ``inputs`` order, so the implementations, samples and references take their arrays in
#: it; the makers and edge cases below build ``(y_pred, y_true)`` pairs and ``_ordered`` puts
#: them in this order (the one place that knows both).
INPUTS = ("y_true", "y_pred")
ORDER = "Keras' order, loss(y_true, y_pred)"


def _ordered(pair):
    """A ``(y_pred, y_true)`` pair in the specs' order, ``INPUTS``."""
    named = dict(zip(("y_pred", "y_true"), pair))
    return tuple(named[n] for n in INPUTS)

# ---------------------------------------------------------------------------------------------
# checks


def _expect_pred(x: ArrayInfo, min_ndim=1, what=""):
    if x.kind not in "fiub":
        raise TypeError(
            f"y_pred: expected a real-valued array{what} (Keras converts integer and bool "
            f"arrays to the float dtype), got {x.describe()}")
    if x.ndim < min_ndim:
        raise ValueError(f"y_pred: expected at least {min_ndim} dimension(s), got shape {x.shape}")


def _expect_real(name, x: ArrayInfo):
    if x.kind not in "fiub":
        raise TypeError(
            f"{name}: expected a real-valued array (Keras casts it to y_pred's dtype), got "
            f"{x.describe()}"
        )


def _expect_labels(name, x: ArrayInfo):
    if x.kind not in "fiub":
        raise TypeError(
            f"{name}: expected an array of class indices (integer, or floating as Keras casts "
            f"it to int32), got {x.describe()}"
        )


def _same_shape(p: ArrayInfo, t: ArrayInfo):
    if p.shape != t.shape:
        raise ValueError(
            f"y_true: expected the shape of y_pred, {p.shape}, got {t.shape} (Keras' rank rule "
            f"squeezes or adds one trailing axis of 1; multiloss does not broadcast y_true "
            f"against y_pred otherwise)"
        )


def _axis(name, axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{name}: expected an axis in [{-ndim}, {ndim}) for y_pred of {ndim} dimension(s), "
            f"got {axis}"
        )
    return axis % ndim


def _drop(shape, axes):
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _elementwise_check(named, opts):
    """y_pred and y_true of one shape; the loss drops ``axis`` (-1 where there is none)."""
    p, t = named["y_pred"], named["y_true"]
    _expect_pred(p)
    _expect_real("y_true", t)
    _same_shape(p, t)
    return _drop(p.shape, {_axis("axis", opts.get("axis", -1), p.ndim)})


def _sparse_check(named, opts):
    p, t = named["y_pred"], named["y_true"]
    _expect_pred(p, 1, " of class scores (..., C)")
    _expect_labels("y_true", t)
    if opts.get("axis", -1) not in (-1, p.ndim - 1):
        raise ValueError(
            f"axis: Keras' JAX backend computes the sparse crossentropy over the last axis "
            f"only; expected -1 or {p.ndim - 1}, got {opts['axis']}"
        )
    want = p.shape[:-1]
    if t.shape != want and t.shape != want + (1,):
        raise ValueError(
            f"y_true: expected class indices of shape {want} (or {want + (1,)}) for y_pred of "
            f"shape {p.shape}, got {t.shape}"
        )
    return want


def _gce_check(named, opts):
    p, t = named["y_pred"], named["y_true"]
    _expect_pred(p, 1, " of class probabilities (..., C)")
    _expect_labels("y_true", t)
    if t.shape != p.shape[:-1]:
        raise ValueError(
            f"y_true: expected class indices of shape {p.shape[:-1]} for y_pred of shape "
            f"{p.shape}, got {t.shape}"
        )
    return t.shape


def _region_axes(opts, ndim):
    axis = opts.get("axis")
    if axis is None:
        return set(range(ndim))
    axes = (axis,) if isinstance(axis, int) else axis
    out = {_axis("axis", a, ndim) for a in axes}
    if len(out) != len(axes):
        raise ValueError(f"axis: expected distinct axes, got {axis}")
    return out


def _region_check(named, opts):
    p, t = named["y_pred"], named["y_true"]
    _expect_pred(p)
    _expect_real("y_true", t)
    _same_shape(p, t)
    return _drop(p.shape, _region_axes(opts, p.ndim))


def _ctc_check(named, opts):
    p, t = named["y_pred"], named["y_true"]
    if p.kind not in "fiub" or p.ndim != 3:
        raise ValueError(
            f"y_pred: expected real-valued logits of shape (batch_size, max_length, "
            f"num_classes), got {p.describe()}"
        )
    if t.kind not in "fiub" or t.ndim != 2:
        raise ValueError(
            f"y_true: expected labels of shape (batch_size, max_label_length), 0 the "
            f"blank and the padding, got {t.describe()}"
        )
    if t.shape[0] != p.shape[0]:
        raise ValueError(
            f"y_true: expected batch size {p.shape[0]} (y_pred's), got shape {t.shape}"
        )
    if t.shape[1] == 0:
        raise ValueError(f"y_true: expected max_label_length >= 1, got shape {t.shape}")
    return p.shape[:1]


def _circle_check(named, opts):
    p, t = named["y_pred"], named["y_true"]
    if p.kind not in "fiub" or p.ndim != 2:
        raise ValueError(
            f"y_pred: expected real-valued embeddings of shape (batch_size, dim) (L2-"
            f"normalised, as Keras expects), got {p.describe()}"
        )
    _expect_labels("y_true", t)
    if t.shape != p.shape[:1]:
        raise ValueError(
            f"y_true: expected one label per embedding, shape {p.shape[:1]}, got {t.shape}"
        )
    return p.shape[:1]


def _check_labels(n_classes_of):
    def check(values, infos, opts):
        t = values.get("y_true")
        if t is None or t.size == 0:
            return
        n = n_classes_of(infos)
        ti = t.astype(np.int64)  # Keras casts to int32 (truncation)
        bad = (ti < 0) | (ti >= n)
        ignore = opts.get("ignore_class")
        if ignore is not None:
            bad &= ti != ignore
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            also = f" or equal ignore_class={ignore}" if ignore is not None else ""
            raise ValueError(
                f"y_true: expected class indices in [0, {n}){also}, got {t[bad][0]} at index "
                f"{pos} (Keras' one_hot silently gives a zero row there)"
            )

    return check


def _check_ctc_values(values, infos, opts):
    t = values.get("y_true")
    if t is None or t.size == 0:
        return
    n = infos["y_pred"].shape[2]
    t = t.astype(np.int64) if t.dtype.kind == "f" else t  # Keras casts to int32 (truncation)
    if t.min() < 0 or t.max() >= n:
        bad = np.argwhere((t < 0) | (t >= n))[0]
        raise ValueError(
            f"y_true: expected labels in [0, {n}) (0 is the blank and the padding), got "
            f"{t[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )


def _keras_check(check):
    """A loss's shape check after Keras' rank rule (``same_rank_shapes``): the shapes the
    implementations see, after ``_keras_inputs``."""

    def checked(named, opts):
        t, p = named["y_true"], named["y_pred"]
        t_shape, p_shape = same_rank_shapes(t.shape, p.shape)
        return check({"y_true": t._replace(shape=t_shape), "y_pred": p._replace(shape=p_shape)},
                     opts)

    return checked


# ---------------------------------------------------------------------------------------------
# options


def _over_batch(opts):
    """keras.dice and keras.tversky reduce over ``axis``: None (every axis) or an axis list
    with the batch axis 0 sums over the batch, one loss for the whole batch."""
    axis = opts.get("axis")
    return axis is None or 0 in (axis if isinstance(axis, tuple) else (axis,))


def _int_axis(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def _optional_axes(name, value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name}: expected None, an int or a non-empty tuple of ints, got ()")
        return tuple(_int_axis(name, v) for v in value)
    return _int_axis(name, value)


def _optional_int(name, value):
    return None if value is None else _int_axis(name, value)


FROM_LOGITS = Option("from_logits", False, "y_pred holds logits (True) or probabilities "
                     "(False, Keras' default: clipped to [1e-7, 1 - 1e-7])", boolean,
                     allowed="bool")
LABEL_SMOOTHING = Option("label_smoothing", 0.0, "smooth the targets: binary y·(1-ls) + ls/2, "
                         "categorical y·(1-ls) + ls/C (Keras)", real(0.0, 1.0),
                         allowed="float in [0, 1]")
AXIS = Option("axis", -1, "the axis the loss reduces over (Keras' axis)", _int_axis,
              allowed="int")
ALPHA_FOCAL = Option("alpha", 0.25, "the class-balancing weight of the focal loss", real(),
                     allowed="float")
GAMMA_FOCAL = Option("gamma", 2.0, "the focusing exponent of (1 - p_t)", real(0.0),
                     allowed="float >= 0")


# ---------------------------------------------------------------------------------------------
# the reference: Keras itself


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":  # pragma: no cover - environment
        raise RuntimeError(
            f"the Keras reference runs on Keras' JAX backend; KERAS_BACKEND is "
            f"{keras.backend.backend()!r}"
        )
    return keras


#: multiloss's reductions as Keras spells them (the contract's "mean" is Keras'
#: "mean_with_sample_weight"; Keras' own "mean" is the contract's "sum_over_batch_size").
KERAS_REDUCTION = {"none": "none", "sum": "sum", "mean": "mean_with_sample_weight",
                   "sum_over_batch_size": "sum_over_batch_size"}


def keras_loss(class_name, option_names, opts, reduction, dtype):
    """The Keras Loss object with multiloss's options (Keras' keyword names)."""
    keras = _keras()
    kwargs = {k: opts[k] for k in option_names}
    return getattr(keras.losses, class_name)(reduction=KERAS_REDUCTION[reduction],
                                             dtype=str(dtype), **kwargs)


@contextlib.contextmanager
def keras_float64():
    """Keras 3.15 with its float64 -> float32 promotion turned off.

    Keras' type promotion (``keras.backend.result_type``) maps float64 to float32 on every
    backend but TensorFlow, whatever ``jax_enable_x64`` and ``floatx`` say, so Keras' own
    ``ops.mean`` (the mean over ``axis=-1`` of every element-wise loss) and ``ctc`` compute
    float64 inputs in float32 and cast the result back to float64 (relative errors ~1e-8).
    multiloss computes float64 in float64; its float64 reference is Keras' own code with that
    one mapping switched off for the duration of the call (float32 is Keras as it is)."""
    from keras.src.backend.common import dtypes

    table = dtypes.BIT64_TO_BIT32_DTYPE
    old = table.get("float64")
    table["float64"] = "float64"
    try:
        yield
    finally:
        table["float64"] = old


def keras_dtype(*arrays) -> str:
    """The dtype Keras is asked to compute in (its Loss's ``dtype=``): the common dtype of the
    floating inputs (multiloss promotes mixed float32/float64), or Keras' floatx, float32, where
    none is floating (Keras converts integer and bool inputs to it)."""
    import jax.numpy as jnp

    floats = [a.dtype for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    return str(jnp.result_type(*floats)) if floats else FLOATX


def _reference(class_name, option_names):
    @jax_reference
    def fn(y_true, y_pred, *, opts, reduction):
        dtype = keras_dtype(y_true, y_pred)
        loss = keras_loss(class_name, option_names, opts, reduction, dtype)
        if dtype == "float64":
            with keras_float64():
                return loss(y_true, y_pred)
        return loss(y_true, y_pred)

    return fn


def keras_sample_weight_shape(sw_shape, loss_shape):
    """Keras' rank rule for ``sample_weight`` (``squeeze_or_expand_to_same_rank`` of Keras 3's
    reduce_weighted_values): a weight with one axis fewer than the loss, whose last axis is 1,
    gets a trailing axis of 1; a weight with one axis more, whose last axis is 1, loses it.
    Otherwise the weight broadcasts as given (trailing axes aligned), as in Keras."""
    sw_shape, loss_shape = tuple(sw_shape), tuple(loss_shape)
    if len(loss_shape) == len(sw_shape) + 1 and loss_shape[-1] == 1:
        return sw_shape + (1,)
    if len(sw_shape) == len(loss_shape) + 1 and sw_shape[-1] == 1:
        return sw_shape[:-1]
    return sw_shape


# ---------------------------------------------------------------------------------------------
# samples


def _loss_shape(spec_check):
    def shape(inputs, opts):
        named = dict(zip(INPUTS, (array_info(np.asarray(x)) for x in inputs)))
        return tuple(spec_check(named, opts))

    return shape


def _ones_normalizer(spec_check):
    shape_of = _loss_shape(spec_check)

    def normalizer(inputs, opts):
        s = shape_of(inputs, opts)
        return np.ones(s), np.ones(s)

    return normalizer


def _samples(name, make, option_sets, shapes, check, edges=None):
    """The grid: every option set under every reduction; sample weights; Keras' own
    reductions (empty_reduction="nan" makes the harness call Keras with its reduction); an
    empty batch; all-zero sample weights; the loss's edge cases."""
    shape_of = _loss_shape(check)
    make = _ordered_make(make)

    def samples(rng, dtype):
        for k, mopts in enumerate(option_sets):
            for red in REDUCTIONS:
                o = {**_loss_opts(mopts), "reduction": red}
                yield Sample(case_id(f"{name}[{k}]", {**mopts, "reduction": red}),
                             make(rng, shapes[0], dtype, mopts), o)
        mopts = option_sets[-1]
        opts = _loss_opts(mopts)
        for red in REDUCTIONS:
            inputs = make(rng, shapes[1], dtype, mopts)
            o = {**opts, "reduction": red}
            sw = loss_shape_weight(rng, shape_of(inputs, o), dtype)
            yield Sample(case_id(f"{name}[sample-weight]", o), inputs, o, sw)
        for red in ("none", "sum", "mean"):
            o = {**opts, "reduction": red, "empty_reduction": "nan"}
            yield Sample(case_id(f"{name}[keras-reduction]", o), make(rng, shapes[1], dtype, mopts),
                         o)
        empty_shape = (0,) + tuple(shapes[0][1:])
        for red in ("mean", "sum", "sum_over_batch_size"):
            o = {**opts, "reduction": red}
            yield Sample(case_id(f"{name}[empty-batch]", o), make(rng, empty_shape, dtype, mopts),
                         o)
        for e in ("nan", "zero"):
            o = {**opts, "reduction": "mean", "empty_reduction": e}
            inputs = make(rng, shapes[0], dtype, mopts)
            yield Sample(case_id(f"{name}[zero-sample-weights]", o), inputs, o,
                         np.zeros(shape_of(inputs, o), dtype))
        if edges is not None:
            yield from edges(rng, dtype)

    return samples


def _default_random_shape(rng):
    n = int(rng.integers(0, 6))
    return (n,) + tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 3))))


def _random_sample(name, make, option_sets, check, random_shape=_default_random_shape):
    shape_of = _loss_shape(check)
    make = _ordered_make(make)

    def random_sample(rng, dtype):
        mopts = option_sets[int(rng.integers(len(option_sets)))]
        opts = _loss_opts(mopts)
        opts["reduction"] = REDUCTIONS[int(rng.integers(len(REDUCTIONS)))]
        inputs = make(rng, random_shape(rng), dtype, mopts)
        sw = None
        if rng.random() < 0.5:
            sw = loss_shape_weight(rng, shape_of(inputs, opts), dtype)
        return Sample(case_id(f"{name}[random]", opts), inputs, opts, sw)

    return random_sample


def _ordered_make(make):
    def ordered(*args):
        return _ordered(make(*args))

    return ordered


def _loss_opts(opts):
    """The loss's options of a sample's option set (keys starting with "_" only shape the
    sample data)."""
    return {k: v for k, v in opts.items() if not k.startswith("_")}


def _probs(rng, shape, dtype, axis=-1):
    x = rng.uniform(0.05, 1.0, size=shape)
    return (x / x.sum(axis=axis, keepdims=True)).astype(dtype) if shape[axis] else x.astype(dtype)


def _binary_make(rng, shape, dtype, opts):
    t = (rng.random(size=shape) < 0.5).astype(dtype)
    if opts.get("from_logits"):
        x = rng.normal(scale=2.0, size=shape)
    else:
        x = rng.uniform(0.02, 0.98, size=shape)
    return x.astype(dtype), t


def _categorical_make(rng, shape, dtype, opts):
    n_classes = shape[-1]
    idx = rng.integers(0, n_classes, size=shape[:-1])
    t = np.eye(n_classes)[idx].astype(dtype)
    if opts.get("_soft"):
        t = _probs(rng, shape, dtype)
    if opts.get("from_logits"):
        x = rng.normal(scale=2.0, size=shape).astype(dtype)
    else:
        x = rng.uniform(0.05, 1.0, size=shape).astype(dtype)  # Keras renormalises
    return x, t


def _edge(name, inputs, opts, sw=None):
    """An edge case; ``inputs`` is a ``(y_pred, y_true)`` pair."""
    return Sample(case_id(f"{name}[edge]", opts), _ordered(inputs), opts, sw)


# ---------------------------------------------------------------------------------------------
# the specs


_REDUCTION_NOTE = (
    "Reductions are Keras': the default 'sum_over_batch_size' divides by the number of "
    "(unmasked) elements of the unreduced loss, 'mean_with_sample_weight' (= multiloss "
    "'mean') by the summed sample weights, and nothing to divide by gives 0. Keras' own "
    "'mean' is multiloss 'sum_over_batch_size'. sample_weight follows Keras' rank rule (one "
    "trailing axis of 1 added or removed; docs/keras.md); an empty batch gives 0 where "
    "Keras returns the empty array. The call order is Keras', loss(y_true, y_pred); the "
    "keywords y_true= and y_pred= work too.")


#: Keras' (and tf.keras') names without the ``keras.`` prefix that resolve to the keras.*
#: loss: (names matched as any multiloss name is, case- and underscore-insensitively; names
#: matched only as Keras spells them). A Keras name stays with the multiloss loss it names
#: today where multiloss registers that very spelling itself (``mse``, ``mae``,
#: ``mean_squared_error``, ``mean_absolute_error``, ``huber``, ``log_cosh``, ``logcosh``,
#: ``kl_divergence``, ``kld``, ``poisson``, ``ctc``, ``dice``, ``tversky``, ``bce``, ``mape``,
#: ``msle``) and for the capitalised acronyms of those (``BCE``, ``MSE``, ``MAE``, ``MAPE``,
#: ``MSLE``, ``KLD``). A Keras spelling that only reached another loss through the loose match
#: (``binary_crossentropy`` and ``BinaryCrossentropy`` reached torch's binary_cross_entropy,
#: whose order is (input, target): a Keras user's loss(y_true, y_pred) gave a wrong number
#: without an error) is an exact alias of the keras.* loss; its loose spellings keep their
#: meaning. docs/keras.md has the table; tests/test_keras.py tests it.
BARE_NAMES = {
    "binary_crossentropy": ((), ("binary_crossentropy", "BinaryCrossentropy")),
    "binary_focal_crossentropy": (("binary_focal_crossentropy", "BinaryFocalCrossentropy"), ()),
    "categorical_crossentropy": (("categorical_crossentropy", "CategoricalCrossentropy"), ()),
    "categorical_focal_crossentropy": (
        ("categorical_focal_crossentropy", "CategoricalFocalCrossentropy"), ()),
    "sparse_categorical_crossentropy": (
        ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"), ()),
    "categorical_generalized_cross_entropy": (
        ("categorical_generalized_cross_entropy", "CategoricalGeneralizedCrossEntropy"), ()),
    "categorical_hinge": (("categorical_hinge", "CategoricalHinge"), ()),
    "hinge": (("hinge", "Hinge"), ()),
    "squared_hinge": (("squared_hinge", "SquaredHinge"), ()),
    "mean_squared_error": ((), ("MeanSquaredError",)),
    "mean_absolute_error": ((), ("MeanAbsoluteError",)),
    "mean_absolute_percentage_error": (
        ("mean_absolute_percentage_error", "MeanAbsolutePercentageError"), ()),
    "mean_squared_logarithmic_error": (
        ("mean_squared_logarithmic_error", "MeanSquaredLogarithmicError"), ()),
    "cosine_similarity": (("cosine_similarity", "CosineSimilarity"), ()),
    "huber": ((), ("Huber",)),
    "log_cosh": ((), ("LogCosh",)),
    "kl_divergence": (("kullback_leibler_divergence",), ("KLDivergence",)),
    "poisson": ((), ("Poisson",)),
    "ctc": ((), ("CTC",)),
    "dice": ((), ("Dice",)),
    "tversky": ((), ("Tversky",)),
    "circle": (("circle", "Circle"), ()),
}


def _spec(name, keras_class, summary, formula, check, options, option_sets, make, shapes,
          edges=None, aliases=(), notes="", normalizer=None, y_true_doc="the targets",
          y_pred_doc="the predictions", y_true_diff=True, check_values=None, value_kinds="iu",
          reference_name=None, random_shape=_default_random_shape, batch_coupled=False):
    full = f"keras.{name}"
    option_names = tuple(o.name for o in options)
    check = _keras_check(check)
    bare, exact = BARE_NAMES[name]
    spec = LossSpec(
        name=full,
        family=FAMILY,
        summary=summary,
        inputs=tuple({"y_true": InputSpec("y_true", y_true_doc, differentiable=y_true_diff),
                      "y_pred": InputSpec("y_pred", y_pred_doc)}[n] for n in INPUTS),
        order=ORDER,
        options=tuple(options),
        formula=formula,
        reference_name=reference_name or (
            f"keras.losses.{keras_class} ({KERAS_VERSION}), called as "
            f"loss(y_true, y_pred, sample_weight=...)"),
        check=check,
        samples=_samples(full, make, option_sets, shapes, check, edges),
        random_sample=_random_sample(full, make, option_sets, check, random_shape),
        reference=_reference(keras_class, option_names),
        normalizer=normalizer or _ones_normalizer(check),
        aliases=(f"keras.{keras_class}", *(f"keras.{a}" for a in aliases), *bare, *exact),
        exact_aliases=exact,
        default_reduction="sum_over_batch_size",
        default_empty_reduction="zero",
        reduction_aliases={"mean_with_sample_weight": "mean"},
        align_sample_weight=keras_sample_weight_shape,
        sample_weight_broadcasts_loss=True,
        batch_coupled=batch_coupled,
        check_values=check_values,
        value_args=("y_true",) if check_values is not None else (),
        value_kinds=value_kinds,
        notes=(notes + " " if notes else "") + _REDUCTION_NOTE,
    )
    return register(spec)


# ---------------------------------------------------------------------------------------------
# crossentropies

_BIN_EDGE_NOTE = ("the probabilities are clipped to [1e-7, 1 - 1e-7] (Keras), so a probability "
                  "of exactly 0 or 1 gives a finite loss with a zero gradient (half the gradient "
                  "at a bound exactly, as jnp.clip's); torch's binary_cross_entropy clamps the "
                  "log at -100 instead")


def _binary_edges(name, extra_opts=()):
    def edges(rng, dtype):
        p = np.array([[0.0, 1.0, 0.0, 1.0], [0.5, 1e-7, 1.0 - 1e-7, 0.3]], dtype)
        t = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]], dtype)
        for o in ({}, {"label_smoothing": 0.1}, *extra_opts):
            yield _edge(name, (p, t), o)
        x = np.array([[1e4, -1e4, 1e4, -1e4], [0.0, 30.0, -30.0, 2.0]], dtype)
        for o in ({"from_logits": True}, {"from_logits": True, "label_smoothing": 0.2},
                  *({"from_logits": True, **e} for e in extra_opts)):
            yield _edge(name, (x, t), o)
        yield _edge(name, (p, t), {"axis": 0})

    return edges


_spec(
    "binary_crossentropy", "BinaryCrossentropy",
    "Keras' binary crossentropy, averaged over the last axis",
    "t' = t·(1 - ls) + ls/2;  from_logits: l = -t'·log σ(x) - (1 - t')·log σ(-x)\n"
    "else p = clip(y_pred, 1e-7, 1 - 1e-7): l = -t'·log p - (1 - t')·log(1 - p)\n"
    "loss = mean(l, axis)",
    _elementwise_check,
    (FROM_LOGITS, LABEL_SMOOTHING, AXIS),
    [{}, {"from_logits": True}, {"label_smoothing": 0.2}, {"from_logits": True, "axis": 0}],
    _binary_make, ((5, 4), (3, 2, 4)), edges=_binary_edges("keras.binary_crossentropy"),
    aliases=("bce", "BCE"),
    y_pred_doc="probabilities (from_logits=False, Keras' default) or logits, any shape",
    y_true_doc="targets in [0, 1], y_pred's shape (any real dtype; cast to y_pred's)",
    notes=_BIN_EDGE_NOTE + ". The unreduced loss is averaged over axis (Keras), not "
    "element-wise (torch).",
)

_spec(
    "binary_focal_crossentropy", "BinaryFocalCrossentropy",
    "Keras' binary focal crossentropy (Lin et al. 2017), averaged over the last axis",
    "t' = t·(1 - ls) + ls/2;  p = σ(x) if from_logits else y_pred\n"
    "bce = -t'·log clip(p) - (1 - t')·log(1 - clip(p));  p_t = t'·p + (1 - t')·(1 - p)\n"
    "l = (1 - p_t)^gamma · bce  (· (t'·alpha + (1 - t')·(1 - alpha)) with "
    "apply_class_balancing)\nloss = mean(l, axis)",
    _elementwise_check,
    (Option("apply_class_balancing", False, "weight by alpha (positives) and 1 - alpha "
            "(negatives)", boolean, allowed="bool"),
     ALPHA_FOCAL, GAMMA_FOCAL, FROM_LOGITS, LABEL_SMOOTHING, AXIS),
    [{}, {"from_logits": True, "gamma": 1.5}, {"apply_class_balancing": True, "alpha": 0.4},
     {"from_logits": True, "apply_class_balancing": True, "label_smoothing": 0.1, "gamma": 0.0}],
    _binary_make, ((5, 4), (3, 2, 4)),
    edges=_binary_edges("keras.binary_focal_crossentropy",
                        ({"apply_class_balancing": True},)),
    y_pred_doc="probabilities (from_logits=False, Keras' default) or logits, any shape",
    y_true_doc="targets in [0, 1], y_pred's shape",
    notes="Keras clips the probabilities inside the crossentropy but not in p_t; from_logits "
    "applies a sigmoid first (so logits of +-1e4 give the clipped crossentropy, not the exact "
    "log-sigmoid). torchvision's sigmoid_focal_loss (multiloss 'focal') weights by alpha "
    "always and works on logits.",
)


def _categorical_edges(name, extra=()):
    def edges(rng, dtype):
        p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], dtype)
        t = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype)
        for o in ({}, {"label_smoothing": 0.3}, *extra):
            yield _edge(name, (p, t), o)
        x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]], dtype)
        for o in ({"from_logits": True}, {"from_logits": True, "label_smoothing": 0.1}):
            yield _edge(name, (x, t), o)
        yield _edge(name, (p.T.copy(), t.T.copy()), {"axis": 0})

    return edges


_spec(
    "categorical_crossentropy", "CategoricalCrossentropy",
    "Keras' categorical crossentropy (one-hot or probability targets)",
    "t' = t·(1 - ls) + ls/C  (C = y_true.shape[-1])\n"
    "from_logits: log q = log_softmax(x, axis);  else q = clip(p / Σ_axis p, 1e-7, 1 - 1e-7)\n"
    "loss = -Σ_axis t'·log q",
    _elementwise_check,
    (FROM_LOGITS, LABEL_SMOOTHING, AXIS),
    [{}, {"from_logits": True}, {"label_smoothing": 0.2, "_soft": True},
     {"from_logits": True, "label_smoothing": 0.1}],
    _categorical_make, ((5, 4), (3, 2, 4)),
    edges=_categorical_edges("keras.categorical_crossentropy"),
    y_pred_doc="class probabilities (renormalised to sum to 1 over axis) or logits, (..., C)",
    y_true_doc="one-hot or probability targets, y_pred's shape",
    notes="Keras renormalises y_pred over the class axis and clips it to [1e-7, 1 - 1e-7] "
    "(from_logits=False); torch's cross_entropy takes logits. The smoothing's C is the size "
    "of the last axis even when axis is another one (Keras).",
)

_spec(
    "categorical_focal_crossentropy", "CategoricalFocalCrossentropy",
    "Keras' categorical focal crossentropy",
    "t' = t·(1 - ls) + ls/C;  q = clip(p / Σ_axis p, 1e-7, 1 - 1e-7) (p = softmax(x) with "
    "from_logits)\nloss = Σ_axis alpha·(1 - q)^gamma·(-t'·log q)",
    _elementwise_check,
    (ALPHA_FOCAL, GAMMA_FOCAL, FROM_LOGITS, LABEL_SMOOTHING, AXIS),
    [{}, {"from_logits": True, "gamma": 1.5}, {"alpha": 1.0, "gamma": 0.0, "_soft": True},
     {"from_logits": True, "label_smoothing": 0.1, "alpha": 0.5}],
    _categorical_make, ((5, 4), (3, 2, 4)),
    edges=_categorical_edges("keras.categorical_focal_crossentropy",
                             ({"gamma": 0.5, "alpha": 0.3},)),
    y_pred_doc="class probabilities or logits, (..., C)",
    y_true_doc="one-hot or probability targets, y_pred's shape",
    notes="alpha is one scalar for every class (Keras); from_logits applies a softmax and then "
    "the same clipping as for probabilities.",
)


def _sparse_make(rng, shape, dtype, opts):
    n_classes = shape[-1]
    t = rng.integers(0, n_classes, size=shape[:-1])
    ignore = opts.get("ignore_class")
    if ignore is not None and t.size:
        t.flat[:: 3] = ignore
    if opts.get("_column"):
        t = t[..., None]
    if opts.get("from_logits"):
        x = rng.normal(scale=2.0, size=shape)
    else:
        x = rng.uniform(0.05, 1.0, size=shape)
    return x.astype(dtype), t.astype(np.int64)


def _classes_random_shape(rng):
    """C >= 2: with C == 1 Keras' wrapper squeezes y_pred (..., 1) to the labels' rank
    (squeeze_or_expand_to_same_rank) and its own shape check then fails."""
    lead = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(0, 2))))
    return (int(rng.integers(0, 6)), *lead, int(rng.integers(2, 5)))


def _sparse_normalizer(inputs, opts):
    named = dict(zip(INPUTS, (np.asarray(a) for a in inputs)))
    p, t = named["y_pred"], named["y_true"]
    t = t.reshape(same_rank_shapes(t.shape, p.shape)[0])
    if t.ndim == p.ndim:
        t = t[..., 0]
    ignore = opts.get("ignore_class")
    m = np.ones(t.shape) if ignore is None else (t.astype(np.int64) != ignore).astype(float)
    return m, m


def _sparse_edges(rng, dtype):
    name = "keras.sparse_categorical_crossentropy"
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], dtype)
    t = np.array([0, 0, 1])
    yield _edge(name, (p, t), {})
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]], dtype)
    yield _edge(name, (x, t), {"from_logits": True})
    yield _edge(name, (x, t), {"from_logits": True, "ignore_class": 1})
    # every target ignored: Keras gives 0 (divide_no_nan); sample weights too
    for red in ("sum_over_batch_size", "mean", "sum"):
        o = {"ignore_class": -1, "reduction": red}
        yield _edge(name + "-all-ignored", (p, np.full(3, -1)), o, np.array([1.0, 2.0, 0.5], dtype))
    yield _edge(name, (p, np.array([[0], [2], [1]])), {})


_spec(
    "sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
    "Keras' crossentropy with class-index targets, with ignore_class",
    "from_logits: log q = log_softmax(x);  else q = clip(p / Σ_c p, 1e-7, 1 - 1e-7)\n"
    "loss = -log q[t], and 0 (masked) where t == ignore_class",
    _sparse_check,
    (FROM_LOGITS,
     Option("ignore_class", None, "a class index whose targets are masked: loss 0, and the "
            "reductions divide by the number (or weight) of the others (Keras' mask)",
            _optional_int, allowed="None | int"),
     Option("axis", -1, "the class axis; Keras' JAX backend supports only the last", _int_axis,
            allowed="-1")),
    [{}, {"from_logits": True}, {"ignore_class": 2}, {"from_logits": True, "ignore_class": -1}],
    _sparse_make, ((5, 4), (3, 2, 4)), edges=_sparse_edges,
    random_shape=_classes_random_shape,
    normalizer=_sparse_normalizer, y_true_diff=False,
    check_values=_check_labels(lambda infos: infos["y_pred"].shape[-1]), value_kinds="fiu",
    y_pred_doc="class probabilities (renormalised over the last axis) or logits, (..., C)",
    y_true_doc="class indices, y_pred's shape without the class axis (or with a trailing 1); "
    "floating indices are truncated to int32 as Keras does",
    notes="Keras' one_hot gives a zero row (loss 0) for an index out of range; multiloss "
    "raises on concrete indices and gives NaN under a trace. With ignore_class the reductions "
    "are Keras' masked ones: sum_over_batch_size divides by the number of unmasked targets, "
    "and nothing unmasked gives 0.",
)


def _gce_make(rng, shape, dtype, opts):
    return _probs(rng, shape, dtype), rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int64)


def _gce_random_shape(rng):
    """(N, C) with C >= 2: Keras' wrapper expands (N,) labels to (N, 1) against a (N, 1)
    y_pred (squeeze_or_expand_to_same_rank), which breaks its one-hot product, and its empty
    rank-3 batches fail to broadcast; neither is a meaningful input."""
    return (int(rng.integers(0, 6)), int(rng.integers(2, 5)))


def _gce_edges(rng, dtype):
    name = "keras.categorical_generalized_cross_entropy"
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], dtype)
    yield _edge(name, (p, np.array([0, 2, 1])), {})
    yield _edge(name, (p, np.array([0, 2, 2])), {"q": 0.7})
    yield _edge(name, (p, np.array([1, 0, 1])), {"q": 0.7})  # p = 0 at the target: NaN grads


_spec(
    "categorical_generalized_cross_entropy", "CategoricalGeneralizedCrossEntropy",
    "Keras' generalized cross entropy (Zhang & Sabuncu 2018) on class probabilities",
    "p = y_pred[t];  loss = (1 - p^q) / q",
    _gce_check,
    (Option("q", 0.5, "the exponent: q -> 0 is the crossentropy, q = 1 the MAE; Keras "
            "requires 0 < q < 1", real(0.0, 1.0, lo_open=True, hi_open=True),
            allowed="float in (0, 1)"),),
    [{}, {"q": 0.2}, {"q": 0.9}],
    _gce_make, ((5, 4), (3, 2, 4)), edges=_gce_edges, y_true_diff=False,
    random_shape=_gce_random_shape,
    check_values=_check_labels(lambda infos: infos["y_pred"].shape[-1]), value_kinds="fiu",
    y_pred_doc="class probabilities (not renormalised, not clipped), (..., C)",
    y_true_doc="class indices, y_pred's shape without the class axis",
    notes="y_pred is used as given (no clipping): p = 0 at the target gives an infinite "
    "gradient there and NaN (inf·0) for the row's other classes, as in Keras.",
)


# ---------------------------------------------------------------------------------------------
# regression

_MEAN_NOTE = ("The unreduced loss is averaged over the last axis (Keras), so an (N, D) input "
              "gives (N,): sample_weight is per row. Keras 3.15 on JAX computes that mean in "
              "float32 even for float64 inputs (its type promotion maps float64 to float32); "
              "multiloss computes float64 in float64.")


def _regression_make(lo=-2.0, hi=2.0, t_lo=None, t_hi=None):
    def make(rng, shape, dtype, opts):
        x = rng.uniform(lo, hi, size=shape)
        t = rng.uniform(lo if t_lo is None else t_lo, hi if t_hi is None else t_hi, size=shape)
        return x.astype(dtype), t.astype(dtype)

    return make


def _regression_spec(name, keras_class, summary, formula, make, edges_data, aliases=(),
                     options=(), option_sets=({},), notes="", y_pred_doc=None,
                     y_true_doc=None):
    full = f"keras.{name}"

    def edges(rng, dtype):
        for inputs, opts in edges_data:
            yield _edge(full, tuple(np.asarray(a, dtype) for a in inputs), dict(opts))

    return _spec(
        name, keras_class, summary, formula, _elementwise_check, options, list(option_sets),
        make, ((5, 4), (3, 2, 4)), edges=edges, aliases=aliases,
        notes=(notes + " " if notes else "") + _MEAN_NOTE,
        y_pred_doc=y_pred_doc or "predictions, any shape with at least one axis",
        y_true_doc=y_true_doc or "targets, y_pred's shape (any real dtype; cast to y_pred's)",
    )


_regression_spec(
    "mean_squared_error", "MeanSquaredError", "Keras' mean squared error over the last axis",
    "loss = mean((y_true - y_pred)², axis=-1)", _regression_make(),
    [(([[0.0, 1.0, -1.0], [1e3, 0.0, 2.0]], [[0.0, 1.0, 1.0], [-1e3, 0.0, 2.0]]), {})],
    aliases=("mse", "MSE"),
)
_regression_spec(
    "mean_absolute_error", "MeanAbsoluteError", "Keras' mean absolute error over the last axis",
    "loss = mean(|y_true - y_pred|, axis=-1)", _regression_make(),
    [(([[0.0, 1.0, -1.0], [1e3, 0.5, 2.0]], [[0.0, 1.0, 1.0], [-1e3, 0.5, 2.0]]), {})],
    aliases=("mae", "MAE"),
    notes="At y_pred == y_true the gradient of |y_true - y_pred| is JAX's, sign +1 (torch.abs's "
    "is 0).",
)
_regression_spec(
    "mean_absolute_percentage_error", "MeanAbsolutePercentageError",
    "Keras' mean absolute percentage error over the last axis",
    "loss = 100 · mean(|(y_true - y_pred) / max(|y_true|, 1e-7)|, axis=-1)",
    _regression_make(0.5, 3.0),
    [(([[0.0, 1.0, -1.0], [2.0, 1e-8, 3.0]], [[0.0, 0.0, 1.0], [-2.0, 0.0, 3.0]]), {})],
    aliases=("mape", "MAPE"),
    notes="A target of 0 divides by 1e-7 (Keras' epsilon), giving very large finite values.",
)
_regression_spec(
    "mean_squared_logarithmic_error", "MeanSquaredLogarithmicError",
    "Keras' mean squared logarithmic error over the last axis",
    "loss = mean((log(max(y_pred, ε) + 1) - log(max(y_true, ε) + 1))², axis=-1), "
    "ε = float32(1e-7)",
    _regression_make(0.0, 3.0, -0.5, 3.0),
    [(([[0.0, 1.0, -1.0], [1e-9, 2.0, 5.0]], [[0.0, -3.0, 1.0], [0.0, 2.0, 0.0]]), {})],
    aliases=("msle", "MSLE"),
    notes="Values below ε are clipped (no gradient below it, half at exactly ε). ε is "
    "float32(1e-7) = 1.0000000116860974e-07 also in float64: Keras makes it a float32 "
    "tensor before mixing it with the inputs.",
)
_regression_spec(
    "huber", "Huber", "Keras' Huber loss over the last axis",
    "e = y_pred - y_true;  l = e²/2 if |e| <= delta else delta·|e| - delta²/2;  "
    "loss = mean(l, axis=-1)",
    _regression_make(-3.0, 3.0),
    [(([[0.0, 1.0, -1.0], [2.5, 0.5, 2.0]], [[0.0, 0.0, 1.0], [-2.5, 0.5, 0.5]]), {}),
     (([[0.0, 1.0, -1.0], [2.5, 0.5, 2.0]], [[0.0, 0.0, 1.0], [-2.5, 0.5, 0.5]]),
      {"delta": 1.5})],
    options=(Option("delta", 1.0, "where the loss turns from quadratic to linear", real(),
                    allowed="float"),),
    option_sets=({}, {"delta": 0.5}, {"delta": 2.0}),
    notes="At |e| == delta the quadratic branch is taken (Keras: <=). Keras' Loss object is "
    "named 'huber_loss'; torch's huber averages element-wise and has no mean over an axis.",
)
_regression_spec(
    "log_cosh", "LogCosh", "Keras' log-cosh loss over the last axis",
    "x = y_pred - y_true;  l = x + softplus(-2x) - log 2;  loss = mean(l, axis=-1)",
    _regression_make(-3.0, 3.0),
    [(([[0.0, 30.0, -30.0], [400.0, -400.0, 1e-3]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), {})],
    aliases=("logcosh",),
    notes="softplus is logaddexp(x, 0) (jax.nn), not torch's F.softplus, which returns x "
    "above 20.",
)


# ---------------------------------------------------------------------------------------------
# hinges


def _hinge_make(rng, shape, dtype, opts):
    x = rng.normal(size=shape)
    t = np.where(rng.random(size=shape) < 0.5, 0.0, 1.0)
    if opts.get("_pm1"):
        t = 2 * t - 1
    return x.astype(dtype), t.astype(dtype)


def _hinge_edges(name):
    def edges(rng, dtype):
        # ties at the hinge: y·x == 1 exactly (half the gradient, jnp.maximum's)
        x = np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0]], dtype)
        yield _edge(name, (x, np.array([[1, 0, 1], [1, 1, 0]], dtype)), {})
        yield _edge(name, (x, np.array([[1, -1, 1], [1, 1, -1]], dtype)), {})
        # labels other than {0, 1} and {-1, 1} are used as given
        yield _edge(name, (x, np.array([[0.5, -1, 1], [2.0, 1, 0]], dtype)), {})

    return edges


_HINGE_NOTE = ("y_true in {0, 1} (every entry of the batch) is converted to {-1, 1}, other "
               "labels are used as given (Keras' convert_binary_labels_to_hinge, a decision "
               "over the whole batch); at a tie y·x == 1 the gradient is half (jnp.maximum).")

_spec(
    "hinge", "Hinge", "Keras' hinge loss over the last axis",
    "t = 2·y_true - 1 if all y_true in {0, 1} else y_true;  loss = mean(max(1 - t·y_pred, 0), "
    "axis=-1)",
    _elementwise_check, (), [{}, {"_pm1": True}], _hinge_make, ((5, 4), (3, 2, 4)),
    edges=_hinge_edges("keras.hinge"), notes=_HINGE_NOTE,
    y_pred_doc="scores, any shape", y_true_doc="labels in {-1, 1} or {0, 1}, y_pred's shape",
)
_spec(
    "squared_hinge", "SquaredHinge", "Keras' squared hinge loss over the last axis",
    "t = 2·y_true - 1 if all y_true in {0, 1} else y_true;  loss = mean(max(1 - t·y_pred, 0)², "
    "axis=-1)",
    _elementwise_check, (), [{}, {"_pm1": True}], _hinge_make, ((5, 4), (3, 2, 4)),
    edges=_hinge_edges("keras.squared_hinge"), notes=_HINGE_NOTE,
    y_pred_doc="scores, any shape", y_true_doc="labels in {-1, 1} or {0, 1}, y_pred's shape",
)


def _categorical_hinge_edges(rng, dtype):
    name = "keras.categorical_hinge"
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype)
    x = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [2.0, 2.0, -1.0]], dtype)  # ties
    yield _edge(name, (x, t), {})


_spec(
    "categorical_hinge", "CategoricalHinge", "Keras' categorical hinge (Crammer-Singer style)",
    "pos = Σ y_true·y_pred;  neg = max((1 - y_true)·y_pred);  loss = max(neg - pos + 1, 0)",
    _elementwise_check, (), [{}], _categorical_make, ((5, 4), (3, 2, 4)),
    edges=_categorical_hinge_edges,
    notes="Tied maxima share neg's gradient equally (jnp.max; torch.amax); at the hinge's tie "
    "the gradient is half.",
    y_pred_doc="scores, (..., C)", y_true_doc="one-hot targets, y_pred's shape",
)


# ---------------------------------------------------------------------------------------------
# kl, poisson, cosine


def _kl_make(rng, shape, dtype, opts):
    return _probs(rng, shape, dtype), _probs(rng, shape, dtype)


def _kl_edges(rng, dtype):
    name = "keras.kl_divergence"
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5]], dtype)
    t = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype)
    yield _edge(name, (p, t), {})


_spec(
    "kl_divergence", "KLDivergence", "Keras' Kullback-Leibler divergence over the last axis",
    "t = clip(y_true, 1e-7, 1);  p = clip(y_pred, 1e-7, 1);  loss = Σ t·log(t / p) (axis=-1)",
    _elementwise_check, (), [{}], _kl_make, ((5, 4), (3, 2, 4)), edges=_kl_edges,
    aliases=("kld", "KLD", "kullback_leibler_divergence"),
    notes="Both distributions are clipped to [1e-7, 1] (Keras), so zeros give finite values; "
    "torch's kl_div takes log-probabilities and does not clip.",
    y_pred_doc="probabilities, (..., C)", y_true_doc="probabilities, y_pred's shape",
)


def _poisson_make(rng, shape, dtype, opts):
    return (rng.uniform(0.1, 3.0, size=shape).astype(dtype),
            rng.poisson(1.5, size=shape).astype(dtype))


def _poisson_edges(rng, dtype):
    name = "keras.poisson"
    yield _edge(name, (np.array([[0.0, 1.0, 2.0], [1e-3, 0.0, 5.0]], dtype),
                       np.array([[0.0, 0.0, 3.0], [1.0, 2.0, 0.0]], dtype)), {})


_spec(
    "poisson", "Poisson", "Keras' Poisson loss (y_pred is the rate) over the last axis",
    "loss = mean(y_pred - y_true·log(y_pred + 1e-7), axis=-1)",
    _elementwise_check, (), [{}], _poisson_make, ((5, 4), (3, 2, 4)), edges=_poisson_edges,
    notes="y_pred is the rate itself (torch's poisson_nll with log_input=False, eps inside the "
    "log; Keras has no Stirling term and averages over the last axis). " + _MEAN_NOTE,
    y_pred_doc="rates >= 0, any shape", y_true_doc="counts, y_pred's shape",
)


def _cosine_make(rng, shape, dtype, opts):
    return rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)


def _cosine_random_shape(rng):
    """At least 2 along every axis: over an axis of length 1 the cosine is +-1 exactly and its
    gradient is 0 up to rounding, which a relative error cannot judge."""
    n = int(rng.integers(2, 6))
    return (n,) + tuple(int(d) for d in rng.integers(2, 5, size=int(rng.integers(1, 3))))


def _cosine_edges(rng, dtype):
    name = "keras.cosine_similarity"
    # a zero vector (NaN gradient, as Keras), parallel vectors, an ordinary pair
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [3.0, 4.0, 0.0], [1.0, -2.0, 0.5]], dtype)
    t = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.5, 1.0, 2.0]], dtype)
    yield _edge(name, (x, t), {})
    yield _edge(name, (x, t), {"axis": 0})


_spec(
    "cosine_similarity", "CosineSimilarity",
    "Keras' cosine similarity loss: minus the cosine between y_pred and y_true",
    "n(x) = x · min(rsqrt(Σ_axis x²), 1/1e-7);  loss = -Σ_axis n(y_true)·n(y_pred)",
    _elementwise_check, (AXIS,), [{}, {"axis": 0}], _cosine_make, ((5, 4), (3, 2, 4)),
    edges=_cosine_edges, random_shape=_cosine_random_shape,
    notes="The loss is -cos, in [-1, 1] (Keras), not 1 - cos; a zero vector gives 0 with a "
    "NaN gradient (Keras: rsqrt(0) = inf). torch's cosine_similarity divides by max(norm, 1e-8) instead.",
    y_pred_doc="vectors, any shape", y_true_doc="vectors, y_pred's shape",
)


# ---------------------------------------------------------------------------------------------
# dice, tversky


def _region_make(rng, shape, dtype, opts):
    return (rng.uniform(0.0, 1.0, size=shape).astype(dtype),
            (rng.random(size=shape) < 0.4).astype(dtype))


def _region_edges(name, extra=()):
    def edges(rng, dtype):
        z = np.zeros((2, 3, 3), dtype)
        one = np.ones((2, 3, 3), dtype)
        for o in ({}, {"axis": (1, 2)}, *extra):
            yield _edge(name + "-empty-masks", (z, z), o)  # no foreground anywhere
            yield _edge(name, (one, z), o)
            yield _edge(name, (one, one), o)

    return edges


def _region_random_shape(rng):
    """Rank 3 (the grid's axis=(1, 2) needs it)."""
    return (int(rng.integers(0, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 4)))


_REGION_NOTE = ("axis=None (Keras' default) reduces over every axis, the batch included, so "
                "the unreduced loss is one number for the whole batch and sample_weight can "
                "only be a scalar; axis=(1, 2, ...) gives one loss per sample. y_pred is used "
                "as given (probabilities; no sigmoid, no clipping). The smoothing term is "
                "Keras' epsilon 1e-7 in the denominator only, so an empty mask (y_true = "
                "y_pred = 0) gives loss 1, not 0 (segmentation_models_pytorch's dice gives 0 "
                "there).")

_spec(
    "dice", "Dice", "Keras' Dice loss",
    "loss = 1 - 2·Σ y_true·y_pred / (Σ y_true + Σ y_pred + 1e-7), sums over axis",
    _region_check,
    (Option("axis", None, "the axes summed over (None: all, the batch included)",
            _optional_axes, allowed="None | int | tuple of int"),),
    [{}, {"axis": (1, 2)}, {"axis": -1}], _region_make, ((4, 3, 3), (3, 2, 4)),
    random_shape=_region_random_shape,
    batch_coupled=_over_batch, edges=_region_edges("keras.dice"), notes=_REGION_NOTE,
    y_pred_doc="predicted probabilities, any shape", y_true_doc="binary masks, y_pred's shape",
)

_spec(
    "tversky", "Tversky", "Keras' Tversky loss (Salehi et al. 2017)",
    "TP = Σ y_true·y_pred;  FP = Σ (1 - y_pred)·y_true;  FN = Σ y_pred·(1 - y_true)\n"
    "loss = 1 - TP / (TP + alpha·FP + beta·FN + 1e-7), sums over axis",
    _region_check,
    (Option("alpha", 0.5, "the weight of Keras' fp term, Σ (1 - y_pred)·y_true", real(),
            allowed="float"),
     Option("beta", 0.5, "the weight of Keras' fn term, Σ y_pred·(1 - y_true)", real(),
            allowed="float"),
     Option("axis", None, "the axes summed over (None: all, the batch included)",
            _optional_axes, allowed="None | int | tuple of int")),
    [{}, {"alpha": 0.7, "beta": 0.3, "axis": (1, 2)}, {"alpha": 0.2, "beta": 0.8, "axis": -1}],
    _region_make, ((4, 3, 3), (3, 2, 4)), random_shape=_region_random_shape,
    batch_coupled=_over_batch, edges=_region_edges("keras.tversky", ({"alpha": 0.3, "beta": 0.7},)),
    notes=_REGION_NOTE + " Keras names the missed foreground Σ (1 - y_pred)·y_true 'fp' and "
    "weights it by alpha (the paper's and smp's alpha weights the false positives "
    "Σ y_pred·(1 - y_true)); multiloss keeps Keras' assignment.",
    y_pred_doc="predicted probabilities, any shape", y_true_doc="binary masks, y_pred's shape",
)


# ---------------------------------------------------------------------------------------------
# ctc


def _ctc_make(rng, shape, dtype, opts):
    n, t_len, n_classes = shape[0], shape[1], max(shape[2], 2)
    s_len = max(1, t_len // 2)
    labels = rng.integers(1, n_classes, size=(n, s_len))
    for b in range(n):  # padding (0) at the end, a variable length
        labels[b, int(rng.integers(0, s_len + 1)):] = 0
    if opts.get("_repeat") and n and s_len > 1:
        labels[0, :2] = labels[0, 0] if labels[0, 0] else 1
    return rng.normal(size=(n, t_len, n_classes)).astype(dtype), labels.astype(np.int64)


def _ctc_random_shape(rng):
    return (int(rng.integers(0, 4)), int(rng.integers(1, 7)), int(rng.integers(2, 5)))


def _ctc_edges(rng, dtype):
    name = "keras.ctc"
    x = rng.normal(size=(2, 3, 4)).astype(dtype)
    # more labels than frames (no alignment: Keras' log(0) is -1e5, so a large finite loss)
    yield _edge(name, (x, np.array([[1, 2, 3, 1], [1, 1, 1, 0]])), {})
    # every label padding: the all-blank path
    yield _edge(name, (x, np.zeros((2, 2), np.int64)), {})
    big = np.where(rng.random(size=(2, 3, 4)) < 0.5, 1e4, -1e4).astype(dtype)
    yield _edge(name, (big, np.array([[1, 2], [3, 0]])), {})


_spec(
    "ctc", "CTC", "Keras' connectionist temporal classification loss",
    "log q = log_softmax(y_pred);  S_b = #{y_true[b] != 0};  every frame counts\n"
    "loss_b = -log Σ_{alignments of y_true[b, :S_b], blank 0} Π_t q[b, t, a_t] "
    "(optax's forward algorithm, log 0 = -1e5)",
    _ctc_check, (), [{}, {"_repeat": True}], _ctc_make, ((3, 6, 4), (4, 5, 3)),
    edges=_ctc_edges, y_true_diff=False, check_values=_check_ctc_values, value_kinds="fiu",
    random_shape=_ctc_random_shape,
    y_pred_doc="logits (batch_size, max_length, num_classes); Keras applies log_softmax",
    y_true_doc="integer labels (batch_size, max_label_length), 0 the blank and the padding",
    notes="Keras' ctc takes logits, uses 0 as the blank and as the padding of y_true (a label "
    "0 inside a sequence is padding), and uses every frame (no input lengths). Impossible "
    "alignments give a large finite loss (log 0 is -1e5, optax's convention), where torch's "
    "ctc_loss gives inf. Keras 3.15 computes float64 inputs in float32 (it promotes the "
    "logits with float32); multiloss computes float64 in float64, and its float64 reference "
    "is Keras with that promotion turned off. Per-sequence loss, shape (N,); torch's 'mean' "
    "divides by the target lengths, Keras' reductions do not.",
)


# ---------------------------------------------------------------------------------------------
# circle


def _circle_make(rng, shape, dtype, opts):
    n, d = shape[0], max(shape[-1], 2)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, max(2, n // 2), size=n)
    if opts.get("_singleton") and n:
        labels[0] = 99  # no positive for row 0: masked
    return x.astype(dtype), labels.astype(np.int64)


def _circle_normalizer(inputs, opts):
    labels = np.asarray(inputs[INPUTS.index("y_true")]).astype(np.int64)
    same = labels[:, None] == labels[None, :]
    pos = same.copy()
    if opts["remove_diagonal"]:
        pos &= ~np.eye(len(labels), dtype=bool)
    m = (pos.any(axis=1) & (~same).any(axis=1)).astype(float)
    return m, m


def _circle_random_shape(rng):
    return (int(rng.integers(0, 7)), int(rng.integers(2, 5)))


def _circle_edges(rng, dtype):
    name = "keras.circle"
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype)
    yield _edge(name, (x, np.array([0, 0, 1, 1])), {})  # identical and opposite embeddings
    yield _edge(name, (x, np.array([0, 1, 2, 3])), {})  # no positives: every row masked
    yield _edge(name, (x, np.array([0, 0, 0, 0])), {"remove_diagonal": False})  # no negatives


_spec(
    "circle", "Circle", "Keras' circle loss (Sun et al. 2020) on L2-normalised embeddings",
    "d = max(1 - y_pred·y_predᵀ, 0);  P, N = same-label pairs (the diagonal removed), "
    "other-label pairs\n"
    "w⁺ = max(m + d, 0)·P;  w⁻ = max(1 + m - d, 0)·N\n"
    "loss_i = softplus(logsumexp_P(-γ·w⁺·(m - d)) + logsumexp_N(γ·w⁻·(1 - m - d))), masked "
    "where 0 (a row without positives or negatives)",
    _circle_check,
    (Option("gamma", 80.0, "the scale γ", real(), allowed="float"),
     Option("margin", 0.4, "the relaxation margin m", real(), allowed="float"),
     Option("remove_diagonal", True, "leave out each embedding's pair with itself", boolean,
            allowed="bool")),
    [{}, {"gamma": 10.0, "margin": 0.25}, {"_singleton": True, "remove_diagonal": False}],
    _circle_make, ((6, 3), (8, 4)), edges=_circle_edges, normalizer=_circle_normalizer,
    y_true_diff=False, random_shape=_circle_random_shape,
    batch_coupled=True,  # in-batch pairs
    y_pred_doc="L2-normalised embeddings (batch_size, dim); Keras does not normalise them",
    y_true_doc="integer labels (batch_size,)",
    notes="Rows whose loss is 0 (no positive or no negative pair) are masked as in Keras: the "
    "reductions divide by the number (or weight) of the other rows. The reference embeddings "
    "are the batch itself (Keras' class has no ref_labels / ref_embeddings).",
)
