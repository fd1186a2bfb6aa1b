"""Classification extras: focal (= sigmoid_focal), softmax_focal, poly1_cross_entropy,
generalized_cross_entropy, multiclass_hinge, perceptron, multiclass_perceptron, sparsemax,
multiclass_sparsemax, ranking_softmax. Specs only; the implementations are in
``_more_jax.py`` and ``_more_torch.py`` (re-exported by ``_jax.py`` and ``_torch.py``).

References (docs/classification-extra.md):

- focal: torchvision.ops.sigmoid_focal_loss. torchvision does not import here (it needs
  another torch), so the reference is its formula transcribed on torch below
  (``_ref_focal``, torchvision 0.2x's focal_loss.py line by line); a test also compares with
  optax.sigmoid_focal_loss.
- softmax_focal: kornia.losses.focal_loss (kornia 0.9), for the options it has.
- generalized_cross_entropy: no library defines it; the reference is the paper's formula
  (Zhang & Sabuncu 2018, eq. 5) written on torch.
- the others: optax's functions of the same names, on JAX (``jax_reference``).
"""

from __future__ import annotations

import numpy as np

from ..._registry import (
    InputSpec,
    LossSpec,
    Option,
    Sample,
    array_option,
    integer,
    real,
    register,
)
from .._common import (
    REDUCTIONS,
    case_id,
    check_class_indices,
    class_shapes,
    expect_float,
    expect_same_shape,
    grid,
    jax_reference,
    loss_shape_weight,
    positive,
)

FAMILY = "classification"


# ---------------------------------------------------------------------------------------------
# checks


def _focal_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x, "floating-point logits")
    expect_float("target", t, "floating-point targets in [0, 1] (as torchvision requires)")
    expect_same_shape("target", t, "input", x)
    return x.shape


def _softmax_focal_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x, "floating-point logits")
    if x.ndim < 2:
        raise ValueError(
            f"input: expected logits of shape (N, C) or (N, C, d1, ..., dk) (kornia's (B, C, *)), "
            f"got shape {x.shape}"
        )
    n_classes, idx_shape = class_shapes(x)
    if t.kind not in "iu":
        raise TypeError(f"target: expected integer class indices of shape {idx_shape}, got "
                        f"{t.describe()}")
    if t.shape != idx_shape:
        raise ValueError(f"target: expected class indices of shape {idx_shape} for input of "
                         f"shape {x.shape}, got shape {t.shape}")
    w = opts.get("weight")
    if w is not None and tuple(w.shape) != (n_classes,):
        raise ValueError(f"weight: expected one weight per class, shape ({n_classes},), got "
                         f"shape {tuple(w.shape)}")
    a = opts.get("alpha")
    if a is not None and tuple(a.shape) not in ((), (n_classes,)):
        raise ValueError(f"alpha: expected a number or one value per class, shape "
                         f"({n_classes},), got shape {tuple(a.shape)}")
    return idx_shape


def _classes_last(x, what="scores"):
    expect_float("input", x, f"floating-point {what}")
    if x.ndim < 1:
        raise ValueError(f"input: expected {what} of shape (..., C) (classes last, as optax), "
                         f"got shape {x.shape}")
    return x.shape[-1], x.shape[:-1]


def _index_target(t, idx_shape, x):
    if t.kind not in "iu":
        raise TypeError(f"target: expected integer class indices of shape {idx_shape}, got "
                        f"{t.describe()}")
    if t.shape != idx_shape:
        raise ValueError(f"target: expected class indices of shape {idx_shape} (the input's "
                         f"shape without its last axis, the classes) for input of shape "
                         f"{x.shape}, got shape {t.shape}")


def _classes_last_index_check(named, opts):
    x, t = named["input"], named["target"]
    _, idx_shape = _classes_last(x)
    _index_target(t, idx_shape, x)
    return idx_shape


def _poly1_check(named, opts):
    x, t = named["input"], named["target"]
    _, idx_shape = _classes_last(x, "logits")
    if t.kind == "f":
        if t.shape != x.shape:
            raise ValueError(f"target: expected integer class indices of shape {idx_shape} or "
                             f"class probabilities of the input's shape {x.shape}, got "
                             f"{t.describe()}")
        return idx_shape
    _index_target(t, idx_shape, x)
    return idx_shape


def _gce_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x, "floating-point logits")
    _, idx_shape = class_shapes(x)
    if t.kind not in "iu":
        raise TypeError(f"target: expected integer class indices of shape {idx_shape}, got "
                        f"{t.describe()}")
    if t.shape != idx_shape:
        raise ValueError(f"target: expected class indices of shape {idx_shape} for input of "
                         f"shape {x.shape}, got shape {t.shape}")
    return idx_shape


def _perceptron_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x, "floating-point scores")
    if t.kind not in "fi":
        raise TypeError(f"target: expected labels +1 / -1, floating or signed integer, got "
                        f"{t.describe()}")
    expect_same_shape("target", t, "input", x)
    return x.shape


def _sparsemax_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x, "floating-point logits")
    if t.kind not in "fiub":
        raise TypeError(f"target: expected labels 0 / 1 (bool, integer or floating), got "
                        f"{t.describe()}")
    expect_same_shape("target", t, "input", x)
    return x.shape


def _ranking_softmax_check(named, opts):
    x, t = named["input"], named["target"]
    _, list_shape = _classes_last(x, "scores of the items of each list")
    if t.kind not in "fiu":
        raise TypeError(f"target: expected relevance labels (floating or integer) of the "
                        f"input's shape {x.shape}, got {t.describe()}")
    expect_same_shape("target", t, "input", x)
    return list_shape


# value checks


def _check_classes_last_indices(values, infos, opts):
    t = values.get("target")
    if t is None or t.size == 0:
        return
    n_classes = infos["input"].shape[-1]
    bad = (t < 0) | (t >= n_classes)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"target: expected class indices in [0, {n_classes}), got "
                         f"{t[bad][0]} at index {pos}")


def _check_poly1_values(values, infos, opts):
    if infos["target"].kind in "iu":
        _check_classes_last_indices(values, infos, opts)


