"""JAX implementations of the classification losses. Each returns ``Terms`` (unreduced loss,
denominator weights, count mask); ``multiloss.backends._jax`` reduces them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...backends import Terms


def _nll_terms(logp, target, weight, ignore_index, label_smoothing, axis):
    """Class-index targets on log-probabilities: torch's nll_loss with label smoothing."""
    n_classes = logp.shape[axis]
    valid = target != ignore_index
    in_range = (target >= 0) & (target < n_classes)
    counts = valid & in_range
    safe = jnp.where(counts, target, 0)
    picked = jnp.take_along_axis(logp, jnp.expand_dims(safe, axis), axis=axis)
    picked = jnp.squeeze(picked, axis)
    w_t = 1.0 if weight is None else jnp.take(weight.astype(logp.dtype), safe)
    loss = -(picked * w_t)
    if label_smoothing:
        if weight is None:
            smooth = -jnp.sum(logp, axis=axis)
        else:
            shape = [1] * logp.ndim
            shape[axis] = n_classes
            smooth = -jnp.sum(logp * weight.astype(logp.dtype).reshape(shape), axis=axis)
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / n_classes) * smooth
    invalid = valid & ~in_range
    # 0 where ignored; NaN where the index is out of range (only reachable under a trace, as
    # concrete indices are checked before the call), with a NaN gradient too so that a
    # training step cannot silently go on
    loss = jnp.where(counts | invalid, loss, 0.0) * jnp.where(invalid, jnp.nan, 1.0)
    denom = jnp.where(counts, w_t, 0.0).astype(logp.dtype)
    return Terms(loss, denom, counts)


def cross_entropy(input, target, *, weight=None, ignore_index=-100, label_smoothing=0.0):
    axis = 0 if input.ndim == 1 else 1
    logp = jax.nn.log_softmax(input, axis=axis)
    if jnp.issubdtype(target.dtype, jnp.integer):
        return _nll_terms(logp, target, weight, ignore_index, label_smoothing, axis)
    n_classes = input.shape[axis]
    t = target
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / n_classes
    prod = logp * t
    if weight is not None:
        shape = [1] * logp.ndim
        shape[axis] = n_classes
        prod = prod * weight.astype(logp.dtype).reshape(shape)
    return Terms(-jnp.sum(prod, axis=axis))


def nll(input, target, *, weight=None, ignore_index=-100):
    axis = 0 if input.ndim == 1 else 1
    return _nll_terms(input, target, weight, ignore_index, 0.0, axis)


# torch's EPSILON in the BCE gradient is the float literal 1e-12f, i.e. 9.999999960041972e-13
_BCE_EPS = float(np.float32(1e-12))


@jax.custom_jvp
def _bce(x, t):
    # torch's kernel: (t - 1) * max(log1p(-x), -100) - t * max(log(x), -100)
    return (t - 1) * jnp.maximum(jnp.log1p(-x), -100.0) - t * jnp.maximum(jnp.log(x), -100.0)


@_bce.defjvp
def _bce_jvp(primals, tangents):
    x, t = primals
    dx, dt = tangents
    # torch's gradients: w.r.t. x, (x - t) / max(x (1 - x), 1e-12), not the derivative of the
    # clamped forward; w.r.t. t, -logit(x) = -log(x / (1 - x)) (unclamped).
    gx = (x - t) / jnp.maximum((1 - x) * x, _BCE_EPS)
    gt = -jnp.log(x / (1 - x))
    return _bce(x, t), gx * dx + gt * dt


def binary_cross_entropy(input, target, *, weight=None):
    dtype = jnp.result_type(input, target)
    loss = _bce(input.astype(dtype), target.astype(dtype))
    if weight is not None:
        loss = loss * weight.astype(loss.dtype)
    return Terms(loss)


@jax.custom_jvp
def _bce_logits(x, t):
    return (1 - t) * x - jax.nn.log_sigmoid(x)


@_bce_logits.defjvp
def _bce_logits_jvp(primals, tangents):
    x, t = primals
    dx, dt = tangents
    # torch's gradients: w.r.t. x, sigmoid(x) - t; w.r.t. t, -x
    return _bce_logits(x, t), (jax.nn.sigmoid(x) - t) * dx - x * dt


@jax.custom_jvp
def _bce_logits_pw(x, t, pw):
    return (1 - t) * x - ((pw - 1) * t + 1) * jax.nn.log_sigmoid(x)


@_bce_logits_pw.defjvp
def _bce_logits_pw_jvp(primals, tangents):
    x, t, pw = primals
    dx, dt, dpw = tangents
    ls = jax.nn.log_sigmoid(x)
    pt = pw * t
    # torch's gradients: w.r.t. x, (pw t + 1 - t) sigmoid(x) - pw t;
    # w.r.t. t, log_sigmoid(-x) - pw log_sigmoid(x)
    gx = (pt + 1 - t) * jax.nn.sigmoid(x) - pt
    gt = jax.nn.log_sigmoid(-x) - pw * ls
    return _bce_logits_pw(x, t, pw), gx * dx + gt * dt - t * ls * dpw


def binary_cross_entropy_with_logits(input, target, *, weight=None, pos_weight=None):
    dtype = jnp.result_type(input, target)
    x, t = input.astype(dtype), target.astype(dtype)
    if pos_weight is None:
        loss = _bce_logits(x, t)
    else:
        pw = jnp.broadcast_to(pos_weight.astype(dtype), jnp.broadcast_shapes(x.shape, pos_weight.shape))
        x, t = jnp.broadcast_to(x, pw.shape), jnp.broadcast_to(t, pw.shape)
        loss = _bce_logits_pw(x, t, pw)
    if weight is not None:
        loss = loss * weight.astype(loss.dtype)
    return Terms(loss)
