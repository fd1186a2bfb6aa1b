"""Regression losses: mse, l1, smooth_l1, huber. Specs only; implementations in ``_jax.py``
and ``_torch.py``."""

from __future__ import annotations

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, array_option, real, register
from .._common import REDUCTIONS, case_id, elementwise_check, grid, loss_shape_weight, positive

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
