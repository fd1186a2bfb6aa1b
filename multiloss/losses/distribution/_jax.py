"""JAX implementation of kl_div (see the spec in ``__init__.py``)."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import xlogy

from ...backends import Terms


def kl_div(input, target, *, log_target=False):
    if log_target:
        return Terms(jnp.exp(target) * (target - input))
    return Terms(xlogy(target, target) - target * input)


# ---------------------------------------------------------------------------------------------
# generalized_kl (optax's formula), js_divergence (kornia's): see the specs in ``__init__.py``


def _axes(x, axis):
    from . import reduced_axes

    return reduced_axes(x.ndim, axis)


def generalized_kl(input, target, *, axis=-1):
    ax = _axes(input, axis)
    kl = jnp.sum(target * (jnp.where(target == 0, 0, jnp.log(target)) - input), axis=ax)
    return Terms(kl + jnp.sum(jnp.exp(input) - target, axis=ax))


def _kl_masked(p, q, ax):
    # kornia's _kl_div_2d: entries with p == 0 (and a finite q >= 0) replaced by 1 in both
    empty = (p == 0) & (q >= 0) & jnp.isfinite(q)
    one = jnp.ones((), p.dtype)
    p = jnp.where(empty, one, p)
    q = jnp.where(empty, one, q)
    return jnp.sum(xlogy(p, p) - p * jnp.log(q), axis=ax)


def js_divergence(input, target, *, axis=-1):
    ax = _axes(input, axis)
    m = 0.5 * (target + input)
    return Terms(0.5 * _kl_masked(target, m, ax) + 0.5 * _kl_masked(input, m, ax))
