"""Regression losses: mse, l1, smooth_l1, huber, poisson_nll, gaussian_nll. Specs only;
implementations in ``_jax.py`` and ``_torch.py``."""

from __future__ import annotations

import numpy as np

from ..._registry import (
    InputSpec,
    LossSpec,
    Option,
    Sample,
    array_option,
    boolean,
    real,
    register,
)
from .._common import (
    REDUCTIONS,
    case_id,
    check_broadcasts,
    elementwise_check,
    expect_float,
    expect_same_shape,
    grid,
    loss_shape_weight,
    positive,
)

FAMILY = "regression"

INPUTS = (
    InputSpec("input", "predictions, any shape"),
    InputSpec("target", "targets, the input's shape"),
)


def _weight(normalised: bool) -> Option:
    how = ("'mean' = sum(w * l) / sum(w), as torch 2.13" if normalised
           else "'mean' = mean(w * l) (not normalised), as torch 2.13")
    return Option("weight", None, f"element weights broadcast to the input; {how}",
                  array_option(), kind="array", allowed="None | array broadcasting to input")


def _normalizer_weighted(inputs, opts):
    shape = inputs[0].shape
    w = opts["weight"]
    d = np.ones(shape) if w is None else np.broadcast_to(np.asarray(w, np.float64), shape)
    return d, np.ones(shape)


def _normalizer_ones(inputs, opts):
    return np.ones(inputs[0].shape), np.ones(inputs[0].shape)


def _samples(name, kinks, extra_options=(), has_weight=True):
    """Grid over shapes, weights, reductions and sample weights, plus points exactly at the
    kinks (|input - target| in ``kinks``), infinities and an empty batch."""

    def samples(rng, dtype):
        shapes = {"1d": (7,), "2d": (5, 4), "3d": (2, 3, 4)}
        for shape_name, shape in shapes.items():
            full = shape_name == "2d"
            axes = dict(
                weight=(("none", "full", "bcast") if full else ("none", "full")) if has_weight
                else ("none",),
                reduction=REDUCTIONS if full else ("mean", "none"),
                sw=(False, True),
                extra=extra_options or ({},),
            )
            for g in grid(**axes):
                x = (rng.normal(size=shape) * 2).astype(dtype)
                t = (rng.normal(size=shape) * 2).astype(dtype)
                opts = {"reduction": g["reduction"], **g["extra"]}
                if g["weight"] == "full":
                    opts["weight"] = positive(rng, shape, dtype)
                elif g["weight"] == "bcast":
                    opts["weight"] = positive(rng, shape[-1:], dtype)
                sw = loss_shape_weight(rng, shape, dtype) if g["sw"] else None
                yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}), (x, t), opts, sw)
        for extra in extra_options or ({},):
            diffs = [0.0, 0.5, -0.5]
            for k in kinks(extra):
                diffs += [k, -k]
            t = np.linspace(-1.0, 1.0, len(diffs)).astype(dtype)
            x = (t + np.asarray(diffs, dtype)).astype(dtype)
            t = (x - np.asarray(diffs, dtype)).astype(dtype)  # exact differences at the kinks
            for red in ("sum", "none"):
                yield Sample(case_id(f"{name}[kinks]", {**extra, "reduction": red}), (x, t),
                             {**extra, "reduction": red})
        inf_x = np.array([np.inf, -np.inf, 1.0, 2.0], dtype)
        inf_t = np.array([0.0, 0.0, np.inf, 2.0], dtype)
        yield Sample(f"{name}[inf,none]", (inf_x, inf_t), {"reduction": "none"})
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={empty}]",
                         (np.ones(3, dtype), np.zeros(3, dtype)), {"empty_reduction": empty},
                         np.zeros(3, dtype))
        yield Sample(f"{name}[empty-batch]", (np.zeros((0, 2), dtype), np.zeros((0, 2), dtype)), {})
        if has_weight:
            # torch 2.13's weighted mean is sum(w l) / sum(w) in Python: a NaN gradient when
            # the weights sum to 0; the contract gives NaN with a zero gradient
            for red in ("mean", "sum"):
                yield Sample(f"{name}[zero-weights,{red}]", (np.ones(3, dtype), np.zeros(3, dtype)),
                             {"weight": np.zeros(3, dtype), "reduction": red},
                             contract_reference=red == "mean")

    return samples


