"""Losses between distributions: kl_div, generalized_kl, js_divergence. Specs only; implementations in ``_jax.py`` and
``_torch.py``."""

from __future__ import annotations

import warnings

import numpy as np

from ..._registry import REDUCTIONS as ALL_REDUCTIONS
from ..._registry import InputSpec, LossSpec, Option, Sample, boolean, register
from .._common import (
    case_id,
    elementwise_check,
    expect_float,
    grid,
    jax_reference,
    loss_shape_weight,
)

FAMILY = "distribution"


def _warn(opts):
    if opts["reduction"] == "mean":
        warnings.warn(
            "kl_div: reduction='mean' divides the total by the batch size and the support size "
            "(as torch's, which warns likewise); reduction='batchmean' gives the KL divergence",
            UserWarning,
            stacklevel=4,
        )


def _log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _samples(rng, dtype):
    shapes = {"2d": (4, 5), "3d": (2, 3, 4), "1d": (6,)}
    for shape_name, shape in shapes.items():
        full = shape_name == "2d"
        axes = dict(
            log_target=(False, True),
            reduction=("batchmean", "sum", "none", "mean", "sum_over_batch_size") if full
            else ("batchmean", "none"),
            sw=(False, True),
        )
        for g in grid(**axes):
            x = _log_softmax(rng.normal(size=shape) * 2).astype(dtype)
            p = np.exp(_log_softmax(rng.normal(size=shape) * 2))
            t = np.log(p) if g["log_target"] else p
            opts = {"reduction": g["reduction"], "log_target": g["log_target"]}
            sw = loss_shape_weight(rng, shape, dtype) if g["sw"] else None
            yield Sample(case_id(f"kl_div[{shape_name}]", {**opts, "sw": g["sw"]}),
                         (x, t.astype(dtype)), opts, sw)
    # zeros in a probability target (t log t = 0 there), -inf in a log target
    x = _log_softmax(rng.normal(size=(3, 4))).astype(dtype)
    t = np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype)
    yield Sample("kl_div[zero-target,batchmean]", (x, t), {"reduction": "batchmean"})
    yield Sample("kl_div[zero-target,none]", (x, t), {"reduction": "none"})
    with np.errstate(divide="ignore"):
        yield Sample("kl_div[-inf-log-target]", (x, np.log(t)), {"reduction": "sum", "log_target": True})
    # (a well-conditioned point: at t = 0.3, x = -1.2 the two terms cancel to 1e-3 and float32
    # rounding of log alone moves the result by 1e-5 relative)
    yield Sample("kl_div[scalar,batchmean]", (np.array(-0.2, dtype), np.array(0.7, dtype)),
                 {"reduction": "batchmean"})
    yield Sample("kl_div[empty-batch,batchmean]", (np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)),
                 {"reduction": "batchmean"})
    for empty in ("nan", "zero"):
        yield Sample(f"kl_div[zero-sample-weights,empty={empty}]", (x, t),
                     {"reduction": "mean", "empty_reduction": empty}, np.zeros((3, 1), dtype))


def _random(rng, dtype):
    shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(0, 4))))
    x = _log_softmax(rng.normal(size=shape) * 2) if shape else np.asarray(-rng.random())
    log_target = bool(rng.random() < 0.5)
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if shape else np.asarray(rng.random())
    if shape and rng.random() < 0.3:
        p.flat[0] = 0.0
    with np.errstate(divide="ignore"):
        t = np.log(p) if log_target else p
    opts = {"reduction": str(rng.choice(("batchmean", "sum", "none", "mean", "sum_over_batch_size"))),
            "log_target": log_target}
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("kl_div[random]", opts), (x.astype(dtype), t.astype(dtype)), opts, sw)


def _ref(torch, inputs, opts, reduction):
    x, t = inputs
    if reduction == "mean":  # torch warns here; the warning is ours to give at construction
        return torch.nn.functional.kl_div(x, t, reduction="sum", log_target=opts["log_target"]) / max(x.numel(), 0)
    return torch.nn.functional.kl_div(x, t, reduction=reduction, log_target=opts["log_target"])


