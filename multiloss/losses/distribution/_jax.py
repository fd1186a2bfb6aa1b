"""JAX implementation of kl_div (see the spec in ``__init__.py``)."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import xlogy

from ...backends import Terms


def kl_div(input, target, *, log_target=False):
    if log_target:
        return Terms(jnp.exp(target) * (target - input))
    return Terms(xlogy(target, target) - target * input)