def _random(name, extra, has_weight=True):
    def random_sample(rng, dtype):
        shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 4))))
        x = (rng.normal(size=shape) * 3).astype(dtype)
        t = (rng.normal(size=shape) * 3).astype(dtype)
        if x.size and rng.random() < 0.3:
            t.flat[0] = x.flat[0]  # a tie at the kink at 0
        opts = {"reduction": str(rng.choice(REDUCTIONS)), **extra(rng)}
        if has_weight and shape and rng.random() < 0.5:
            opts["weight"] = positive(rng, shape[int(rng.integers(0, len(shape))):], dtype, 0.0, 2.0)
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)

    return random_sample


def _ref(fname, *keys):
    def reference(torch, inputs, opts, reduction):
        x, t = inputs
        kw = {k: opts[k] for k in keys}
        w = opts.get("weight")
        if w is not None:
            kw["weight"] = w.expand_as(x)
        return getattr(torch.nn.functional, fname)(x, t, reduction=reduction, **kw)

    return reference


register(LossSpec(
    name="mse",
    family=FAMILY,
    summary="Mean squared error.",
    aliases=("mse_loss", "MSELoss", "l2", "mean_squared_error"),
    inputs=INPUTS,
    options=(_weight(normalised=True),),
    formula="l = w * (x - t)^2; 'mean' = sum(w * (x - t)^2) / sum(w) (w = 1 without weight).",
    reference_name="torch.nn.functional.mse_loss (torch 2.13, with its weight argument)",
    notes=("torch < 2.13 has no weight; multiloss's torch backend computes torch 2.13's "
           "semantics on any version. A target whose shape differs from the input's is an "
           "error here (torch broadcasts with a warning)."),
    check=elementwise_check,
    samples=_samples("mse", lambda e: []),
    random_sample=_random("mse", lambda rng: {}),
    reference=_ref("mse_loss"),
    normalizer=_normalizer_weighted,
))

register(LossSpec(
    name="l1",
    family=FAMILY,
    summary="Mean absolute error.",
    aliases=("l1_loss", "L1Loss", "mae", "mean_absolute_error"),
    inputs=INPUTS,
    options=(_weight(normalised=True),),
    formula=("l = w * |x - t|; 'mean' = sum(w * |x - t|) / sum(w). "
             "d l / d x = w * sign(x - t): 0 at x == t, as torch (JAX's abs gives 1)."),
    reference_name="torch.nn.functional.l1_loss (torch 2.13, with its weight argument)",
    notes="The gradient at a tie is 0 (torch); jax.grad(jnp.abs)(0.) is 1.",
    check=elementwise_check,
    samples=_samples("l1", lambda e: []),
    random_sample=_random("l1", lambda rng: {}),
    reference=_ref("l1_loss"),
    normalizer=_normalizer_weighted,
))

register(LossSpec(
    name="smooth_l1",
    family=FAMILY,
    summary="Smooth L1: quadratic below beta, linear above.",
    aliases=("smooth_l1_loss", "SmoothL1Loss"),
    inputs=INPUTS,
    options=(Option("beta", 1.0, "where the loss turns from quadratic to linear; 0 gives l1",
                    real(0.0), allowed="float >= 0"),),
    formula=("z = |x - t|; l = 0.5 z^2 / beta if z < beta else z - 0.5 beta; beta = 0 is "
             "exactly l1 (gradient 0 at a tie)."),
    reference_name="torch.nn.functional.smooth_l1_loss (torch 2.13)",
    notes=("Equals huber(delta=beta) / beta. optax.huber_loss is huber, not smooth_l1; torch's "
           "smooth_l1 has no weight argument (use sample_weight)."),
    check=elementwise_check,
    samples=_samples("smooth_l1", lambda e: [e.get("beta", 1.0)],
                     ({}, {"beta": 0.0}, {"beta": 0.3}), has_weight=False),
    random_sample=_random("smooth_l1", lambda rng: {"beta": float(rng.choice([0.0, 0.5, 1.0, 2.0]))},
                          has_weight=False),
    reference=_ref("smooth_l1_loss", "beta"),
    normalizer=_normalizer_ones,
))

register(LossSpec(
    name="huber",
    family=FAMILY,
    summary="Huber loss: quadratic below delta, linear with slope delta above.",
    aliases=("huber_loss", "HuberLoss"),
    inputs=INPUTS,
    options=(Option("delta", 1.0, "where the loss turns from quadratic to linear",
                    real(0.0, lo_open=True), allowed="float > 0"),
             _weight(normalised=False)),
    formula=("z = |x - t|; l = w * (0.5 z^2 if z < delta else delta (z - 0.5 delta)); "
             "'mean' = mean(w * l) (torch 2.13 does not normalise huber's weight)."),
    reference_name="torch.nn.functional.huber_loss (torch 2.13, with its weight argument)",
    notes=("optax.huber_loss matches per element with delta; Keras' Huber averages over the "
           "last axis. torch 2.13 normalises mse/l1's weight but not huber's: so does multiloss."),
    check=elementwise_check,
    samples=_samples("huber", lambda e: [e.get("delta", 1.0)], ({}, {"delta": 0.25})),
    random_sample=_random("huber", lambda rng: {"delta": float(rng.choice([0.1, 1.0, 3.0]))}),
    reference=_ref("huber_loss", "delta"),
    normalizer=_normalizer_ones,
))