def _normalizer(inputs, opts):
    return np.ones(inputs[0].shape), np.ones(inputs[0].shape)


register(LossSpec(
    name="kl_div",
    family=FAMILY,
    summary="Kullback-Leibler divergence KL(target || exp(input)), input in log space.",
    aliases=("KLDivLoss", "kld", "kl_divergence"),
    inputs=(
        InputSpec("input", "log-probabilities, any shape"),
        InputSpec("target", "probabilities (or log-probabilities with log_target=True), the "
                  "input's shape"),
    ),
    options=(Option("log_target", False, "the target is given in log space", boolean,
                    allowed="bool"),),
    reductions=(*ALL_REDUCTIONS, "batchmean"),
    formula=("l = xlogy(t, t) - t * x (0 where t == 0); with log_target: exp(t) * (t - x).\n"
             "'batchmean' = sum(l) / input.shape[0] (sum for a 0-d input): the KL divergence; "
             "'mean' averages over every element (torch's default, which it warns about)."),
    reference_name="torch.nn.functional.kl_div (torch 2.13)",
    notes=("A target whose shape differs from the input's is an error here (torch broadcasts "
           "it, with a warning or silently). "
           "The input is log-probabilities and the target probabilities: Keras' KLDivergence "
           "takes probabilities for both (and swaps the argument order); optax.kl_divergence "
           "sums over the last axis. Use reduction='batchmean' for the true KL divergence. "
           "With sample_weight, 'batchmean' is sum(w * l) / input.shape[0]."),
    check=elementwise_check,
    samples=_samples,
    random_sample=_random,
    reference=_ref,
    normalizer=_normalizer,
    warn=_warn,
))


# ---------------------------------------------------------------------------------------------
# generalized_kl (optax), js_divergence (kornia's formula): divergences summed over `axis`
# (issue 4). The unreduced loss is one divergence per distribution: the input's shape without
# the reduced axes; "mean" averages the divergences (d = c = 1).


def _check_axis(name, value):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (tuple, list)) and value and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in value
    ):
        return tuple(int(a) for a in value)
    raise TypeError(
        f"{name}: expected None, an int or a non-empty tuple of ints (the axes the divergence "
        f"sums over), got {type(value).__name__} {value!r}"
    )