def _check_binary_labels(values, infos, opts):
    t = values.get("target")
    if t is None or t.size == 0:
        return
    bad = (t != 0) & (t != 1) & np.isfinite(t)  # NaN and inf propagate, as in optax
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"target: expected labels 0 or 1, got {t[bad][0]} at index {pos}")


def _check_focal_values(values, infos, opts):
    t = values.get("target")
    if t is None or t.size == 0:
        return
    bad = ((t < 0) | (t > 1)) & np.isfinite(t)  # NaN and inf propagate, as in torchvision
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"target: expected values in [0, 1], got {t[bad][0]} at index {pos}")


# ---------------------------------------------------------------------------------------------
# normalizers


def _ones(shape_of):
    def normalizer(inputs, opts):
        shape = shape_of(inputs)
        return np.ones(shape), np.ones(shape)

    return normalizer


def _softmax_focal_normalizer(inputs, opts):
    valid = (np.asarray(inputs[1]) != opts["ignore_index"]).astype(np.float64)
    return valid, valid


def _idx_shape(inputs):
    x = inputs[0]
    return () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]


# ---------------------------------------------------------------------------------------------
# samples


def _empty_and_zero_weights(name, empty_inputs, full_inputs, loss_shape, dtype, opts=None):
    """An empty batch ("mean", "sum", "sum_over_batch_size") and all-zero sample weights."""
    opts = opts or {}
    for red in ("mean", "sum", "sum_over_batch_size"):
        yield Sample(f"{name}[empty-batch,reduction={red}]", empty_inputs,
                     {**opts, "reduction": red})
    for e in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={e}]", full_inputs,
                     {**opts, "empty_reduction": e}, np.zeros(loss_shape, dtype))


def _reductions_grid(name, data, loss_shape, rng, dtype, extra=None, sw_shape=None):
    """Every reduction, with and without a sample weight (zeros, fractions, values above 1)."""
    for g in grid(reduction=REDUCTIONS, sw=(False, True)):
        opts = {"reduction": g["reduction"], **(extra or {})}
        sw = loss_shape_weight(rng, sw_shape or loss_shape, dtype) if g["sw"] else None
        yield Sample(case_id(f"{name}", {**opts, "sw": g["sw"]}), data(), opts, sw)


def _rand_shape(rng, lo=0, hi=4, max_rank=2):
    return tuple(int(d) for d in rng.integers(lo, hi, size=int(rng.integers(0, max_rank + 1))))


def _random_opts(rng):
    opts = {"reduction": str(rng.choice(REDUCTIONS))}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    return opts


# focal


def _focal_targets(rng, shape, dtype):
    t = (rng.random(size=shape) < 0.4).astype(np.float64)
    if t.size > 2:
        t.flat[1] = 0.3  # soft targets in [0, 1] are allowed
    return t.astype(dtype)


def _focal_samples(rng, dtype):
    name = "focal"

    def data(shape=(4, 3)):
        return (rng.normal(size=shape) * 2).astype(dtype), _focal_targets(rng, shape, dtype)

    yield from _reductions_grid(f"{name}[2d]", data, (4, 3), rng, dtype)
    for alpha, gamma in ((0.25, 0.0), (-1.0, 2.0), (0.5, 1.5), (0.9, 0.5), (1.0, 3.0), (0.0, 1.0)):
        yield Sample(f"{name}[alpha={alpha},gamma={gamma}]", data((3, 2, 2)),
                     {"alpha": alpha, "gamma": gamma, "reduction": "none"})
    yield Sample(f"{name}[0d]", data(()), {})
    # saturated logits: p is exactly 0 or 1; targets exactly 0 and 1
    x = np.array([1e4, -1e4, 1e4, -1e4, 40.0, -40.0, 0.0, 20.0], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.0], dtype)
    for gamma in (2.0, 0.0):
        yield Sample(f"{name}[logits+-1e4,gamma={gamma}]", (x, t),
                     {"gamma": gamma, "reduction": "none"})
    yield Sample(f"{name}[logits+-1e4,sum]", (x, t), {"reduction": "sum", "alpha": -1.0})
    x = np.array([np.inf, -np.inf, np.nan, 1.0], dtype)
    yield Sample(f"{name}[inf-nan]", (x, np.array([1.0, 0.0, 1.0, 0.0], dtype)),
                 {"reduction": "none"})
    yield from _empty_and_zero_weights(name, data((0, 3)), data((4, 3)), (4, 3), dtype)


def _focal_random(rng, dtype):
    shape = _rand_shape(rng, max_rank=3)
    x = rng.normal(size=shape) * float(rng.choice([1.0, 3.0, 30.0]))
    t = _focal_targets(rng, shape, np.float64)
    opts = _random_opts(rng)
    opts["alpha"] = float(rng.choice([0.25, -1.0, 0.5, 1.0]))
    opts["gamma"] = float(rng.choice([2.0, 0.0, 1.0, 3.5]))
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("focal[random]", opts), (x.astype(dtype), t.astype(dtype)), opts, sw)


# softmax_focal


