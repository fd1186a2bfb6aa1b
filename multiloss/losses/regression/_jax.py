"""JAX implementations of the regression losses (see the specs in ``__init__.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