def reduced_axes(ndim: int, axis) -> tuple:
    """The normalised, sorted axes of ``axis`` (None: every axis) for an array of rank ndim;
    raises ValueError naming ``axis``."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"axis: expected axes in [{-ndim}, {ndim}) for an input of rank {ndim}, got "
                f"{axis!r}"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis: expected distinct axes, got {axis!r}")
    return tuple(sorted(out))


def _summed_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x)
    expect_float("target", t)
    if t.shape != x.shape:
        raise ValueError(f"target: expected the shape of input, {x.shape}, got {t.shape}")
    axes = reduced_axes(x.ndim, opts["axis"])
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


AXIS = Option("axis", -1, "the axis or axes a divergence sums over (None: all); the loss has "
              "the input's shape without them", _check_axis,
              allowed="int | tuple of int | None")


def _summed_normalizer(inputs, opts):
    x = np.asarray(inputs[0])
    axes = reduced_axes(x.ndim, opts["axis"])
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return np.ones(shape), np.ones(shape)


def _loss_shape_of(x, axis):
    axes = reduced_axes(np.ndim(x), axis)
    return tuple(d for i, d in enumerate(np.shape(x)) if i not in axes)


def _divergence_samples(name, make, edges):
    """shape x axis x reduction x sample weight grid, the edge cases, zero sample weights and
    an empty batch. ``make(rng, shape, dtype) -> (input, target)``."""

    def samples(rng, dtype):
        cases = [("2d", (4, 5), -1, REDUCTIONS_ALL), ("3d", (2, 3, 4), -1, ("mean", "none")),
                 ("1d", (6,), -1, ("mean", "sum")), ("3d", (2, 3, 4), (1, 2), ("mean", "none")),
                 ("2d", (4, 5), 0, ("none",)), ("2d", (3, 4), None, ("sum",))]
        for shape_name, shape, axis, reds in cases:
            for g in grid(reduction=reds, sw=(False, True)):
                x, t = make(rng, shape, dtype)
                opts = {"reduction": g["reduction"], "axis": axis}
                sw = loss_shape_weight(rng, _loss_shape_of(x, axis), dtype) if g["sw"] else None
                yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}),
                             (x, t), opts, sw)
        for cid, inputs, opts in edges(dtype):
            yield Sample(f"{name}[{cid}]", inputs, opts)
        x, t = make(rng, (3, 4), dtype)
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (x, t),
                         {"empty_reduction": empty}, np.zeros(3, dtype))
        x, t = make(rng, (0, 4), dtype)
        yield Sample(f"{name}[empty-batch]", (x, t), {})
        x, t = make(rng, (3, 0), dtype)
        yield Sample(f"{name}[empty-support,none]", (x, t), {"reduction": "none"})

    return samples


REDUCTIONS_ALL = ("mean", "sum", "none", "sum_over_batch_size")


def _divergence_random(name, make):
    def random_sample(rng, dtype):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(d) for d in rng.integers(1, 5, size=ndim))
        x, t = make(rng, shape, dtype)
        choice = int(rng.integers(0, 3))
        axis = -1 if choice == 0 else (None if choice == 1 else int(rng.integers(0, ndim)))
        opts = {"reduction": str(rng.choice(REDUCTIONS_ALL)), "axis": axis}
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        sw = loss_shape_weight(rng, _loss_shape_of(x, axis), dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)

    return random_sample


def _reduce_jax(loss, reduction):
    import jax.numpy as jnp

    if reduction == "none":
        return loss
    return jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)


# --- generalized_kl ---------------------------------------------------------------------------


@jax_reference
def _ref_generalized_kl(x, t, *, opts, reduction):
    import optax

    loss = optax.losses.generalized_kl_divergence(x, t, axis=opts["axis"])
    return _reduce_jax(loss, reduction)


def _gkl_make(rng, shape, dtype):
    x = (rng.normal(size=shape)).astype(dtype)  # log-predictions, unnormalised
    t = rng.uniform(0.0, 2.0, size=shape).astype(dtype)  # non-negative, unnormalised
    return x, t


def _gkl_edges(dtype):
    x = np.array([[-1.0, 0.5, 2.0, -3.0], [0.0, 0.0, 0.0, 0.0], [-30.0, 5.0, 1.0, -0.2]], dtype)
    t = np.array([[0.0, 0.5, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 3.0, 2.0]], dtype)
    # zeros in the target: t log t = 0 (optax's where; its gradient w.r.t. such a target is
    # NaN, as optax's: 0 * d log(t) / dt = 0 / 0); equal arguments (t = exp(x): loss 0);
    # a log-prediction of -inf
    out = [("zero-target,none", (x, t), {"reduction": "none"}),
           ("equal,sum", (np.log(t[1:2] + 1.0).astype(dtype), (t[1:2] + 1.0).astype(dtype)),
            {"reduction": "sum"})]
    with np.errstate(divide="ignore"):
        xi = np.log(np.array([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]])).astype(dtype)
    ti = np.array([[0.0, 0.25, 0.75], [0.5, 0.5, 0.0]], dtype)
    out.append(("-inf-log-prediction,none", (xi, ti), {"reduction": "none"}))
    return out


register(LossSpec(
    name="generalized_kl",
    family=FAMILY,
    summary=("Generalized Kullback-Leibler divergence of unnormalised distributions (optax): "
             "sum(t (log t - x) + exp(x) - t)."),
    aliases=("generalized_kl_divergence", "convex_kl_divergence", "convex_kl"),
    inputs=(
        InputSpec("input", "log-predictions (log of the unnormalised predicted measure)"),
        InputSpec("target", "non-negative targets (unnormalised), the input's shape"),
    ),
    options=(AXIS,),
    formula=("l = sum_axis t (where(t == 0, 0, log t) - x) + sum_axis (exp(x) - t): the Bregman "
             "divergence of f(u) = u log u - u;\nequals KL(t || exp(x)) when both are "
             "normalised. One value per distribution (the input's shape without `axis`)."),
    reference_name="optax.losses.generalized_kl_divergence (optax 0.2.8, on JAX)",
    notes=("optax's names: log_predictions first, targets second, axis=-1; optax's `where` "
           "mask is not offered (use sample_weight on the unreduced loss). "
           "optax.convex_kl_divergence is its deprecated alias. The gradient w.r.t. a target "
           "that is exactly 0 is NaN, as in optax (the masked log's 0 / 0). kl_div is torch's "
           "element-wise KL with the arguments' roles the same (log-input, target)."),
    check=_summed_check,
    samples=_divergence_samples("generalized_kl", _gkl_make, _gkl_edges),
    random_sample=_divergence_random("generalized_kl", _gkl_make),
    reference=_ref_generalized_kl,
    normalizer=_summed_normalizer,
))


# --- js_divergence ------------------------------------------------------------------------------


def _ref_js(torch, inputs, opts, reduction):
    """kornia.losses.js_div_loss_2d on the distributions laid out as (1, M, 1, K): kornia
    sums over its last two axes (H, W) and returns one divergence per (B, N)."""
    import kornia.losses

    x, t = inputs
    axes = reduced_axes(x.ndim, opts["axis"])
    keep = [i for i in range(x.ndim) if i not in axes]
    shape = [x.shape[i] for i in keep]
    m = int(np.prod(shape)) if shape else 1
    k = int(np.prod([x.shape[i] for i in axes])) if axes else 1

    def lay(a):
        return a.permute(*keep, *axes).reshape(1, m, 1, k)

    out = kornia.losses.js_div_loss_2d(lay(x), lay(t), reduction=reduction)
    return out.reshape(shape) if reduction == "none" else out


def _simplex(rng, shape, dtype, zeros=0.2):
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if shape[-1] else np.zeros(shape)
    if p.size:
        p[rng.random(size=p.shape) < zeros] = 0.0
    return p.astype(dtype)


def _js_make(rng, shape, dtype):
    return _simplex(rng, shape, dtype), _simplex(rng, shape, dtype)


def _js_edges(dtype):
    # zero in both (contributes nothing, no gradient), zero in one, one-hot against one-hot
    # (disjoint supports: ln 2), equal distributions (0), unnormalised non-negative values
    x = np.array([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25],
                  [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 3.0, 1.0]], dtype)
    t = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25],
                  [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.5]], dtype)
    return [("zeros,none", (x, t), {"reduction": "none"}),
            ("zeros,sum", (x, t), {"reduction": "sum"})]


register(LossSpec(
    name="js_divergence",
    family=FAMILY,
    summary="Jensen-Shannon divergence between two distributions given as probabilities.",
    aliases=("jensen_shannon", "jsd", "js_div", "js_div_loss"),
    inputs=(
        InputSpec("input", "predicted probabilities (non-negative), any shape"),
        InputSpec("target", "target probabilities, the input's shape"),
    ),
    options=(AXIS,),
    formula=("m = (t + x) / 2; l = 0.5 KL(t || m) + 0.5 KL(x || m), KL(p || q) = sum_axis "
             "xlogy(p, p) - p log q,\nin nats (at most ln 2 for normalised inputs); an entry "
             "with p == 0 (and q finite, >= 0) contributes nothing to the value or gradients."),
    reference_name=("kornia.losses.js_div_loss_2d (kornia 0.9), on the distributions laid out "
                    "as (1, M, 1, K)"),
    notes=("optax has no Jensen-Shannon divergence; kornia's is the reference (its "
           "js_div_loss_2d takes (B, N, H, W) heatmaps and sums over H, W; here any axes, "
           "-1 by default). Symmetric in its arguments; nothing is normalised or checked "
           "(negative entries give NaN, as kornia)."),
    check=_summed_check,
    samples=_divergence_samples("js_divergence", _js_make, _js_edges),
    random_sample=_divergence_random("js_divergence", _js_make),
    reference=_ref_js,
    normalizer=_summed_normalizer,
))