def _softmax_focal_data(rng, dtype, shape, ignore=False, ignore_index=-100):
    x = (rng.normal(size=shape) * 2).astype(dtype)
    t = rng.integers(0, shape[1], size=(shape[0],) + shape[2:]).astype(np.int64)
    if ignore and t.size > 1:
        t.flat[:: max(2, t.size // 3)] = ignore_index
    return x, t


def _softmax_focal_samples(rng, dtype):
    name = "softmax_focal"
    c = 4
    yield from _reductions_grid(f"{name}[2d,ignore]",
                                lambda: _softmax_focal_data(rng, dtype, (6, c), True), (6,), rng,
                                dtype)
    alphas = {"scalar": 0.25, "class": positive(rng, (c,), dtype, 0.1, 1.0)}
    for g in grid(alpha=(None, "scalar", "class"), weight=(False, True), gamma=(2.0, 0.5)):
        opts = {"gamma": g["gamma"], "reduction": "mean"}
        if g["alpha"]:
            opts["alpha"] = alphas[g["alpha"]]
        if g["weight"]:
            opts["weight"] = positive(rng, (c,), dtype, 0.2, 2.0)
        yield Sample(case_id(f"{name}[kdim,ignore]", {**opts, "alpha": g["alpha"]}),
                     _softmax_focal_data(rng, dtype, (2, c, 3, 2), True), opts)
    x, t = _softmax_focal_data(rng, dtype, (5, c, 3), True, ignore_index=2)
    yield Sample(f"{name}[3d,ignore_index=2,none]", (x, t),
                 {"ignore_index": 2, "reduction": "none", "alpha": 0.75, "gamma": 0.0})
    # saturated logits: p_t exactly 1 (the factor from a detached copy), exactly 0
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4], [1e4, 1e4, 1e4],
                  [30.0, 0.0, 0.0]], dtype)
    t = np.array([0, 2, 2, 1, 0])
    for gamma in (2.0, 0.5, 0.0):
        yield Sample(f"{name}[logits+-1e4,gamma={gamma}]", (x, t),
                     {"gamma": gamma, "reduction": "none", "alpha": 0.25})
    all_ignored = np.full(5, -100, np.int64)
    for red in ("mean", "sum_over_batch_size"):
        for e in ("nan", "zero"):
            yield Sample(f"{name}[all-ignored,{red},empty={e}]", (x[:, :].copy(), all_ignored),
                         {"reduction": red, "empty_reduction": e})
    yield from _empty_and_zero_weights(
        name, _softmax_focal_data(rng, dtype, (0, c, 2)),
        _softmax_focal_data(rng, dtype, (3, c, 2)), (3, 2), dtype)


def _softmax_focal_random(rng, dtype):
    c = int(rng.integers(1, 5))
    shape = (int(rng.integers(0, 5)), c) + _rand_shape(rng, 1, 3, 2)
    x, t = _softmax_focal_data(rng, dtype, shape, rng.random() < 0.5)
    opts = _random_opts(rng)
    opts["gamma"] = float(rng.choice([2.0, 0.0, 1.0, 0.5]))
    r = rng.random()
    if r < 0.3:
        opts["alpha"] = float(rng.choice([0.25, 0.5, 1.0]))
    elif r < 0.6:
        opts["alpha"] = positive(rng, (c,), dtype, 0.0, 1.0)
    if rng.random() < 0.4:
        opts["weight"] = positive(rng, (c,), dtype, 0.0, 2.0)
    sw = loss_shape_weight(rng, t.shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("softmax_focal[random]", {**opts, "alpha": "alpha" in opts}), (x, t),
                  opts, sw)


# classes-last losses (optax's convention)


def _scores_index(rng, dtype, shape, scale=2.0):
    x = (rng.normal(size=shape) * scale).astype(dtype)
    t = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int64)
    return x, t


def _classes_last_samples(name, ties, extra_grid=None):
    """The grid of a loss of (..., C) scores and (...) class indices; ``ties``: the losses'
    own non-smooth cases (scores, targets, id)."""

    def samples(rng, dtype):
        yield from _reductions_grid(f"{name}[2d]", lambda: _scores_index(rng, dtype, (5, 4)),
                                    (5,), rng, dtype, extra=(extra_grid or [{}])[0])
        for opts in (extra_grid or [{}])[1:]:
            yield Sample(case_id(f"{name}[2d]", opts), _scores_index(rng, dtype, (5, 4)),
                         {"reduction": "none", **opts})
        yield Sample(f"{name}[3d,none]", _scores_index(rng, dtype, (2, 3, 4)),
                     {"reduction": "none", **(extra_grid or [{}])[0]})
        yield Sample(f"{name}[unbatched]", _scores_index(rng, dtype, (4,)), {})
        yield Sample(f"{name}[one-class]", _scores_index(rng, dtype, (3, 1)),
                     {"reduction": "none"})
        for x, t, tid in ties(dtype):
            yield Sample(f"{name}[{tid}]", (x, t), {"reduction": "none"})
        yield from _empty_and_zero_weights(name, _scores_index(rng, dtype, (0, 4)),
                                           _scores_index(rng, dtype, (3, 4)), (3,), dtype)

    return samples


def _classes_last_random(name, extra=None):
    def random_sample(rng, dtype):
        c = int(rng.integers(1, 6))
        shape = _rand_shape(rng, 0, 4, 2) + (c,)
        x, t = _scores_index(rng, dtype, shape, float(rng.choice([1.0, 3.0])))
        if x.size and rng.random() < 0.3:  # ties
            x = np.round(x).astype(dtype)
        opts = _random_opts(rng)
        if extra is not None:
            opts.update(extra(rng))
        sw = loss_shape_weight(rng, shape[:-1], dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)

    return random_sample


_BIG = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4], [1e4, 1e4, 1e4]])
_BIG_T = np.array([1, 2, 2, 0])


def _hinge_ties(dtype):
    # ties of the max: several classes at the maximum of s + 1 - onehot, and the target's
    # s_y + 0 equal to another class's s_j + 1 (the hinge at 0 exactly)
    x = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 0.0, 0.0], [3.0, 2.0, 2.0],
                  [0.5, -0.5, 0.5]], dtype)
    t = np.array([2, 0, 1, 0, 0])
    yield x, t, "ties"
    yield _BIG.astype(dtype), _BIG_T, "logits+-1e4"


def _perceptron_ties(dtype):
    x = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 3.0, 3.0]], dtype)
    t = np.array([0, 2, 1, 1])
    yield x, t, "ties"
    yield _BIG.astype(dtype), _BIG_T, "logits+-1e4"


def _sparsemax_ties(dtype):
    # equal scores, a score exactly at the threshold of the support (p = 0 at the boundary),
    # the target outside the support
    x = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -3.0], [2.0, 0.0, 0.0], [0.5, 0.5, -2.0],
                  [3.0, -1.0, 0.0]], dtype)
    t = np.array([1, 0, 1, 2, 1])
    yield x, t, "ties-and-boundary"
    yield _BIG.astype(dtype), _BIG_T, "logits+-1e4"