# ---------------------------------------------------------------------------------------------
# probabilistic regression: poisson_nll, gaussian_nll


def _poisson_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x)
    if t.kind not in "fiu":
        raise TypeError(f"target: expected counts (a floating or integer array), got {t.describe()}")
    expect_same_shape("target", t, "input", x)
    return x.shape


def _poisson_samples(rng, dtype):
    shapes = {"1d": (7,), "2d": (5, 4), "3d": (2, 3, 4)}
    for shape_name, shape in shapes.items():
        full_grid = shape_name == "2d"
        axes = dict(
            log_input=(True, False),
            full=(False, True),
            reduction=REDUCTIONS if full_grid else ("mean", "none"),
            sw=(False, True) if full_grid else (False,),
        )
        for g in grid(**axes):
            t = rng.poisson(2.0, size=shape).astype(dtype)
            t.flat[::3] += 0.5  # non-integer counts too
            x = rng.normal(size=shape) if g["log_input"] else rng.uniform(0.1, 4.0, size=shape)
            opts = {"reduction": g["reduction"], "log_input": g["log_input"], "full": g["full"]}
            sw = loss_shape_weight(rng, shape, dtype) if g["sw"] else None
            yield Sample(case_id(f"poisson_nll[{shape_name}]", {**opts, "sw": g["sw"]}),
                         (x.astype(dtype), t), opts, sw)
    # the Stirling term only where t > 1 (its masked gradient is NaN at t <= 0, as in torch);
    # a rate of exactly 0 (log(0 + eps)); eps; large and infinite inputs; integer counts
    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 10.0], dtype)
    xr = np.array([0.0, 0.5, 1.0, 2.0, 0.0, 3.0, 9.0], dtype)
    xl = np.array([-1.0, 0.5, 30.0, -30.0, 0.0, 1.0, 2.0], dtype)
    for full in (False, True):
        for eps in (1e-8, 0.5):
            yield Sample(case_id("poisson_nll[edges,rate]", {"full": full, "eps": eps}), (xr, t),
                         {"reduction": "none", "log_input": False, "full": full, "eps": eps})
        yield Sample(case_id("poisson_nll[edges,log]", {"full": full}), (xl, t),
                     {"reduction": "none", "full": full})
    yield Sample("poisson_nll[inf,none]", (np.array([np.inf, -np.inf, 1.0], dtype),
                                           np.array([1.0, 1.0, np.inf], dtype)), {"reduction": "none"})
    counts = np.array([[0, 1, 2, 7], [3, 0, 1, 4]], np.int64)
    xi = rng.normal(size=counts.shape).astype(dtype)
    for full in (False, True):
        yield Sample(case_id("poisson_nll[integer-target]", {"full": full}), (xi, counts),
                     {"full": full})
    for empty in ("nan", "zero"):
        yield Sample(f"poisson_nll[zero-sample-weights,empty={empty}]", (xi, counts),
                     {"empty_reduction": empty}, np.zeros(counts.shape, dtype))
    yield Sample("poisson_nll[empty-batch]", (np.zeros((0, 2), dtype), np.zeros((0, 2), dtype)), {})


def _poisson_random(rng, dtype):
    shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 4))))
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "log_input": bool(rng.random() < 0.5),
            "full": bool(rng.random() < 0.5)}
    if rng.random() < 0.3:
        opts["eps"] = float(rng.choice([1e-3, 1.0]))
    x = rng.normal(size=shape) * 2 if opts["log_input"] else rng.uniform(0.0, 5.0, size=shape)
    t = rng.poisson(1.5, size=shape).astype(dtype)
    if rng.random() < 0.5:
        t = t + rng.uniform(0, 1, size=shape).astype(dtype)
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("poisson_nll[random]", opts), (x.astype(dtype), t.astype(dtype)), opts, sw)


def _ref_poisson(torch, inputs, opts, reduction):
    x, t = inputs
    if not t.is_floating_point():
        t = t.to(x.dtype)  # the documented deviation: integer counts in the input's dtype
    return torch.nn.functional.poisson_nll_loss(
        x, t, log_input=opts["log_input"], full=opts["full"], eps=opts["eps"], reduction=reduction
    )


