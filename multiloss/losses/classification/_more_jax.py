"""JAX implementations of the classification extras (specs in ``_more_spec.py``): focal,
softmax_focal, poly1_cross_entropy, generalized_cross_entropy, multiclass_hinge, perceptron,
multiclass_perceptron, sparsemax, multiclass_sparsemax, ranking_softmax.

Each returns ``Terms``; ``multiloss.backends._jax`` reduces them. The formulas are written as
their references write them (torchvision, kornia, optax), so that the values and gradients
agree to rounding, non-smooth points included (``jnp.max`` and ``jnp.maximum`` split the
gradient evenly at a tie, as optax's own code does)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ...backends import Terms
from ._fused_jax import log_sigmoid, torch_pow

__all__ = [
    "focal",
    "generalized_cross_entropy",
    "multiclass_hinge",
    "multiclass_perceptron",
    "multiclass_sparsemax",
    "perceptron",
    "poly1_cross_entropy",
    "ranking_softmax",
    "softmax_focal",
    "sparsemax",
]

def _nan_where_invalid(loss, ok):
    """An out-of-range class index (reachable only under a trace, where it cannot be checked)
    makes its element NaN, its gradient too."""
    return loss * jnp.where(ok, jnp.ones((), loss.dtype), jnp.full((), jnp.nan, loss.dtype))


def _one_hot(target, n_classes, dtype):
    """one_hot(target) and whether each index is in [0, C)."""
    ok = (target >= 0) & (target < n_classes)
    return jax.nn.one_hot(jnp.where(ok, target, 0), n_classes, dtype=dtype), ok


# ---------------------------------------------------------------------------------------------
# focal losses


@jax.custom_jvp
def _bce_logits(x, t):
    """torch's binary_cross_entropy_with_logits, unreduced: (1 - t) x - log_sigmoid(x), with
    torch's gradients (sigmoid(x) - t w.r.t. x, -x w.r.t. t)."""
    return (1 - t) * x - log_sigmoid(x)


@_bce_logits.defjvp
def _bce_logits_jvp(primals, tangents):
    x, t = primals
    dx, dt = tangents
    return _bce_logits(x, t), (jax.nn.sigmoid(x) - t) * dx - x * dt


def focal(input, target, *, alpha=0.25, gamma=2.0):
    dtype = jnp.result_type(input, target)
    x, t = input.astype(dtype), target.astype(dtype)
    p = jax.nn.sigmoid(x)
    ce = _bce_logits(x, t)
    p_t = p * t + (1 - p) * (1 - t)
    # gamma == 0: torch's pow gives the factor 1 with a zero gradient, also at 1 - p_t == 0
    # (where JAX's d x^0 / dx would be 0 * inf)
    loss = ce * (jnp.ones_like(p_t) if gamma == 0 else torch_pow(1 - p_t, gamma))
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return Terms(loss)


def softmax_focal(input, target, *, alpha=None, gamma=2.0, weight=None, ignore_index=-100):
    n_classes = input.shape[1]
    valid = target != ignore_index
    t = jnp.where(valid, target, 0)
    ok = valid & (t >= 0) & (t < n_classes) | ~valid
    t = jnp.where(ok, t, 0)
    # kornia: ignored pixels' logits are set to 0 before the log-softmax (no inf * 0)
    x = jnp.where(valid[:, None], input, jnp.zeros((), input.dtype))
    logp = jax.nn.log_softmax(x, axis=1)
    logp_t = jnp.take_along_axis(logp, t[:, None], axis=1)[:, 0]
    base = 1.0 - jnp.exp(logp_t)
    saturated = base == 0
    # a probability of exactly 1: the factor's value from a detached copy (kornia)
    fw = jnp.where(saturated, torch_pow(jax.lax.stop_gradient(base), gamma),
                   torch_pow(jnp.where(saturated, jnp.ones((), base.dtype), base), gamma))
    zero = jnp.zeros((), input.dtype)
    loss = -fw * jnp.where(valid, logp_t, zero)
    if alpha is not None:
        alpha = alpha.astype(input.dtype)
        if alpha.ndim == 0:
            alpha_t = jnp.where(t == 0, 1 - alpha, alpha)
        else:
            alpha_t = jnp.take(alpha, t)
        loss = alpha_t * loss
    if weight is not None:
        loss = jnp.take(weight.astype(input.dtype), t) * loss
    loss = jnp.where(valid, loss, zero)
    count = valid.astype(input.dtype)
    return Terms(_nan_where_invalid(loss, ok), count, valid)


# ---------------------------------------------------------------------------------------------
# cross-entropy variants


def poly1_cross_entropy(input, target, *, epsilon=2.0):
    n_classes = input.shape[-1]
    if jnp.issubdtype(target.dtype, jnp.integer):
        labels, ok = _one_hot(target, n_classes, input.dtype)
    else:
        dtype = jnp.result_type(input, target)
        input, labels, ok = input.astype(dtype), target.astype(dtype), None
    # optax.poly_loss_cross_entropy's formula
    p = jax.nn.softmax(input, axis=-1)
    one_minus_pt = jnp.sum(labels * (1 - p), axis=-1)
    logp = jax.nn.log_softmax(input, axis=-1)
    ce = -jnp.sum(labels * logp, axis=-1)
    loss = ce + epsilon * one_minus_pt + _poison(logp, labels)
    return Terms(loss if ok is None else _nan_where_invalid(loss, ok))