def _poly1_samples(rng, dtype):
    name = "poly1_cross_entropy"
    yield from _reductions_grid(f"{name}[2d,index]", lambda: _scores_index(rng, dtype, (5, 4)),
                                (5,), rng, dtype)

    def prob(shape):
        x = (rng.normal(size=shape) * 2).astype(dtype)
        return x, rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(dtype)

    for red in ("mean", "none"):
        yield Sample(f"{name}[2d,prob,{red}]", prob((5, 4)), {"reduction": red})
    yield Sample(f"{name}[2d,prob,sw]", prob((5, 4)), {"reduction": "sum"},
                 loss_shape_weight(rng, (5,), dtype))
    for eps in (0.0, 1.0, -1.0):
        yield Sample(f"{name}[3d,index,epsilon={eps}]", _scores_index(rng, dtype, (2, 3, 4)),
                     {"epsilon": eps, "reduction": "none"})
    yield Sample(f"{name}[unbatched,prob]", prob((4,)), {"epsilon": 0.5})
    yield Sample(f"{name}[one-class]", _scores_index(rng, dtype, (3, 1)), {"reduction": "none"})
    yield Sample(f"{name}[logits+-1e4,index]", (_BIG.astype(dtype), _BIG_T), {"reduction": "none"})
    onehot = np.eye(3, dtype=dtype)[[0, 1, 0, 2]]  # probabilities exactly 0 at logits -1e4
    yield Sample(f"{name}[logits+-1e4,prob]", (_BIG.astype(dtype), onehot), {"reduction": "none"})
    yield from _empty_and_zero_weights(name, _scores_index(rng, dtype, (0, 4)),
                                       _scores_index(rng, dtype, (3, 4)), (3,), dtype)


def _poly1_random(rng, dtype):
    c = int(rng.integers(1, 6))
    shape = _rand_shape(rng, 0, 4, 2) + (c,)
    x, t = _scores_index(rng, dtype, shape, float(rng.choice([1.0, 3.0])))
    if rng.random() < 0.4:
        t = rng.dirichlet(np.ones(c), size=shape[:-1]).astype(dtype)
    opts = _random_opts(rng)
    opts["epsilon"] = float(rng.choice([2.0, 1.0, 0.0, -1.0]))
    sw = loss_shape_weight(rng, shape[:-1], dtype) if rng.random() < 0.5 else None
    return Sample(case_id("poly1_cross_entropy[random]", opts), (x, t), opts, sw)


# generalized cross-entropy


def _gce_data(rng, dtype, shape, scale=2.0):
    x = (rng.normal(size=shape) * scale).astype(dtype)
    idx_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    return x, rng.integers(0, n_classes, size=idx_shape).astype(np.int64)


def _gce_samples(rng, dtype):
    name = "generalized_cross_entropy"
    yield from _reductions_grid(f"{name}[2d]", lambda: _gce_data(rng, dtype, (5, 4)), (5,), rng,
                                dtype)
    # a small q (near cross-entropy): 1 - p^q cancels; float32's reference (the formula as
    # written) loses digits below q = 0.05
    for q in (1.0, 0.3, 1e-3 if dtype == np.float64 else 0.05):
        yield Sample(f"{name}[kdim,q={q}]", _gce_data(rng, dtype, (2, 4, 3, 2)),
                     {"q": q, "reduction": "none"})
    yield Sample(f"{name}[unbatched]", _gce_data(rng, dtype, (4,)), {})
    yield Sample(f"{name}[one-class]", _gce_data(rng, dtype, (3, 1)), {"reduction": "none"})
    yield Sample(f"{name}[logits+-1e4]", (_BIG.astype(dtype), _BIG_T), {"reduction": "none"})
    yield from _empty_and_zero_weights(name, _gce_data(rng, dtype, (0, 4)),
                                       _gce_data(rng, dtype, (3, 4)), (3,), dtype)


def _gce_random(rng, dtype):
    c = int(rng.integers(1, 6))
    shape = (int(rng.integers(0, 5)), c) + _rand_shape(rng, 1, 3, 2) if rng.random() < 0.85 \
        else (c,)
    x, t = _gce_data(rng, dtype, shape, float(rng.choice([1.0, 3.0])))
    opts = _random_opts(rng)
    opts["q"] = float(rng.choice([0.7, 1.0, 0.1, 0.5]))
    sw = loss_shape_weight(rng, t.shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("generalized_cross_entropy[random]", opts), (x, t), opts, sw)


# elementwise optax losses: perceptron, sparsemax


def _pm1(rng, shape):
    return np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)


def _perceptron_samples(rng, dtype):
    name = "perceptron"

    def data(shape=(4, 3)):
        return (rng.normal(size=shape) * 2).astype(dtype), _pm1(rng, shape).astype(dtype)

    yield from _reductions_grid(f"{name}[2d]", data, (4, 3), rng, dtype)
    yield Sample(f"{name}[0d]", data(()), {})
    x, _ = data((5,))
    yield Sample(f"{name}[int-target]", (x, np.array([1, -1, 1, -1, 1])), {"reduction": "none"})
    # ties of the hinge: x * t == 0 (optax's jnp.maximum: half the gradient)
    x = np.array([0.0, 0.0, -0.0, 1.0, -2.0, 1e4, -1e4], dtype)
    t = np.array([1.0, -1.0, 1.0, 0.0, 1.0, -1.0, -1.0], dtype)
    yield Sample(f"{name}[ties-and-logits+-1e4]", (x, t), {"reduction": "none"})
    yield Sample(f"{name}[ties,sum]", (x, t), {"reduction": "sum"})
    yield from _empty_and_zero_weights(name, data((0, 3)), data((4, 3)), (4, 3), dtype)


def _perceptron_random(rng, dtype):
    shape = _rand_shape(rng, 0, 5, 3)
    x = np.round(rng.normal(size=shape) * 2) if rng.random() < 0.3 else rng.normal(size=shape)
    opts = _random_opts(rng)
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("perceptron[random]", opts),
                  (x.astype(dtype), _pm1(rng, shape).astype(dtype)), opts, sw)


