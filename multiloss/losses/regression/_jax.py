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


@jax.custom_jvp
def _abs_l1(z):
    """|z| with torch's l1_loss gradient, sign(z): also 0 where z is NaN (torch.sign(NaN) is
    0; smooth_l1's and huber's torch gradients are NaN there, so they keep ``_abs``)."""
    return jnp.abs(z)


_abs_l1.defjvps(lambda g, ans, z: g * jnp.where(jnp.isnan(z), jnp.zeros((), z.dtype),
                                               jnp.sign(z)))


def _weighted(loss, weight):
    return loss if weight is None else loss * weight.astype(loss.dtype)


def mse(input, target, *, weight=None):
    z = input - target
    loss = _weighted(z * z, weight)
    d = None if weight is None else jnp.broadcast_to(weight.astype(loss.dtype), loss.shape)
    return Terms(loss, d)


def l1(input, target, *, weight=None):
    loss = _weighted(_abs_l1(input - target), weight)
    d = None if weight is None else jnp.broadcast_to(weight.astype(loss.dtype), loss.shape)
    return Terms(loss, d)


def smooth_l1(input, target, *, beta=1.0):
    z = input - target
    if beta == 0.0:  # torch computes l1_loss here, with its gradient (0 at a NaN difference)
        return Terms(_abs_l1(z))
    a = _abs(z)
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


# ---------------------------------------------------------------------------------------------
# log_cosh, quantile, charbonnier, mape, msle, poisson (see the specs in ``__init__.py``)

#: Keras' backend.epsilon(), in the input's dtype
_KERAS_EPSILON = 1e-7


def _as_input_dtype(target, input):
    return target if target.dtype == input.dtype else target.astype(input.dtype)


def log_cosh(input, target):
    e = input - target
    # optax.losses.log_cosh: logaddexp(e, -e) - log(2), with JAX's logaddexp derivative
    return Terms(jnp.logaddexp(e, -e) - jnp.log(2.0).astype(e.dtype))


def quantile(input, target, *, quantiles=0.5):
    if isinstance(quantiles, tuple):
        q = jnp.asarray(quantiles, input.dtype)
        qm1 = jnp.asarray([qi - 1 for qi in quantiles], input.dtype)
        e = target[..., None] - input
    else:
        q, qm1 = quantiles, quantiles - 1
        e = target - input
    return Terms(jnp.maximum(qm1 * e, q * e))


def charbonnier(input, target, *, eps=1.0):
    d = input / eps - target / eps
    sq = d**2
    small = sq < 1.0
    ss = jnp.where(small, sq, 0.0)
    # kornia's two branches: no cancellation below 1, its overflow behaviour above
    loss = jnp.where(small, ss / (jnp.sqrt(ss + 1.0) + 1.0), jnp.sqrt(sq + 1.0) - 1.0)
    return Terms(eps * loss)


def mape(input, target):
    t = _as_input_dtype(target, input)
    eps = jnp.asarray(_KERAS_EPSILON, input.dtype)
    return Terms(100.0 * jnp.abs((t - input) / jnp.maximum(jnp.abs(t), eps)))


def msle(input, target):
    t = _as_input_dtype(target, input)
    eps = jnp.asarray(_KERAS_EPSILON, input.dtype)
    first = jnp.log(jnp.maximum(input, eps) + 1.0)
    second = jnp.log(jnp.maximum(t, eps) + 1.0)
    return Terms(jnp.square(first - second))


def poisson(input, target):
    t = _as_input_dtype(target, input)
    eps = jnp.asarray(_KERAS_EPSILON, input.dtype)
    return Terms(input - t * jnp.log(input + eps))