def _gaussian_var_ok(x_shape, v_shape) -> bool:
    if v_shape == x_shape or len(v_shape) == 0:
        return True
    if v_shape == x_shape[:-1]:
        return True
    if len(v_shape) != len(x_shape):
        return False
    # torch's rule: the sizes of var in the dimensions that differ sum to 1 (one dimension of
    # size 1)
    return sum(v for a, v in zip(x_shape, v_shape) if a != v) == 1


def _gaussian_check(named, opts):
    x, t, v = named["input"], named["target"], named["var"]
    expect_float("input", x)
    expect_float("target", t)
    expect_float("var", v, "a floating-point array of variances")
    check_broadcasts("target", t.shape, x.shape)
    if not _gaussian_var_ok(x.shape, v.shape):
        raise ValueError(
            f"var: expected the input's shape {x.shape}, the input's shape without its last "
            f"dimension {x.shape[:-1]}, the input's shape with one dimension of size 1, or a "
            f"scalar, got shape {v.shape}"
        )
    return x.shape


def _gaussian_values(values, infos, opts):
    v = values.get("var")
    if v is None or v.size == 0:
        return
    neg = v < 0
    if neg.any():
        pos = tuple(int(i) for i in np.argwhere(neg)[0])
        where = f" at index {pos}" if pos else ""
        raise ValueError(f"var: expected non-negative variances, got {v[neg][0]}{where}")


def _gaussian_samples(rng, dtype):
    cases = {
        "2d": ((5, 4), {"full": (5, 4), "last": (5,), "ones": (5, 1), "rows": (1, 4), "scalar": ()}),
        "3d": ((2, 3, 4), {"full": (2, 3, 4), "mid": (2, 1, 4), "last": (2, 3), "scalar": ()}),
        "1d": ((6,), {"full": (6,), "one": (1,), "scalar": ()}),
    }
    for shape_name, (shape, var_shapes) in cases.items():
        full_grid = shape_name == "2d"
        for g in grid(var=tuple(var_shapes), full=(False, True),
                      reduction=REDUCTIONS if full_grid else ("mean", "none"),
                      sw=(False, True) if full_grid else (False,)):
            if not full_grid and g["full"] and g["var"] != "full":
                continue
            x = rng.normal(size=shape).astype(dtype)
            t = rng.normal(size=shape).astype(dtype)
            v = rng.uniform(0.1, 3.0, size=var_shapes[g["var"]]).astype(dtype)
            opts = {"reduction": g["reduction"], "full": g["full"]}
            sw = loss_shape_weight(rng, shape, dtype) if g["sw"] else None
            yield Sample(case_id(f"gaussian_nll[{shape_name},var={g['var']}]",
                                 {**opts, "sw": g["sw"]}), (x, t, v), opts, sw)
    # the clamp at eps: the value at the clamped variance, the gradient straight through;
    # a target broadcast along a dimension; infinite and NaN variances
    x = np.array([[1.0, 2.0, 0.5], [3.0, 4.0, -1.0]], dtype)
    t = np.array([[0.0, 2.5, 0.5], [3.0, 1.0, 2.0]], dtype)
    v = np.array([[1e-8, 0.5, 0.0], [1e-6, 2.0, 1e-7]], dtype)
    for eps in (1e-6, 0.25):
        yield Sample(case_id("gaussian_nll[clamp]", {"eps": eps}), (x, t, v),
                     {"reduction": "none", "eps": eps})
    yield Sample("gaussian_nll[target-broadcast]", (x, t[:, :1], v + 0.5), {"reduction": "sum"})
    vi = np.array([[np.inf, 1.0, 1.0], [np.nan, 1.0, 2.0]], dtype)
    yield Sample("gaussian_nll[inf-nan-var,none]", (x, t, vi), {"reduction": "none"})
    for empty in ("nan", "zero"):
        yield Sample(f"gaussian_nll[zero-sample-weights,empty={empty}]", (x, t, v + 1.0),
                     {"empty_reduction": empty}, np.zeros(x.shape, dtype))
    z = np.zeros((0, 3), dtype)
    yield Sample("gaussian_nll[empty-batch]", (z, z, np.ones((0, 3), dtype)), {})