def _sparsemax_samples(rng, dtype):
    name = "sparsemax"

    def data(shape=(4, 3)):
        return (rng.normal(size=shape) * 1.5).astype(dtype), \
            (rng.random(size=shape) < 0.5).astype(dtype)

    yield from _reductions_grid(f"{name}[2d]", data, (4, 3), rng, dtype)
    yield Sample(f"{name}[0d]", data(()), {})
    x, _ = data((6,))
    yield Sample(f"{name}[int-target]", (x, np.array([1, 0, 1, 0, 1, 1])), {"reduction": "none"})
    yield Sample(f"{name}[bool-target]", (x, np.array([True, False, True, False, True, False])),
                 {"reduction": "none"})
    # the knots of sparse_plus (z = +-1) and logits of +-1e4
    x = np.array([1.0, -1.0, 1.0, -1.0, 0.0, 1e4, -1e4, 1e4, -1e4], dtype)
    t = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], dtype)
    yield Sample(f"{name}[knots-and-logits+-1e4]", (x, t), {"reduction": "none"})
    yield from _empty_and_zero_weights(name, data((0, 3)), data((4, 3)), (4, 3), dtype)


def _sparsemax_random(rng, dtype):
    shape = _rand_shape(rng, 0, 5, 3)
    x = rng.normal(size=shape) * 1.5
    if rng.random() < 0.3:
        x = np.round(x)  # the knots at +-1
    opts = _random_opts(rng)
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("sparsemax[random]", opts),
                  (x.astype(dtype), (rng.random(size=shape) < 0.5).astype(dtype)), opts, sw)


# ranking_softmax


def _relevance(rng, shape, dtype):
    return rng.integers(0, 4, size=shape).astype(dtype)


def _ranking_softmax_samples(rng, dtype):
    name = "ranking_softmax"

    def data(shape=(4, 5)):
        return (rng.normal(size=shape) * 2).astype(dtype), _relevance(rng, shape, dtype)

    yield from _reductions_grid(f"{name}[2d]", data, (4,), rng, dtype)
    yield Sample(f"{name}[3d,none]", data((2, 3, 4)), {"reduction": "none"})
    yield Sample(f"{name}[unbatched]", data((5,)), {})
    x, _ = data((3, 4))
    yield Sample(f"{name}[int-labels]", (x, rng.integers(0, 3, size=(3, 4))),
                 {"reduction": "none"})
    x, _ = data((3, 4))
    yield Sample(f"{name}[soft-labels]", (x, rng.uniform(0, 1, size=(3, 4)).astype(dtype)),
                 {"reduction": "none"})
    yield Sample(f"{name}[all-zero-labels]", (x, np.zeros((3, 4), dtype)), {"reduction": "none"})
    yield Sample(f"{name}[logits+-1e4]",
                 (_BIG.astype(dtype), np.array([[1, 0, 0], [0, 2, 1], [1, 1, 0], [0, 0, 3]],
                                               dtype)), {"reduction": "none"})
    yield Sample(f"{name}[ties]", (np.ones((2, 3), dtype), np.array([[1, 0, 2], [0, 0, 1]], dtype)),
                 {"reduction": "sum"})
    yield from _empty_and_zero_weights(name, data((0, 4)), data((3, 4)), (3,), dtype)


def _ranking_softmax_random(rng, dtype):
    shape = _rand_shape(rng, 0, 4, 2) + (int(rng.integers(1, 6)),)
    x = rng.normal(size=shape) * float(rng.choice([1.0, 3.0]))
    t = _relevance(rng, shape, np.float64) if rng.random() < 0.7 else rng.uniform(0, 1, shape)
    opts = _random_opts(rng)
    sw = loss_shape_weight(rng, shape[:-1], dtype) if rng.random() < 0.5 else None
    return Sample(case_id("ranking_softmax[random]", opts), (x.astype(dtype), t.astype(dtype)),
                  opts, sw)


# ---------------------------------------------------------------------------------------------
# references


def _torch_reduce(torch, loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def _ref_focal(torch, inputs, opts, reduction):
    """torchvision.ops.sigmoid_focal_loss (torchvision/ops/focal_loss.py), transcribed: it does
    not import here."""
    F = torch.nn.functional
    inputs_, targets = inputs
    alpha, gamma = opts["alpha"], opts["gamma"]
    p = torch.sigmoid(inputs_)
    ce_loss = F.binary_cross_entropy_with_logits(inputs_, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _torch_reduce(torch, loss, reduction)


def _ref_softmax_focal(torch, inputs, opts, reduction):
    """kornia.losses.focal_loss, reduction "none" ((N, C, *) with the target slice), summed over
    the classes; per-class alpha as kornia's ``weight`` (times the class weight)."""
    from kornia.losses import focal_loss

    x, t = inputs
    alpha, weight = opts["alpha"], opts["weight"]
    scalar_alpha = None
    if alpha is not None and alpha.ndim == 0:
        scalar_alpha = float(alpha)
    elif alpha is not None:
        weight = alpha if weight is None else alpha * weight
    out = focal_loss(x, t.long(), alpha=scalar_alpha, gamma=opts["gamma"], reduction="none",
                     weight=weight, ignore_index=opts["ignore_index"]).sum(1)
    if reduction == "none":
        return out
    num = out.sum()
    if reduction == "sum":
        return num
    den = (t != opts["ignore_index"]).sum().to(out.dtype)
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.full_like(num, float("nan")), num / safe)


def _ref_gce(torch, inputs, opts, reduction):
    """Zhang & Sabuncu 2018, eq. 5: L_q = (1 - f_y(x)^q) / q, f = softmax (no library has it).
    f_y^q is written exp(q log f_y), so that a probability that underflows to 0 (a logit gap
    of 1e4) has the formula's limit gradient 0, not d(0^q) = inf times 0."""
    x, t = inputs
    axis = 0 if x.ndim == 1 else 1
    log_f_y = torch.log_softmax(x, dim=axis).gather(axis, t.long().unsqueeze(axis)).squeeze(axis)
    q = opts["q"]
    return _torch_reduce(torch, (1 - torch.exp(q * log_f_y)) / q, reduction)


def _jnp_reduce(loss, reduction, dtype):
    import jax.numpy as jnp

    loss = loss.astype(dtype)
    if reduction == "none":
        return loss
    return jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)


