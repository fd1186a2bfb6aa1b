"""JAX implementations of the classification losses. Each returns ``Terms`` (unreduced loss,
denominator weights, count mask); ``multiloss.backends._jax`` reduces them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ...backends import Terms
from . import _fused_jax as _fused
from ._linear_jax import linear_cross_entropy  # noqa: F401  (the spec's implementation)


def _denominator(input, target, weight, ignore_index):
    """torch's "mean" weights of class-index targets, w[t] (0 where ignored), and the count."""
    n_classes = input.shape[0 if input.ndim == 1 else 1]
    counts = (target != ignore_index) & (target >= 0) & (target < n_classes)
    if weight is None:
        return counts.astype(input.dtype), counts
    w_t = jnp.take(weight.astype(input.dtype), jnp.where(counts, target, 0))
    return jnp.where(counts, w_t, 0.0).astype(input.dtype), counts


def cross_entropy(input, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                  compile=False, shift=False):
    # the single-pass log-sum-exp and one-pass gradient of _fused_jax (custom VJPs);
    # compile: a torch-backend option, a JAX loss is always jit-compiled
    if shift:  # transformers' causal-LM shift along the sequence (last) axis
        input, target = input[..., :-1], target[..., 1:]
    axis = 0 if input.ndim == 1 else 1
    if jnp.issubdtype(target.dtype, jnp.integer):
        loss = _fused.ce_index(input, target, weight, axis, ignore_index, label_smoothing)
        return Terms(loss, *_denominator(input, target, weight, ignore_index))
    target = target.astype(jnp.result_type(input, target))
    return Terms(_fused.ce_prob(input.astype(target.dtype), target, weight, axis, label_smoothing))


def nll(input, target, *, weight=None, ignore_index=-100):
    axis = 0 if input.ndim == 1 else 1
    loss = _fused.nll_index(input, target, weight, axis, ignore_index)
    return Terms(loss, *_denominator(input, target, weight, ignore_index))


# torch's EPSILON in the BCE gradient is the float literal 1e-12f, i.e. 9.999999960041972e-13
_BCE_EPS = float(np.float32(1e-12))


@jax.custom_jvp
def _bce(x, t):
    # torch's kernel: (t - 1) * max(log1p(-x), -100) - t * max(log(x), -100)
    return (t - 1) * jnp.maximum(jnp.log1p(-x), -100.0) - t * jnp.maximum(jnp.log(x), -100.0)


def _bce_jvp(primals, tangents):
    x, t = primals
    dx, dt = tangents
    # torch's gradients: w.r.t. x, (x - t) / max(x (1 - x), 1e-12), not the derivative of the
    # clamped forward; w.r.t. t, -logit(x) = -log(x / (1 - x)) (unclamped). A tangent that is
    # a symbolic zero (the input not differentiated) adds nothing: not 0 * inf = NaN where x is
    # 0 or 1 (forward mode w.r.t. x alone).
    out = _bce(x, t)
    tan = jnp.zeros_like(out)
    if not isinstance(dx, SymbolicZero):
        tan = tan + (x - t) / jnp.maximum((1 - x) * x, _BCE_EPS) * dx
    if not isinstance(dt, SymbolicZero):
        tan = tan - jnp.log(x / (1 - x)) * dt
    return out, tan


_bce.defjvp(_bce_jvp, symbolic_zeros=True)


def binary_cross_entropy(input, target, *, weight=None):
    dtype = jnp.result_type(input, target)
    loss = _bce(input.astype(dtype), target.astype(dtype))
    if weight is not None:
        loss = loss * weight.astype(loss.dtype)
    return Terms(loss)


def binary_cross_entropy_with_logits(input, target, *, weight=None, pos_weight=None):
    dtype = jnp.result_type(input, target)
    x, t = input.astype(dtype), target.astype(dtype)
    # the custom VJPs of _fused_jax: a forward fused into its reduction, a one-pass gradient
    if pos_weight is None:
        loss = _fused.bce_logits(x, t)
    else:
        pw = jnp.broadcast_to(pos_weight.astype(dtype), jnp.broadcast_shapes(x.shape, pos_weight.shape))
        x, t = jnp.broadcast_to(x, pw.shape), jnp.broadcast_to(t, pw.shape)
        loss = _fused.bce_logits_pw(x, t, pw)
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
    if weight is not None:
        # torch's kernel weights each positive term (z > 0) and skips the others, so an
        # infinite class weight on a row whose margins all hold gives 0, not 0 * inf
        w = jnp.take(weight.astype(h.dtype), safe)[:, None]
        active = (margin - x_t + x > 0) & others
        h = jnp.where(active, h * jnp.where(active, w, 0), 0.0)
    loss = jnp.sum(jnp.where(others, h, 0.0), axis=1) / n_classes
    # an out-of-range class index (reachable only under a trace) is NaN, gradient too
    loss = loss * jnp.where(in_range, 1.0, jnp.nan)
    return Terms(loss.reshape(target.shape))


def multilabel_margin(input, target):
    x, t = _as_batch(input, target)
    if jnp.issubdtype(t.dtype, jnp.unsignedinteger):  # the -1 padding compares as signed
        t = t.astype(jnp.int32)
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

from ._more_jax import *  # noqa: E402,F401,F403  (focal, softmax_focal, ...: the extras)