def _gaussian_random(rng, dtype):
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(d) for d in rng.integers(1, 5, size=ndim))
    kind = str(rng.choice(["full", "last", "one", "scalar"]))
    if kind == "full":
        vshape = shape
    elif kind == "last":
        vshape = shape[:-1]
    elif kind == "scalar":
        vshape = ()
    else:
        k = int(rng.integers(0, ndim))
        vshape = shape[:k] + (1,) + shape[k + 1:]
    x = (rng.normal(size=shape) * 2).astype(dtype)
    t = (rng.normal(size=shape) * 2).astype(dtype)
    v = rng.uniform(0.0, 3.0, size=vshape).astype(dtype)
    if v.size and rng.random() < 0.3:
        v.flat[0] = 0.0  # clamped
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "full": bool(rng.random() < 0.5)}
    if rng.random() < 0.3:
        opts["eps"] = float(rng.choice([1e-3, 0.5]))
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id(f"gaussian_nll[random,var={kind}]", opts), (x, t, v), opts, sw)


def _ref_gaussian(torch, inputs, opts, reduction):
    x, t, v = inputs
    if v.ndim == 0:  # torch takes a Python float here: the same as a var of the input's shape
        v = v.expand_as(x)
    return torch.nn.functional.gaussian_nll_loss(x, t, v, full=opts["full"], eps=opts["eps"],
                                                 reduction=reduction)


register(LossSpec(
    name="poisson_nll",
    family=FAMILY,
    summary="Negative log-likelihood of a Poisson distribution (counts given a rate).",
    aliases=("poisson_nll_loss", "PoissonNLLLoss"),
    inputs=(
        InputSpec("input", "the log-rate (log_input=True) or the rate, any shape"),
        InputSpec("target", "counts, the input's shape (floating, differentiable; or integer)"),
    ),
    options=(
        Option("log_input", True, "the input is the log of the rate", boolean, allowed="bool"),
        Option("full", False, "add the Stirling approximation of log(t!) where t > 1", boolean,
               allowed="bool"),
        Option("eps", 1e-8, "added to the rate inside the log when log_input=False", real(),
               allowed="float"),
    ),
    formula=(
        "log_input: l = exp(x) - t x;  else: l = x - t log(x + eps);\n"
        "full: + (t log t - t + 0.5 log(2 pi t)) where t > 1, 0 elsewhere."
    ),
    reference_name="torch.nn.functional.poisson_nll_loss (torch 2.13)",
    notes=(
        "Keras' poisson takes the rate (like log_input=False) and adds eps=1e-7 inside the log, "
        "averaging over the last axis. The gradient w.r.t. the target at t <= 0 with full=True "
        "is NaN (torch's masked_fill passes 0 times an infinite derivative): multiloss keeps it. "
        "Integer counts are cast to the input's dtype first (torch computes the Stirling term "
        "of an integer target in its default dtype, float32, even for a float64 input)."
    ),
    check=_poisson_check,
    samples=_poisson_samples,
    random_sample=_poisson_random,
    reference=_ref_poisson,
    normalizer=_normalizer_ones,
))

register(LossSpec(
    name="gaussian_nll",
    family=FAMILY,
    summary="Negative log-likelihood of a Gaussian with a predicted variance.",
    aliases=("gaussian_nll_loss", "GaussianNLLLoss"),
    inputs=(
        InputSpec("input", "the predicted mean, any shape"),
        InputSpec("target", "observations, the input's shape (or broadcasting to it)"),
        InputSpec("var", "the predicted variance (>= 0): the input's shape, the input's shape "
                  "without its last dimension, the input's shape with one dimension of size 1 "
                  "(homoscedastic), or a scalar"),
    ),
    options=(
        Option("full", False, "add the constant 0.5 log(2 pi)", boolean, allowed="bool"),
        Option("eps", 1e-6, "the variance is clamped to at least eps (value only: the gradient "
               "passes straight through the clamp, as in torch)", real(0.0), allowed="float >= 0"),
    ),
    formula=(
        "v = max(var, eps) (no gradient through the clamp); l = 0.5 (log v + (x - t)^2 / v);\n"
        "full: + 0.5 log(2 pi). d l / d var = 0.5 (1 / v - (x - t)^2 / v^2) at the clamped v."
    ),
    reference_name="torch.nn.functional.gaussian_nll_loss (torch 2.13)",
    notes=(
        "A negative variance raises (as torch) where var is concrete and gives NaN under a "
        "trace. A 0-d var is accepted as torch accepts a Python float (torch rejects a 0-d "
        "tensor for an input of rank > 1)."
    ),
    check=_gaussian_check,
    check_values=_gaussian_values,
    value_args=("var",),
    value_kinds="f",
    samples=_gaussian_samples,
    random_sample=_gaussian_random,
    reference=_ref_gaussian,
    normalizer=_normalizer_ones,
))