def _optax(name):
    """An optax loss on (..., C) scores and (...) labels, or on elementwise arrays; reduced by
    "sum" / "mean" over its per-example output."""

    def fn(x, t, *, opts, reduction):
        import jax.numpy as jnp
        import optax

        f = getattr(optax.losses, name)
        if name == "multiclass_sparsemax_loss":  # optax vmaps over one batch axis only
            import jax

            c = x.shape[-1]
            s = x
            if x.dtype == jnp.float32 and jax.config.jax_enable_x64:
                # optax's projection computes 1 / idx in the default float, float64 under
                # x64, and its custom JVP then rejects float32 scores: compute in float64
                s = x.astype(jnp.float64)
            loss = f(s.reshape(-1, c), t.reshape(-1)).reshape(t.shape)
        elif name == "poly_loss_cross_entropy":
            labels = t
            if jnp.issubdtype(t.dtype, jnp.integer):
                import jax

                labels = jax.nn.one_hot(t, x.shape[-1], dtype=x.dtype)
            loss = f(x, labels, epsilon=opts["epsilon"])
        elif name == "ranking_softmax_loss":
            loss = f(x, t, reduce_fn=None)
        else:
            loss = f(x, t)
        return _jnp_reduce(loss, reduction, x.dtype)

    return jax_reference(fn)


# ---------------------------------------------------------------------------------------------
# options

_GAMMA = Option("gamma", 2.0, "the focusing exponent of (1 - p_t)", real(0.0),
                allowed="float >= 0")
_INDEX_INPUTS = (
    InputSpec("input", "scores, shape (..., C): the classes on the last axis (optax's "
              "convention)"),
    InputSpec("target", "class indices, the input's shape without its last axis; integer"),
)


def _alpha_option(name, value):
    if value is None:
        return None
    return array_option()(name, value)


_OPTAX_MEAN = ("'mean' (the default) averages over the loss's elements (optax returns the "
               "unreduced loss and leaves the reduction to the user).")
_OPTAX_INDEX = ("An out-of-range class index raises where the target is concrete and gives "
                "NaN under a trace (optax's one_hot gives a silent all-zero row).")

# ---------------------------------------------------------------------------------------------
# specs

register(LossSpec(
    name="focal",
    family=FAMILY,
    summary="Sigmoid focal loss (Lin et al. 2017, RetinaNet): binary cross-entropy on logits, "
            "down-weighted by (1 - p_t)^gamma for well-classified elements.",
    aliases=("sigmoid_focal", "sigmoid_focal_loss", "focal_loss", "FocalLoss"),
    inputs=(
        InputSpec("input", "logits, any shape"),
        InputSpec("target", "targets in [0, 1] (binary labels or soft targets), the input's "
                  "shape; floating (torch differentiates it)"),
    ),
    options=(
        Option("alpha", 0.25, "weight of the positive class, alpha_t = alpha t + (1 - alpha) "
               "(1 - t); a negative alpha (torchvision's -1) disables the weighting",
               real(hi=1.0), allowed="float <= 1 (< 0: no weighting)"),
        _GAMMA,
    ),
    formula=("p = sigmoid(x); ce = bce_with_logits(x, t) = (1 - t) x - log_sigmoid(x);\n"
             "p_t = p t + (1 - p)(1 - t); l = alpha_t ce (1 - p_t)^gamma, alpha_t = alpha t + "
             "(1 - alpha)(1 - t) (only where alpha >= 0).\nThe default reduction is 'none' "
             "(torchvision's); 'mean' averages over every element (torchvision's "
             "reduction='mean')."),
    reference_name="torchvision.ops.sigmoid_focal_loss (torchvision 0.2x), transcribed on torch "
                   "in multiloss/losses/classification/_more_spec.py (torchvision does not "
                   "import beside torch 2.13 here); also checked against "
                   "optax.sigmoid_focal_loss",
    notes=("The default reduction is torchvision's, 'none' (the unreduced map; torch's "
           "losses default to 'mean'). optax."
           "sigmoid_focal_loss defaults alpha=None (no weighting; multiloss: alpha < 0) and "
           "computes 1 - p_t as exp(logsumexp) of the log-sigmoids: equal to torchvision's to "
           "rounding where 1 - p_t is not tiny; where p_t rounds to 1 (|x| > ~37 in float64 "
           "on the right side) torchvision's loss, and multiloss's, is exactly 0, optax's a "
           "tiny positive number. Targets outside [0, 1] raise where concrete (torchvision "
           "computes with them). gamma < 1 at a saturated logit gives torch's NaN gradient "
           "(d (1 - p_t)^gamma at 0 is inf), as torchvision."),
    check=_focal_check,
    check_values=_check_focal_values,
    value_args=("target",),
    value_kinds="f",
    samples=_focal_samples,
    random_sample=_focal_random,
    reference=_ref_focal,
    normalizer=_ones(lambda inputs: np.shape(inputs[0])),
    default_reduction="none",
))

