"""JAX implementations of the GAN losses (see the specs in ``__init__.py``), with torch 2.13's
operations and gradients:

- ``binary_cross_entropy_with_logits(x, t) = (1 - t) x - log_sigmoid(x)``, ``log_sigmoid(x) =
  min(x, 0) - log1p(exp(-|x|))``, and the gradient ``sigmoid(x) - t`` (torch's backward; JAX's
  autodiff of the forward would lose it to cancellation, e.g. at x = -30, t = 0);
- ``relu``: gradient 0 where x <= 0 (at the hinge's tie too), passed elsewhere, NaN included
  (torch's ``threshold_backward``; ``jax.nn.relu`` gives 0 at NaN).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ...backends import Terms


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _bce(x, target):
    """torch.nn.functional.binary_cross_entropy_with_logits(x, full_like(x, target), 'none')."""
    zero = jnp.zeros((), x.dtype)
    log_sigmoid = jnp.minimum(x, zero) - jnp.log1p(jnp.exp(-jnp.abs(x)))
    return (1.0 - target) * x - log_sigmoid


@_bce.defjvp
def _bce_jvp(target, primals, tangents):
    (x,), (tx,) = primals, tangents
    return _bce(x, target), (jax.nn.sigmoid(x) - target) * tx


@jax.custom_jvp
def _relu(x):
    """torch.relu, with torch's threshold_backward: the gradient is 0 where x <= 0 and passes
    elsewhere, NaN included (jax.nn.relu's is 0 at NaN)."""
    return jnp.maximum(x, jnp.zeros((), x.dtype))  # NaN stays NaN


_relu.defjvps(lambda t, ans, x: jnp.where(x <= 0, jnp.zeros_like(t), t))


def gan_discriminator(real_logits, fake_logits, *, kind="nonsaturating"):
    dtype = jnp.result_type(real_logits, fake_logits)
    real, fake = real_logits.astype(dtype), fake_logits.astype(dtype)
    if kind in ("nonsaturating", "minimax"):
        loss = _bce(real, 1.0) + _bce(fake, 0.0)
    elif kind == "hinge":
        loss = _relu(1.0 - real) + _relu(1.0 + fake)
    elif kind == "wasserstein":
        loss = fake - real
    else:
        loss = 0.5 * (real - 1.0) ** 2 + 0.5 * fake ** 2
    return Terms(loss)


def gan_generator(fake_logits, *, kind="nonsaturating"):
    fake = fake_logits
    if kind == "nonsaturating":
        loss = _bce(fake, 1.0)
    elif kind == "minimax":
        loss = -_bce(fake, 0.0)
    elif kind in ("hinge", "wasserstein"):
        loss = -fake
    else:
        loss = 0.5 * (fake - 1.0) ** 2
    return Terms(loss)
