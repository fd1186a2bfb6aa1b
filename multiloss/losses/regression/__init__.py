"""Regression losses: mse, l1, smooth_l1, huber, poisson_nll, gaussian_nll; and beyond torch.nn
log_cosh, quantile, charbonnier, mape, msle, poisson. Specs only; implementations in
``_jax.py`` and ``_torch.py``."""

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
    jax_reference,
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
    converts={"input": ("iub", "float"), "target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Mean squared error.",
    aliases=("mse_loss", "MSELoss", "l2", "mean_squared_error"),
    inputs=INPUTS,
    options=(_weight(normalised=True),),
    formula="l = w * (x - t)^2; 'mean' = sum(w * (x - t)^2) / sum(w) (w = 1 without weight).",
    reference_name="torch.nn.functional.mse_loss (torch 2.13, with its weight argument)",
    notes=("A weight that sums to 0: torch 2.13's weighted 'mean' divides in Python, so its "
           "gradient is NaN; the contract's is 0 (docs/weighting.md §3). "
           "torch < 2.13 has no weight; multiloss's torch backend computes torch 2.13's "
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
    converts={"input": ("iu", "float"), "target": ("iu", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Mean absolute error.",
    aliases=("l1_loss", "L1Loss", "mae", "mean_absolute_error"),
    inputs=INPUTS,
    options=(_weight(normalised=True),),
    formula=("l = w * |x - t|; 'mean' = sum(w * |x - t|) / sum(w). "
             "d l / d x = w * sign(x - t): 0 at x == t, as torch (JAX's abs gives 1)."),
    reference_name="torch.nn.functional.l1_loss (torch 2.13, with its weight argument)",
    notes=(
        "A target whose shape differs from the input's is an error here (torch broadcasts "
        "it, with a warning or silently). "
        "A weight that sums to 0: torch 2.13's weighted 'mean' divides in Python, so its "
        "gradient is NaN; the contract's is 0 (docs/weighting.md §3). "
        "The gradient at a tie is 0 (torch); jax.grad(jnp.abs)(0.) is 1."),
    check=elementwise_check,
    samples=_samples("l1", lambda e: []),
    random_sample=_random("l1", lambda rng: {}),
    reference=_ref("l1_loss"),
    normalizer=_normalizer_weighted,
))

register(LossSpec(
    name="smooth_l1",
    converts={"input": ("iub", "float"), "target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Smooth L1: quadratic below beta, linear above.",
    aliases=("smooth_l1_loss", "SmoothL1Loss"),
    inputs=INPUTS,
    options=(Option("beta", 1.0, "where the loss turns from quadratic to linear; 0 gives l1",
                    real(0.0), allowed="float >= 0"),),
    formula=("z = |x - t|; l = 0.5 z^2 / beta if z < beta else z - 0.5 beta; beta = 0 is "
             "exactly l1 (gradient 0 at a tie)."),
    reference_name="torch.nn.functional.smooth_l1_loss (torch 2.13)",
    notes=("A target whose shape differs from the input's is an error here (torch broadcasts "
           "it, with a warning or silently). "
           "Equals huber(delta=beta) / beta. optax.huber_loss is huber, not smooth_l1; torch's "
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
    converts={"target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
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
    notes=("A target whose shape differs from the input's is an error here (torch broadcasts "
           "it, with a warning or silently). "
           "A weight that sums to 0: torch 2.13's weighted 'mean' divides in Python, so its "
           "gradient is NaN; the contract's is 0 (docs/weighting.md §3). "
           "Mixed floating inputs are computed in their common dtype, which is the result's "
           "dtype (torch's kernel returns the input's dtype here). "
           "optax.huber_loss matches per element with delta; Keras' Huber averages over the "
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
    converts={"input": ("iub", "float"), "target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Negative log-likelihood of a Poisson distribution (counts given a rate).",
    aliases=("poisson_nll_loss", "PoissonNLLLoss"),
    inputs=(
        InputSpec("input", "the log-rate (log_input=True) or the rate, any shape",
                  aliases=("log_input",)),  # torch's PoissonNLLLoss.forward(log_input, target)
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
        "A target whose shape differs from the input's is an error here (torch broadcasts "
        "it, with a warning or silently). "
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
    converts={"input": ("iu", "float"), "target": ("iu", "float")},  # torch converts these (tests/test_torch_dtypes.py)
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


# ---------------------------------------------------------------------------------------------
# beyond torch.nn: log_cosh, quantile, charbonnier, mape, msle, poisson (issue 4)
#
# Element-wise losses of the input's shape (quantile with several quantiles: one per
# quantile), reduced by the contract ("mean" averages every element, d = c = 1). The Keras
# formulas (mape, msle, poisson) are applied per element here: Keras' own functions average
# over the last axis first (registered apart as keras.*).

#: Keras' backend.epsilon(), taken in the input's dtype
KERAS_EPSILON = 1e-7


def _keras_target_check(named, opts):
    """input floating; target floating or integer (Keras casts it to the input's dtype)."""
    x, t = named["input"], named["target"]
    expect_float("input", x)
    if t.kind not in "fiu":
        raise TypeError(
            f"target: expected a floating or integer array (cast to the input's dtype, as "
            f"Keras), got {t.describe()}"
        )
    expect_same_shape("target", t, "input", x)
    return x.shape


def _plain_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x)
    expect_float("target", t)
    expect_same_shape("target", t, "input", x)
    return x.shape


def _extra_samples(name, make, extra_options=({},), edges=lambda dtype: ()):
    """Grid over shapes, reductions and sample weights (per option set), the loss's edge cases
    (``edges(dtype)``: (id, inputs, options)), all-zero sample weights and an empty batch.
    ``make(rng, shape, dtype, opts) -> (input, target)``."""

    def samples(rng, dtype):
        shapes = {"1d": (7,), "2d": (5, 4), "3d": (2, 3, 4)}
        for k, extra in enumerate(extra_options):
            # every shape for the first option set, the 2-D grid for the others
            for shape_name, shape in (shapes.items() if k == 0 else [("2d", shapes["2d"])]):
                full = shape_name == "2d"
                for g in grid(reduction=REDUCTIONS if full else ("mean", "none"),
                              sw=(False, True)):
                    opts = {"reduction": g["reduction"], **extra}
                    x, t = make(rng, shape, dtype, opts)
                    sw = loss_shape_weight(rng, _extra_loss_shape(x, t), dtype) if g["sw"] else None
                    yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}),
                                 (x, t), opts, sw)
        for cid, inputs, opts in edges(dtype):
            yield Sample(f"{name}[{cid}]", inputs, opts)
        x, t = make(rng, (3, 2), dtype, dict(extra_options[-1]))
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (x, t),
                         {**extra_options[-1], "empty_reduction": empty},
                         np.zeros(_extra_loss_shape(x, t), dtype))
        x, t = make(rng, (0, 2), dtype, dict(extra_options[-1]))
        yield Sample(f"{name}[empty-batch]", (x, t), dict(extra_options[-1]))

    return samples


def _extra_loss_shape(x, t):
    return np.shape(x)


def _extra_random(name, make, extra):
    def random_sample(rng, dtype):
        shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 4))))
        opts = {"reduction": str(rng.choice(REDUCTIONS)), **extra(rng)}
        x, t = make(rng, shape, dtype, opts)
        if np.size(x) and np.shape(x) == np.shape(t) and rng.random() < 0.3:
            t = np.array(t)
            t.flat[0] = np.asarray(x).flat[0]  # a tie
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        sw = loss_shape_weight(rng, np.shape(x), dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)

    return random_sample


def _normal_pair(scale=2.0):
    def make(rng, shape, dtype, opts):
        return ((rng.normal(size=shape) * scale).astype(dtype),
                (rng.normal(size=shape) * scale).astype(dtype))

    return make


def _torch_reduce(loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _jax_reduce(loss, reduction):
    import jax.numpy as jnp

    if reduction == "none":
        return loss
    return jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)


def _keras():
    """Keras 3 on its JAX backend (the reference of the Keras formulas)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"the Keras references need Keras on its JAX backend (KERAS_BACKEND=jax), got "
            f"{keras.backend.backend()!r}"
        )
    return keras


# --- log_cosh ---------------------------------------------------------------------------------


@jax_reference
def _ref_log_cosh(x, t, *, opts, reduction):
    import optax

    return _jax_reduce(optax.losses.log_cosh(x, t), reduction)


def _log_cosh_edges(dtype):
    # ties (error 0), tiny errors, errors where log(cosh) is |e| - log 2 to rounding, and
    # infinite errors (value inf, gradient +-1)
    x = np.array([0.0, 1e-8, -3e-5, 0.7, 30.0, -400.0, 1e4, np.inf, -np.inf, 1.0], dtype)
    t = np.array([0.0, 0.0, 0.0, 0.7, 1.0, 3.0, -1e4, 0.0, 5.0, np.inf], dtype)
    return [("edges,none", (x, t), {"reduction": "none"}), ("edges,sum", (x[:7], t[:7]),
                                                           {"reduction": "sum"})]


register(LossSpec(
    name="log_cosh",
    family=FAMILY,
    summary="Log-cosh loss: log(cosh(input - target)), quadratic near 0 and linear far away.",
    aliases=("logcosh", "log_cosh_loss", "LogCoshLoss"),
    inputs=INPUTS,
    options=(),
    formula=("e = x - t; l = logaddexp(e, -e) - log(2) = log(cosh(e)); "
             "d l / d x = tanh(e) (+-1 at e = +-inf)."),
    reference_name="optax.losses.log_cosh (optax 0.2.8, on JAX)",
    notes=("optax's formula and derivative, per element. Keras' log_cosh computes "
           "e + softplus(-2 e) - log 2 and averages over the last axis (keras.log_cosh); the "
           "values agree to rounding. At an infinite error the value is inf and the gradient "
           "+-1 (JAX's and torch's logaddexp agree there)."),
    check=_plain_check,
    samples=_extra_samples("log_cosh", _normal_pair(3.0), edges=_log_cosh_edges),
    random_sample=_extra_random("log_cosh", _normal_pair(3.0), lambda rng: {}),
    reference=_ref_log_cosh,
    normalizer=_normalizer_ones,
))


# --- quantile (pinball) -----------------------------------------------------------------------


def _check_quantiles(name, value):
    def one(q):
        if isinstance(q, bool) or not isinstance(q, (int, float, np.floating, np.integer)):
            raise TypeError(
                f"{name}: expected a quantile in (0, 1) or a sequence of them, got "
                f"{type(q).__name__} {q!r}"
            )
        v = float(q)
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name}: expected quantiles in (0, 1) (exclusive), got {q!r}")
        return v

    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return one(value.item())
        if value.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D sequence of quantiles, got shape {value.shape}")
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        qs = tuple(one(q) for q in value)
        if not qs:
            raise ValueError(f"{name}: expected at least one quantile, got an empty sequence")
        return qs
    return one(value)


def _quantile_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x)
    expect_float("target", t)
    q = opts["quantiles"]
    if isinstance(q, tuple):
        if x.ndim == 0 or x.shape[-1] != len(q):
            raise ValueError(
                f"input: expected shape (..., {len(q)}) (one prediction per quantile, "
                f"quantiles={q}), got shape {x.shape}"
            )
        if t.shape != x.shape[:-1]:
            raise ValueError(
                f"target: expected the input's shape without its quantile axis, "
                f"{x.shape[:-1]}, got {t.shape}"
            )
        return x.shape
    expect_same_shape("target", t, "input", x)
    return x.shape


def _quantile_make(rng, shape, dtype, opts):
    q = opts.get("quantiles", 0.5)
    t = (rng.normal(size=shape) * 2).astype(dtype)
    if isinstance(q, tuple):
        x = (rng.normal(size=shape + (len(q),)) * 2).astype(dtype)
    else:
        x = (rng.normal(size=shape) * 2).astype(dtype)
    return x, t


def _quantile_edges(dtype):
    # ties (t == x: the two half-lines meet; each side gets half the gradient, as torch.max
    # and jnp.maximum), the extremes of the quantiles, infinities
    t = np.array([0.0, 1.0, -2.0, 3.0, 0.5], dtype)
    x = np.array([0.0, 1.0, -1.0, 5.0, 0.5], dtype)
    out = []
    for q in (0.5, 1e-3, 0.999):
        out.append((f"ties,quantiles={q}", (x, t), {"reduction": "none", "quantiles": q}))
    xs = np.stack([t, t + 1.0, t - 1.0], axis=-1).astype(dtype)
    out.append(("ties,several", (xs, t), {"reduction": "none", "quantiles": (0.1, 0.5, 0.9)}))
    xi = np.array([np.inf, -np.inf, 1.0], dtype)
    ti = np.array([0.0, 0.0, np.inf], dtype)
    out.append(("inf,none", (xi, ti), {"reduction": "none", "quantiles": 0.25}))
    return out


def _ref_quantile(torch, inputs, opts, reduction):
    # pytorch_forecasting.metrics.QuantileLoss.loss, transcribed (pytorch-forecasting is not
    # installed here): errors = target - y_pred[..., i]; max((q - 1) errors, q errors)
    x, t = inputs
    q = opts["quantiles"]
    if isinstance(q, tuple):
        losses = []
        for i, qi in enumerate(q):
            errors = t - x[..., i]
            losses.append(torch.max((qi - 1) * errors, qi * errors).unsqueeze(-1))
        loss = torch.cat(losses, dim=-1)
    else:
        errors = t - x
        loss = torch.max((q - 1) * errors, q * errors)
    return _torch_reduce(loss, reduction)


register(LossSpec(
    name="quantile",
    family=FAMILY,
    summary="Quantile (pinball) loss of one or several quantiles.",
    aliases=("pinball", "quantile_loss", "pinball_loss", "QuantileLoss"),
    inputs=(
        InputSpec("input", "predictions: any shape for one quantile; (..., Q) for Q quantiles "
                  "(one prediction per quantile on the last axis)"),
        InputSpec("target", "targets: the input's shape for one quantile; the input's shape "
                  "without its last axis for Q quantiles"),
    ),
    options=(
        Option("quantiles", 0.5, "the quantile q in (0, 1), or a sequence of Q quantiles (the "
               "input then has a last axis of size Q)", _check_quantiles,
               allowed="float in (0, 1) | sequence of floats in (0, 1)"),
    ),
    formula=("e = t - x (t broadcast over the quantile axis); l = max((q - 1) e, q e), i.e. "
             "q e for e >= 0 and (q - 1) e below.\nThe unreduced loss has the input's shape "
             "((..., Q) for Q quantiles); 'mean' averages every element (quantiles included): "
             "d = c = 1. At a tie (e = 0) each half-line gets half the gradient: "
             "d l / d x = 0.5 - q."),
    reference_name=("pytorch_forecasting.metrics.QuantileLoss's formula, transcribed in torch "
                    "(not installed here): max((q - 1) e, q e) with torch.max"),
    notes=("q = 0.5 is half the l1 loss. pytorch-forecasting's default is seven quantiles; "
           "ours is the median (q = 0.5). The gradient at a tie is that of torch.max / "
           "jnp.maximum (half to each branch), not a one-sided subgradient."),
    check=_quantile_check,
    samples=_extra_samples("quantile", _quantile_make,
                           ({}, {"quantiles": 0.9}, {"quantiles": (0.1, 0.5, 0.9)}),
                           _quantile_edges),
    random_sample=_extra_random("quantile", _quantile_make, lambda rng: {"quantiles": (
        float(rng.choice([0.05, 0.5, 0.8])) if rng.random() < 0.5
        else tuple(float(v) for v in np.sort(rng.uniform(0.01, 0.99, size=int(rng.integers(1, 4)))))
    )}),
    reference=_ref_quantile,
    normalizer=_normalizer_ones,
))


# --- charbonnier --------------------------------------------------------------------------------


def _ref_charbonnier(torch, inputs, opts, reduction):
    import kornia.losses

    x, t = inputs
    eps = opts["eps"]
    # kornia's charbonnier_loss is sqrt(d^2 + 1) - 1; at scale eps, eps * rho(x/eps - t/eps)
    return eps * kornia.losses.charbonnier_loss(x / eps, t / eps, reduction=reduction)


def _charbonnier_edges(dtype):
    # the switch of kornia's two branches at d^2 = 1, ties, tiny and huge differences
    # (the square overflows: kornia keeps sqrt(inf) - 1 = inf), infinities
    big = 1e200 if dtype == np.float64 else 1e30
    x = np.array([1.0, 0.0, 2.0, 1e-9, 0.0, big, np.inf, 0.0, -1.0], dtype)
    t = np.array([0.0, 1.0, 2.0, 0.0, 3e-4, 0.0, 0.0, -np.inf, 0.0], dtype)
    return [("edges,none", (x, t), {"reduction": "none"}),
            ("edges,eps=1e-3", (x[:6], t[:6]), {"reduction": "none", "eps": 1e-3})]


register(LossSpec(
    name="charbonnier",
    family=FAMILY,
    summary="Charbonnier (L1-L2, pseudo-Huber) loss: sqrt((x - t)^2 + eps^2) - eps.",
    aliases=("charbonnier_loss", "CharbonnierLoss", "l1_l2"),
    inputs=INPUTS,
    options=(Option("eps", 1.0, "the scale c of Barron's loss: quadratic below about eps, "
                    "linear above; eps=1 is kornia's charbonnier_loss",
                    real(0.0, lo_open=True), allowed="float > 0"),),
    formula=("d = x / eps - t / eps; l = eps * (sqrt(d^2 + 1) - 1) = sqrt((x - t)^2 + eps^2) "
             "- eps,\ncomputed as kornia does: d^2 / (sqrt(d^2 + 1) + 1) where d^2 < 1 (no "
             "cancellation), sqrt(d^2 + 1) - 1 elsewhere."),
    reference_name=("kornia.losses.charbonnier_loss (kornia 0.9; Barron 2019, alpha = 1, "
                    "c = 1), applied to x / eps and t / eps and scaled by eps"),
    notes=("The definition with '- eps' (0 at a tie), Barron's and kornia's. Image-restoration "
           "code (LapSRN, EDVR, BasicSR) often uses sqrt(d^2 + eps^2) with eps = 1e-3 or 1e-6 "
           "without subtracting eps: that differs by the constant eps only (same gradients). "
           "kornia has no scale: eps = 1 is kornia exactly. The default reduction is "
           "kornia's, 'none'."),
    check=_plain_check,
    samples=_extra_samples("charbonnier", _normal_pair(2.0), ({}, {"eps": 0.1}),
                           _charbonnier_edges),
    random_sample=_extra_random("charbonnier", _normal_pair(2.0), lambda rng: (
        {"eps": float(rng.choice([1e-3, 0.5, 1.0, 2.0]))} if rng.random() < 0.5 else {})),
    reference=_ref_charbonnier,
    normalizer=_normalizer_ones,
    default_reduction="none",
))


# --- mape, msle, poisson (Keras' formulas, per element) ---------------------------------------


def _keras_ref(body):
    """Keras 3's formula evaluated with keras.ops on JAX (Keras' own element-wise ops and
    their derivatives), without its final ``ops.mean(..., axis=-1)``: Keras' JAX mean
    computes in float32 even for float64 inputs (``dtypes.result_type("float64", "float32")``
    is float32 in Keras 3.15; keras.ops.mean(float64 [1.6]) = 1.60000002), which would cap a
    float64 comparison at 1e-8. tests/test_regression_extra.py compares with the
    keras.losses functions themselves (float32 exactly, float64 to that rounding)."""

    def fn(x, t, *, opts, reduction):
        keras = _keras()
        from keras import ops

        y_pred = ops.convert_to_tensor(x)
        y_true = ops.convert_to_tensor(t, dtype=y_pred.dtype)
        eps = ops.convert_to_tensor(keras.backend.epsilon(), dtype=y_pred.dtype)
        return _jax_reduce(body(ops, y_true, y_pred, eps), reduction)

    return jax_reference(fn)


def _keras_mape(ops, y_true, y_pred, eps):
    # keras.losses.mean_absolute_percentage_error, before its mean over the last axis
    return 100.0 * ops.abs((y_true - y_pred) / ops.maximum(ops.abs(y_true), eps))


def _keras_msle(ops, y_true, y_pred, eps):
    # keras.losses.mean_squared_logarithmic_error, before its mean over the last axis
    first_log = ops.log(ops.maximum(y_pred, eps) + 1.0)
    second_log = ops.log(ops.maximum(y_true, eps) + 1.0)
    return ops.square(first_log - second_log)


def _keras_poisson(ops, y_true, y_pred, eps):
    # keras.losses.poisson, before its mean over the last axis
    return y_pred - y_true * ops.log(y_pred + eps)


def _mape_make(rng, shape, dtype, opts):
    t = (rng.normal(size=shape) * 2).astype(dtype)
    x = (t + rng.normal(size=shape)).astype(dtype)
    return x, t


def _mape_edges(dtype):
    # a zero target (|t| < eps: divided by eps), |t| exactly eps (the maximum's tie), ties
    # (x == t: Keras-on-JAX's abs has derivative +1 at 0), negative targets
    e = dtype.type(KERAS_EPSILON)
    x = np.array([1.0, 0.0, 2.0, -3.0, 0.5, 1e-3, 0.0], dtype)
    t = np.array([0.0, 0.0, 2.0, -1.0, e, 0.0, 1e-9], dtype)
    ti = np.array([1, 0, -2, 5, 3, 0, 7], np.int64)
    return [("edges,none", (x, t), {"reduction": "none"}),
            ("integer-target", (x, ti), {"reduction": "sum"})]


def _msle_make(rng, shape, dtype, opts):
    t = rng.exponential(2.0, size=shape).astype(dtype)
    x = np.abs(t + rng.normal(size=shape)).astype(dtype)
    return x, t


def _msle_edges(dtype):
    # at and below the clip (x, t <= eps: constant, no gradient), exactly eps (the maximum's
    # tie), negative values, ties, large values
    e = dtype.type(KERAS_EPSILON)
    x = np.array([0.0, -1.0, e, 1.0, 3.0, 1e4, 0.5, 2.0], dtype)
    t = np.array([1.0, 2.0, 0.0, 1.0, -5.0, 1.0, e, 0.0], dtype)
    ti = np.array([0, 1, 2, 3, 0, 9, 4, 1], np.int64)
    return [("edges,none", (x, t), {"reduction": "none"}),
            ("integer-target", (x, ti), {"reduction": "sum"})]


def _poisson_make(rng, shape, dtype, opts):
    x = rng.uniform(0.05, 4.0, size=shape).astype(dtype)
    t = rng.poisson(2.0, size=shape).astype(dtype)
    return x, t


def _poisson_edges(dtype):
    # a rate of exactly 0 (log(eps)), a zero count, large rates and counts, non-integer
    # counts, an infinite rate
    x = np.array([0.0, 0.0, 1.0, 1e4, 2.5, np.inf, 0.3], dtype)
    t = np.array([0.0, 3.0, 0.0, 1e4, 0.5, 1.0, 2.0], dtype)
    ti = np.array([0, 3, 0, 7, 1, 2, 2], np.int64)
    return [("edges,none", (x, t), {"reduction": "none"}),
            ("integer-target", (x[:5], ti[:5]), {"reduction": "sum"})]


_KERAS_NOTE = (
    "Keras' {fn} averages over the last axis (and defaults to 'sum_over_batch_size'): that is "
    "keras.{fn}, registered apart. Here the same formula is an element-wise loss of the "
    "input's shape, reduced by the contract (torch style: 'mean' over every element). The "
    "derivatives at the non-smooth points are Keras-on-JAX's: "
)

register(LossSpec(
    name="mape",
    family=FAMILY,
    summary="Mean absolute percentage error, per element: 100 |t - x| / max(|t|, 1e-7).",
    aliases=("mean_absolute_percentage_error_elementwise", "MAPELoss"),
    inputs=(InputSpec("input", "predictions, any shape"),
            InputSpec("target", "targets, the input's shape (floating, or integer: cast to the "
                      "input's dtype)")),
    options=(),
    formula=("l = 100 |(t - x) / max(|t|, eps)|, eps = 1e-7 (Keras' epsilon(), in the input's "
             "dtype);\nd|z|/dz = +1 at z = 0 (JAX's abs), max splits the gradient at a tie."),
    reference_name=("keras.losses.mean_absolute_percentage_error (Keras 3.15, JAX backend), on "
                    "a last axis of size 1"),
    notes=_KERAS_NOTE.format(fn="mean_absolute_percentage_error")
    + "the gradient at x == t is -100 / max(|t|, eps) (JAX's abs'(0) = +1; torch's l1 gives 0).",
    check=_keras_target_check,
    samples=_extra_samples("mape", _mape_make, edges=_mape_edges),
    random_sample=_extra_random("mape", _mape_make, lambda rng: {}),
    reference=_keras_ref(_keras_mape),
    normalizer=_normalizer_ones,
))

register(LossSpec(
    name="msle",
    family=FAMILY,
    summary=("Mean squared logarithmic error, per element: "
             "(log(max(x, eps) + 1) - log(max(t, eps) + 1))^2."),
    aliases=("mean_squared_logarithmic_error_elementwise", "MSLELoss"),
    inputs=(InputSpec("input", "predictions, any shape"),
            InputSpec("target", "targets, the input's shape (floating, or integer: cast to the "
                      "input's dtype)")),
    options=(),
    formula=("l = (log(max(x, eps) + 1) - log(max(t, eps) + 1))^2, eps = 1e-7 (Keras' "
             "epsilon(), in the input's dtype);\nvalues below eps are clipped (no gradient), max "
             "splits the gradient at a tie."),
    reference_name=("keras.losses.mean_squared_logarithmic_error (Keras 3.15, JAX backend), on "
                    "a last axis of size 1"),
    notes=_KERAS_NOTE.format(fn="mean_squared_logarithmic_error")
    + "inputs at or below eps are clipped to eps (half the gradient exactly at eps). Keras "
      "makes eps a tensor of its default float type here (float32, float64 under JAX's x64 "
      "mode, where it also computes float32 inputs in float64); multiloss clips at 1e-7 in "
      "the input's dtype.",
    check=_keras_target_check,
    samples=_extra_samples("msle", _msle_make, edges=_msle_edges),
    random_sample=_extra_random("msle", _msle_make, lambda rng: {}),
    reference=_keras_ref(_keras_msle),
    normalizer=_normalizer_ones,
))

register(LossSpec(
    name="poisson",
    family=FAMILY,
    summary="Poisson loss with the rate as prediction (Keras): x - t log(x + 1e-7).",
    aliases=("poisson_loss",),
    inputs=(InputSpec("input", "the predicted rate (>= 0), any shape"),
            InputSpec("target", "counts, the input's shape (floating, or integer: cast to the "
                      "input's dtype)")),
    options=(),
    formula="l = x - t log(x + eps), eps = 1e-7 (Keras' epsilon(), in the input's dtype).",
    reference_name="keras.losses.poisson (Keras 3.15, JAX backend), on a last axis of size 1",
    notes=_KERAS_NOTE.format(fn="poisson")
    + "none needed (smooth for x > -eps). torch's poisson_nll(log_input=False, eps=1e-7) is the "
      "same element-wise formula; poisson_nll's default takes the log-rate.",
    check=_keras_target_check,
    samples=_extra_samples("poisson", _poisson_make, edges=_poisson_edges),
    random_sample=_extra_random("poisson", _poisson_make, lambda rng: {}),
    reference=_keras_ref(_keras_poisson),
    normalizer=_normalizer_ones,
))