register(LossSpec(
    name="softmax_focal",
    family=FAMILY,
    summary="Multi-class (softmax) focal loss: -alpha_t w_t (1 - p_t)^gamma log p_t on "
            "class-index targets, as kornia.losses.focal_loss.",
    aliases=("softmax_focal_loss", "multiclass_focal"),
    inputs=(
        InputSpec("input", "logits, shape (N, C) or (N, C, d1, ..., dk) (classes on axis 1, "
                  "kornia's (B, C, *))"),
        InputSpec("target", "class indices, shape (N,) or (N, d1, ..., dk); integer"),
    ),
    options=(
        Option("alpha", None, "class balance. A number: kornia's convention, 1 - alpha for "
               "class 0 (the background) and alpha for every other class; an array (C,): "
               "alpha[c] for class c (kornia has no per-class alpha); None: 1",
               _alpha_option, kind="array", allowed="None | float | array (C,)"),
        _GAMMA,
        Option("weight", None, "per-class weights, shape (C,), multiplied in (kornia's weight); "
               "'mean' is not normalised by them", array_option(ndim=1), kind="array",
               allowed="None | array (C,)"),
        Option("ignore_index", -100, "class index whose elements contribute nothing (neither "
               "loss nor count)", integer, allowed="int"),
    ),
    formula=("logp = log_softmax(x, axis 1) (ignored elements' logits set to 0 first, as "
             "kornia); p_t = exp(logp_t);\nl = -alpha_t w_t (1 - p_t)^gamma logp_t, 0 where "
             "target == ignore_index; at p_t == 1 exactly the factor's gradient is 0 (kornia's "
             "detached copy).\n'mean' = sum(l) / the number of elements not ignored."),
    reference_name="kornia.losses.focal_loss (kornia 0.9), reduction='none' summed over the "
                   "classes; a per-class alpha is passed as kornia's weight",
    notes=("The default reduction is kornia's, 'none'. kornia's 'none' returns an (N, C, *) map (the loss in the target's slice, 0 "
           "elsewhere); multiloss returns its sum over the classes, (N, *). kornia's 'mean' "
           "divides by C times every element, ignored ones included; multiloss's 'mean' "
           "divides by the elements not ignored (torch's cross_entropy convention, without "
           "weight normalisation), so gamma=0, alpha=None gives cross_entropy's mean. kornia "
           "has no per-class alpha (multiloss: alpha[t]) and requires alpha (multiloss: None "
           "by default). An out-of-range class index raises where concrete, NaN under a trace."),
    check=_softmax_focal_check,
    check_values=check_class_indices,
    value_args=("target",),
    samples=_softmax_focal_samples,
    random_sample=_softmax_focal_random,
    reference=_ref_softmax_focal,
    normalizer=_softmax_focal_normalizer,
    default_reduction="none",
))

register(LossSpec(
    name="poly1_cross_entropy",
    family=FAMILY,
    summary="Poly-1 cross-entropy (PolyLoss, Leng et al. 2022): cross-entropy + epsilon "
            "(1 - p_t).",
    aliases=("poly1", "poly_loss_cross_entropy", "poly1_loss"),
    inputs=(
        InputSpec("input", "logits, shape (..., C): classes on the last axis (optax)"),
        InputSpec("target", "class indices (the input's shape without its last axis; "
                  "integer) or class probabilities (the input's shape; floating)"),
    ),
    options=(Option("epsilon", 2.0, "the coefficient of the first polynomial term (optax's "
                    "default 2.0)", real(), allowed="float"),),
    formula=("p = softmax(x); l = -sum_c y_c log p_c + epsilon sum_c y_c (1 - p_c), y the "
             "one-hot of a class index or the given probabilities."),
    reference_name="optax.poly_loss_cross_entropy (optax 0.2.8), class indices one-hot encoded",
    notes=(f"optax takes probabilities only; class indices are one-hot encoded. {_OPTAX_MEAN} "
           f"{_OPTAX_INDEX} optax's axis and where options are not offered (classes last; use "
           "sample_weight to drop rows)."),
    check=_poly1_check,
    check_values=_check_poly1_values,
    value_args=("target",),
    samples=_poly1_samples,
    random_sample=_poly1_random,
    reference=_optax("poly_loss_cross_entropy"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])[:-1]),
))

register(LossSpec(
    name="generalized_cross_entropy",
    family=FAMILY,
    summary="Generalized cross-entropy (Zhang & Sabuncu 2018), (1 - p_t^q) / q: between "
            "cross-entropy (q -> 0) and MAE (q = 1), robust to noisy labels.",
    aliases=("gce", "generalized_ce"),
    inputs=(
        InputSpec("input", "logits, shape (C,), (N, C) or (N, C, d1, ..., dk) (classes on axis "
                  "1, as torch's cross_entropy)"),
        InputSpec("target", "class indices, shape (), (N,) or (N, d1, ..., dk); integer"),
    ),
    options=(Option("q", 0.7, "the exponent, in (0, 1] (the paper's experiments use 0.7)",
                    real(0.0, 1.0, lo_open=True), allowed="float in (0, 1]"),),
    formula=("p_t = softmax(x)[t]; l = (1 - p_t^q) / q, computed as -expm1(q log_softmax(x)[t]) "
             "/ q (no cancellation where p_t is near 1)."),
    reference_name="Zhang & Sabuncu 2018 (NeurIPS), eq. 5, written on torch in "
                   "multiloss/losses/classification/_more_spec.py (no library defines it)",
    notes=("Keras' categorical_generalized_cross_entropy (keras.* in multiloss) takes "
           "probabilities and one-hot targets, classes last, with Keras' clipping; this one "
           "takes logits and class indices as torch's cross_entropy (no weight or "
           "ignore_index). An out-of-range class index raises where concrete, NaN under a "
           "trace."),
    check=_gce_check,
    check_values=check_class_indices,
    value_args=("target",),
    samples=_gce_samples,
    random_sample=_gce_random,
    reference=_ref_gce,
    normalizer=_ones(_idx_shape),
))

register(LossSpec(
    name="multiclass_hinge",
    family=FAMILY,
    summary="Multiclass hinge loss (Crammer-Singer): max_c (s_c + 1 - [c == y]) - s_y.",
    aliases=("multiclass_hinge_loss",),
    inputs=_INDEX_INPUTS,
    options=(),
    formula=("l = max_c (s_c + 1 - [c == y]) - s_y. At a tie of the max the gradient is split "
             "evenly between the maxima (jnp.max's and torch.amax's rule, optax's)."),
    reference_name="optax.multiclass_hinge_loss (optax 0.2.8)",
    notes=(f"{_OPTAX_MEAN} {_OPTAX_INDEX} torch's multi_margin_loss is the Weston-Watkins sum "
           "over classes, not this max."),
    check=_classes_last_index_check,
    check_values=_check_classes_last_indices,
    value_args=("target",),
    samples=_classes_last_samples("multiclass_hinge", _hinge_ties),
    random_sample=_classes_last_random("multiclass_hinge"),
    reference=_optax("multiclass_hinge_loss"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])[:-1]),
))