def generalized_cross_entropy(input, target, *, q=0.7):
    axis = 0 if input.ndim == 1 else 1
    n_classes = input.shape[axis]
    ok = (target >= 0) & (target < n_classes)
    t = jnp.expand_dims(jnp.where(ok, target, 0), axis)
    logp_t = jnp.squeeze(jnp.take_along_axis(jax.nn.log_softmax(input, axis=axis), t, axis),
                         axis)
    # (1 - p_t^q) / q, as -expm1(q log p_t) / q: no cancellation where p_t is near 1
    loss = -jnp.expm1(q * logp_t) / q
    return Terms(_nan_where_invalid(loss, ok))


# ---------------------------------------------------------------------------------------------
# optax's margin, perceptron and sparsemax losses


def _dot_last(x, onehot):
    """sum(x * onehot) over the last axis, as optax writes it, NaN included: optax's product
    makes 0 * inf = NaN for an infinite score of a class that is not the target, which XLA's
    rewrite of a product with a one-hot (a select) drops; ``_poison`` puts it back."""
    return jnp.sum(x * onehot, axis=-1) + _poison(x, onehot)


def _poison(x, labels):
    """NaN where the reference's ``labels * x`` is 0 * (+-inf or NaN) in some entry of a row
    (else 0; no gradient): the NaN that optax's one-hot products propagate."""
    bad = (labels == 0) & ~jnp.isfinite(x)
    return jnp.where(jnp.any(bad, axis=-1), jnp.nan, 0.0).astype(x.dtype)


def multiclass_hinge(input, target):
    onehot, ok = _one_hot(target, input.shape[-1], input.dtype)
    loss = jnp.max(input + 1.0 - onehot, axis=-1) - _dot_last(input, onehot)
    return Terms(_nan_where_invalid(loss, ok))


def multiclass_perceptron(input, target):
    onehot, ok = _one_hot(target, input.shape[-1], input.dtype)
    loss = jnp.max(input, axis=-1) - _dot_last(input, onehot)
    return Terms(_nan_where_invalid(loss, ok))


def perceptron(input, target):
    t = target.astype(input.dtype) if jnp.issubdtype(target.dtype, jnp.integer) else target
    dtype = jnp.result_type(input, t)
    x, t = input.astype(dtype), t.astype(dtype)
    return Terms(jnp.maximum(jnp.zeros((), dtype), -x * t))


def _sparse_plus(z):
    return jnp.where(z <= -1.0, 0.0, jnp.where(z >= 1.0, z, (z + 1.0) ** 2 / 4))


def sparsemax(input, target):
    dtype = input.dtype if not jnp.issubdtype(target.dtype, jnp.floating) else \
        jnp.result_type(input, target)
    x = input.astype(dtype)
    return Terms(_sparse_plus(jnp.where(target != 0, -x, x)).astype(dtype))


def projection_simplex(s):
    """The Euclidean projection of each row (last axis) onto the probability simplex, the
    arithmetic of optax.projections.projection_simplex (sparsemax)."""
    n = s.shape[-1]
    u = -jnp.sort(-s, axis=-1)
    cumsum_u = jnp.cumsum(u, axis=-1)
    ind = jnp.arange(1, n + 1, dtype=s.dtype)
    cond = 1 / ind + (u - cumsum_u / ind) > 0
    idx = jnp.count_nonzero(cond, axis=-1, keepdims=True)
    c = jnp.take_along_axis(cumsum_u, jnp.maximum(idx - 1, 0), axis=-1)
    idx = idx.astype(s.dtype)
    return jax.nn.relu(1 / idx + (s - c / idx))


def multiclass_sparsemax(input, target):
    n_classes = input.shape[-1]
    onehot, ok = _one_hot(target, n_classes, input.dtype)
    # the gradient is sparsemax(s) - onehot (Martins & Astudillo 2016): the projection is
    # held constant, as the envelope theorem allows (optax differentiates through it; the
    # extra terms cancel)
    p = jax.lax.stop_gradient(projection_simplex(input))
    safe = jnp.where(ok, target, 0)[..., None]
    s_y = jnp.take_along_axis(input, safe, axis=-1)
    scores = jnp.where(onehot != 0, jnp.zeros((), input.dtype), input - s_y)
    loss = _dot_last(p, jnp.where(p != 0, scores, 0.0)) + 0.5 * (1.0 - _dot_last(p, p))
    return Terms(_nan_where_invalid(loss, ok))


def ranking_softmax(input, target):
    dtype = jnp.result_type(input, target) if jnp.issubdtype(target.dtype, jnp.floating) \
        else input.dtype
    x, labels = input.astype(dtype), target.astype(dtype)
    return Terms(-jnp.sum(labels * jax.nn.log_softmax(x, axis=-1), axis=-1))
