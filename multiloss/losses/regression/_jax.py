"""JAX implementations of the regression losses (see the specs in ``__init__.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...backends import Terms


@jax.custom_jvp
def _abs(z):
    """|z| whose derivative is sign(z): 0 at z == 0 as in torch (jnp.abs's is 1 there), and
    +-1 at z = +-inf."""
    return jnp.abs(z)


_abs.defjvps(lambda g, ans, z: g * jnp.sign(z))


def _weighted(loss, weight):
    return loss if weight is None else loss * weight.astype(loss.dtype)


def mse(input, target, *, weight=None):
    z = input - target
    loss = _weighted(z * z, weight)
    d = None if weight is None else jnp.broadcast_to(weight.astype(loss.dtype), loss.shape)
    return Terms(loss, d)


def l1(input, target, *, weight=None):
    loss = _weighted(_abs(input - target), weight)
    d = None if weight is None else jnp.broadcast_to(weight.astype(loss.dtype), loss.shape)
    return Terms(loss, d)


def smooth_l1(input, target, *, beta=1.0):
    z = input - target
    a = _abs(z)
    if beta == 0.0:
        return Terms(a)
    quad = a < beta
    zq = jnp.where(quad, z, 0.0)  # keeps an infinite z out of the unused branch's gradient
    return Terms(jnp.where(quad, 0.5 * zq * zq / beta, a - 0.5 * beta))


def huber(input, target, *, delta=1.0, weight=None):
    z = input - target
    a = _abs(z)
    quad = a < delta
    zq = jnp.where(quad, z, 0.0)
    loss = jnp.where(quad, 0.5 * zq * zq, delta * (a - 0.5 * delta))
    return Terms(_weighted(loss, weight))


def poisson_nll(input, target, *, log_input=True, full=False, eps=1e-8):
    t = target.astype(input.dtype) if jnp.issubdtype(target.dtype, jnp.integer) else target
    dtype = jnp.result_type(input, t)
    x, t = input.astype(dtype), t.astype(dtype)
    loss = jnp.exp(x) - t * x if log_input else x - t * jnp.log(x + eps)
    if full:
        # torch's Stirling term, masked where t <= 1 (masked_fill: its gradient there is
        # 0 * d(stirling)/dt, which is NaN at t <= 0, as in torch)
        stirling = t * jnp.log(t) - t + 0.5 * jnp.log(2 * jnp.pi * t)
        loss = loss + jnp.where(t <= 1, 0.0, stirling)
    return Terms(loss)


def _clamp_straight_through(eps):
    """max(v, eps) whose gradient passes straight through (torch clamps the variance in place
    under no_grad: the gradient is taken at the clamped value, as if not clamped)."""

    @jax.custom_jvp
    def clamp(v):
        return jnp.maximum(v, eps)

    clamp.defjvps(lambda g, ans, v: g)
    return clamp


def gaussian_nll_var(input, var):
    """torch's variance shapes: the input's; the input's without the last dimension; the
    input's rank differing in exactly one dimension of size 1; or 0-d (torch's float var)."""
    if var.shape != input.shape and var.ndim == input.ndim - 1 and var.shape == input.shape[:-1]:
        return var[..., None]
    return var


def gaussian_nll(input, target, var, *, full=False, eps=1e-6):
    dtype = jnp.result_type(input, target, var)
    x, t = input.astype(dtype), target.astype(dtype)
    v = gaussian_nll_var(input, var.astype(dtype))
    invalid = v < 0  # reachable only under a trace: concrete variances are checked first
    v = _clamp_straight_through(eps)(v)
    d = x - t
    loss = 0.5 * (jnp.log(v) + d * d / v)
    if full:
        loss = loss + 0.5 * float(np.log(2 * np.pi))
    loss = loss * jnp.where(invalid, jnp.nan, 1.0)
    return Terms(jnp.broadcast_to(loss, input.shape))