register(LossSpec(
    name="perceptron",
    family=FAMILY,
    summary="Binary perceptron loss: max(0, -s y), labels +1 / -1.",
    aliases=("perceptron_loss",),
    inputs=(
        InputSpec("input", "scores, any shape"),
        InputSpec("target", "labels +1 / -1 (used as given), the input's shape; floating or "
                  "signed integer. Not differentiated", differentiable=False),
    ),
    options=(),
    formula=("l = max(0, -s y); at s y == 0 the gradient is half of -y (optax's jnp.maximum, "
             "torch.maximum's tie rule)."),
    reference_name="optax.perceptron_loss (optax 0.2.8)",
    notes=(f"{_OPTAX_MEAN} A bool or unsigned target raises TypeError."),
    check=_perceptron_check,
    samples=_perceptron_samples,
    random_sample=_perceptron_random,
    reference=_optax("perceptron_loss"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])),
))

register(LossSpec(
    name="multiclass_perceptron",
    family=FAMILY,
    summary="Multiclass perceptron loss: max_c s_c - s_y.",
    aliases=("multiclass_perceptron_loss",),
    inputs=_INDEX_INPUTS,
    options=(),
    formula=("l = max_c s_c - s_y; at a tie of the max the gradient is split evenly between "
             "the maxima (optax's jnp.max)."),
    reference_name="optax.multiclass_perceptron_loss (optax 0.2.8)",
    notes=f"{_OPTAX_MEAN} {_OPTAX_INDEX}",
    check=_classes_last_index_check,
    check_values=_check_classes_last_indices,
    value_args=("target",),
    samples=_classes_last_samples("multiclass_perceptron", _perceptron_ties),
    random_sample=_classes_last_random("multiclass_perceptron"),
    reference=_optax("multiclass_perceptron_loss"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])[:-1]),
))

register(LossSpec(
    name="sparsemax",
    family=FAMILY,
    summary="Binary sparsemax loss (Martins & Astudillo 2016): sparse_plus(-x) for label 1, "
            "sparse_plus(x) for label 0.",
    aliases=("sparsemax_loss", "binary_sparsemax"),
    inputs=(
        InputSpec("input", "logits, any shape"),
        InputSpec("target", "labels 0 / 1, the input's shape; bool, integer or floating. Not "
                  "differentiated", differentiable=False),
    ),
    options=(),
    formula=("z = -x where the label is 1, x where it is 0; l = sparse_plus(z) = 0 for z <= -1, "
             "(z + 1)^2 / 4 for -1 < z < 1, z for z >= 1 (continuously differentiable)."),
    reference_name="optax.sparsemax_loss (optax 0.2.8)",
    notes=(f"{_OPTAX_MEAN} Labels other than 0 and 1 raise where concrete (optax reads any "
           "non-zero label as 1)."),
    check=_sparsemax_check,
    check_values=_check_binary_labels,
    value_args=("target",),
    value_kinds="fiub",
    samples=_sparsemax_samples,
    random_sample=_sparsemax_random,
    reference=_optax("sparsemax_loss"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])),
))

register(LossSpec(
    name="multiclass_sparsemax",
    family=FAMILY,
    summary="Multiclass sparsemax loss (Martins & Astudillo 2016): the Fenchel-Young loss of "
            "the Gini negentropy, whose gradient is sparsemax(s) - onehot(y).",
    aliases=("multiclass_sparsemax_loss",),
    inputs=_INDEX_INPUTS,
    options=(),
    formula=("p = sparsemax(s), the Euclidean projection of s onto the simplex; "
             "l = sum_{c != y} p_c (s_c - s_y) + (1 - |p|^2) / 2; d l / d s = p - onehot(y) "
             "(also at ties and at the boundary of the support)."),
    reference_name="optax.multiclass_sparsemax_loss (optax 0.2.8)",
    notes=(f"{_OPTAX_MEAN} {_OPTAX_INDEX} optax takes (N, C) scores only (it vmaps over one "
           "axis); multiloss takes any (..., C). optax differentiates through its projection "
           "(a custom JVP); multiloss holds the projection constant, which gives the same "
           "gradient p - onehot (the extra terms cancel) to rounding."),
    check=_classes_last_index_check,
    check_values=_check_classes_last_indices,
    value_args=("target",),
    samples=_classes_last_samples("multiclass_sparsemax", _sparsemax_ties),
    random_sample=_classes_last_random("multiclass_sparsemax"),
    reference=_optax("multiclass_sparsemax_loss"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])[:-1]),
))

register(LossSpec(
    name="ranking_softmax",
    family=FAMILY,
    summary="Listwise softmax ranking loss: -sum_i y_i log softmax(s)_i over each list.",
    aliases=("ranking_softmax_loss", "listwise_softmax"),
    inputs=(
        InputSpec("input", "scores of the items, shape (..., L): one list per row of the last "
                  "axis"),
        InputSpec("target", "relevance labels, the input's shape; floating (differentiated) "
                  "or integer"),
    ),
    options=(),
    formula="l = -sum_i y_i log_softmax(s)_i over the last axis (one value per list).",
    reference_name="optax.ranking_softmax_loss (optax 0.2.8) with reduce_fn=None",
    notes=("optax reduces by default (reduce_fn=jnp.mean over the lists, which is multiloss's "
           "'mean'), and its mean of no list is 0 (multiloss: NaN, or 0 with "
           "empty_reduction='zero'). optax's where and weights options are not offered: "
           "multiply the labels by the weights; drop lists with sample_weight."),
    check=_ranking_softmax_check,
    samples=_ranking_softmax_samples,
    random_sample=_ranking_softmax_random,
    reference=_optax("ranking_softmax_loss"),
    normalizer=_ones(lambda inputs: np.shape(inputs[0])[:-1]),
))
