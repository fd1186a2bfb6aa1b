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


# ---------------------------------------------------------------------------------------------
# margin losses


def _hinge(z):
    """max(z, 0) whose gradient at z == 0 is 0: torch's multi/multilabel margin kernels test
    z > 0 strictly (jnp.maximum would pass half the gradient at a tie)."""
    return jnp.where(z > 0, z, 0.0)


def _as_batch(input, target):
    """(N, C) scores and (N, k) targets from torch's accepted ranks (0-d, (C,) or (N, C))."""
    n = input.shape[0] if input.ndim == 2 else 1
    c = input.shape[-1] if input.ndim else 1
    k = target.size // n if n else (target.shape[-1] if target.ndim == 2 else 1)
    return input.reshape(n, c), target.reshape(n, k)


def multi_margin(input, target, *, p=1, margin=1.0, weight=None):
    x, t = _as_batch(input, target)
    n_classes = x.shape[1]
    t = t[:, 0]
    in_range = (t >= 0) & (t < n_classes)
    safe = jnp.where(in_range, t, 0)
    x_t = jnp.take_along_axis(x, safe[:, None], axis=1)
    z = _hinge(margin - x_t + x)
    h = z if p == 1 else z * z
    others = jnp.arange(n_classes)[None, :] != safe[:, None]
    loss = jnp.sum(jnp.where(others, h, 0.0), axis=1) / n_classes
    if weight is not None:
        loss = loss * jnp.take(weight.astype(loss.dtype), safe)
    # an out-of-range class index (reachable only under a trace) is NaN, gradient too
    loss = loss * jnp.where(in_range, 1.0, jnp.nan)
    return Terms(loss.reshape(target.shape))


def multilabel_margin(input, target):
    x, t = _as_batch(input, target)
    n_classes = x.shape[1]
    in_range = (t >= -1) & (t < n_classes)
    # the targets of a row are read up to its first -1
    listed = jnp.cumprod((t != -1).astype(jnp.int32), axis=1).astype(bool)
    safe = jnp.where(listed & in_range, t, 0)
    is_target = jnp.any(
        (safe[:, :, None] == jnp.arange(n_classes)[None, None, :]) & listed[:, :, None], axis=1
    )
    x_t = jnp.take_along_axis(x, safe, axis=1)  # (N, C): the score of the j-th listed target
    z = _hinge(1.0 - x_t[:, :, None] + x[:, None, :])  # (N, j, i)
    z = jnp.where(listed[:, :, None] & ~is_target[:, None, :], z, 0.0)
    loss = jnp.sum(z, axis=(1, 2)) / n_classes
    loss = loss * jnp.where(jnp.all(in_range, axis=1), 1.0, jnp.nan)
    return Terms(loss.reshape(input.shape[:-1] if input.ndim == 2 else ()))


def soft_margin(input, target):
    dtype = jnp.result_type(input, target)
    x, t = input.astype(dtype), target.astype(dtype)
    # torch's kernel: log1p(exp(-t x)), which overflows to inf (it is not softplus)
    return Terms(jnp.log1p(jnp.exp(-t * x)))


def multilabel_soft_margin(input, target, *, weight=None):
    dtype = jnp.result_type(input, target)
    x, t = input.astype(dtype), target.astype(dtype)
    loss = -(t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))
    if weight is not None:
        loss = loss * weight.astype(dtype)
    return Terms(jnp.sum(loss, axis=-1) / x.shape[-1])
