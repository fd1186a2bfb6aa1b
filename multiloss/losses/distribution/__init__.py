"""Losses between distributions: kl_div. Specs only; implementations in ``_jax.py`` and
``_torch.py``."""

from __future__ import annotations

import warnings

import numpy as np

from ..._registry import REDUCTIONS as ALL_REDUCTIONS
from ..._registry import InputSpec, LossSpec, Option, Sample, boolean, register
from .._common import case_id, elementwise_check, grid, loss_shape_weight

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
    notes=("The input is log-probabilities and the target probabilities: Keras' KLDivergence "
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
