"""JAX implementations of the ranking losses (see the specs in ``__init__.py``).

Every non-smooth point follows torch 2.13's autograd, not JAX's defaults:

- ``clamp_min(z, 0)`` passes the whole gradient at z == 0 and none where z is NaN (torch's
  ``where(z >= 0, g, 0)``); ``jnp.maximum`` would split it 0.5/0.5.
- ``minimum`` (the swap of the triplet losses) splits it 0.5/0.5 at a tie and gives the whole
  gradient to both sides where one is NaN (torch's ``minimum`` backward).
- the p-norm of ``pairwise_distance`` has torch's ``norm_backward``: 0 at a zero vector, sign(0)
  = sign(NaN) = 0, an inf norm's gradient shared evenly between the maxima.
- ``cosine_similarity`` clamps each norm at eps under ``no_grad``: the gradient passes through
  the clamp as if it were not there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ...backends import Terms
from . import checked_distance

#: torch's ``constexpr float EPSILON = 1e-12`` of cosine_embedding_loss (aten Loss.cpp): a float,
#: so float64 computations add float32(1e-12) = 9.999999960041972e-13, not 1e-12.
COSINE_EMBEDDING_EPS = float(np.float32(1e-12))
#: torch.pairwise_distance's and cosine_similarity's defaults.
PAIRWISE_EPS = 1e-6
COSINE_SIMILARITY_EPS = 1e-8


# ---------------------------------------------------------------------------------------------
# torch's non-smooth primitives


@jax.custom_jvp
def _clamp_min0(z):
    """torch.clamp_min(z, 0): NaN stays NaN; gradient 1 where z >= 0 (a tie included), else 0."""
    return jnp.maximum(z, jnp.zeros((), z.dtype))


_clamp_min0.defjvps(lambda g, ans, z: jnp.where(z >= 0, g, jnp.zeros_like(g)))


@jax.custom_jvp
def _minimum(x, y):
    """torch.minimum, with torch's gradient: half to each side at a tie."""
    return jnp.minimum(x, y)


@_minimum.defjvp
def _minimum_jvp(primals, tangents):
    x, y = primals
    tx, ty = tangents
    eq = x == y
    half = jnp.asarray(0.5, x.dtype)
    one = jnp.asarray(1.0, x.dtype)
    zero = jnp.asarray(0.0, x.dtype)
    wx = jnp.where(eq, half, jnp.where(x > y, zero, one))
    wy = jnp.where(eq, half, jnp.where(x < y, zero, one))
    return jnp.minimum(x, y), wx * tx + wy * ty


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _clamp_min_no_grad(x, lo):
    """torch's ``x.clamp_min_(lo)`` under ``no_grad``: the value is clamped, the gradient
    passes through unchanged."""
    return jnp.maximum(x, jnp.asarray(lo, x.dtype))


@_clamp_min_no_grad.defjvp
def _clamp_min_no_grad_jvp(lo, primals, tangents):
    (x,), (t,) = primals, tangents
    return _clamp_min_no_grad(x, lo), t


def _sgn(z):
    """torch.sgn of a real tensor: -1, 0 or 1, and 0 at NaN."""
    return jnp.where(jnp.isnan(z), jnp.zeros((), z.dtype), jnp.sign(z))


def _norm_value(z, p):
    a = jnp.abs(z)
    if p == 2.0:
        return jnp.sqrt(jnp.sum(z * z, axis=-1))
    if p == 1.0:
        return jnp.sum(a, axis=-1)
    if math.isinf(p):
        return jnp.max(a, axis=-1)
    return jnp.sum(a**p, axis=-1) ** (1.0 / p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _norm(z, p):
    """The p-norm over the last axis (torch.linalg.vector_norm(z, p, -1)), p > 0."""
    return _norm_value(z, p)


@_norm.defjvp
def _norm_jvp(p, primals, tangents):
    # torch's norm_backward (torch/csrc/autograd/FunctionsManual.cpp), as d norm / d z
    (z,), (t,) = primals, tangents
    n = _norm_value(z, p)
    nk = n[..., None]
    zero = jnp.zeros((), z.dtype)
    a = jnp.abs(z)
    if p == 1.0:
        d = _sgn(z)
    elif p == 2.0:
        d = jnp.where(nk == 0, zero, z / jnp.where(nk == 0, jnp.ones_like(nk), nk))
    elif math.isinf(p):
        mask = ((a == nk) | jnp.isnan(a)).astype(z.dtype)
        d = _sgn(z) * (mask / jnp.sum(mask, axis=-1, keepdims=True))
    elif p < 1.0:
        scaled = _sgn(z) * jnp.where(z == 0, zero, a ** (p - 1.0))
        d = scaled * nk ** (1.0 - p)
    else:
        scaled = _sgn(z) * a ** (p - 1.0) if p < 2.0 else z * a ** (p - 2.0)
        safe = jnp.where(nk == 0, jnp.ones_like(nk), nk)
        d = scaled * jnp.where(nk == 0, zero, 1.0 / safe ** (p - 1.0))
    return n, jnp.sum(d * t, axis=-1)


def pairwise_distance(x1, x2, p=2.0, eps=PAIRWISE_EPS):
    """torch.pairwise_distance: ||x1 - x2 + eps||_p over the last axis."""
    return _norm(x1 - x2 + eps, float(p))


def cosine_similarity(x1, x2, eps=COSINE_SIMILARITY_EPS):
    """torch.cosine_similarity over the last axis (torch 2.13):
    sum((x1 / max(||x1||, eps)) * (x2 / max(||x2||, eps))), the clamp outside autograd."""
    n1 = _clamp_min_no_grad(_norm(x1, 2.0)[..., None], eps)
    n2 = _clamp_min_no_grad(_norm(x2, 2.0)[..., None], eps)
    return jnp.sum(_divide(x1, n1) * _divide(x2, n2), axis=-1)


def _divide(x, n):
    """x / n, n broadcast over x, as a true division. XLA rewrites a division by a broadcast
    into a multiplication by the reciprocal, which rounds differently: (3/5)^2 + (4/5)^2 is 1
    in torch but 1 + 2^-52 via the reciprocal, which moves an exact tie of the hinge. The
    barrier hides the broadcast from that rewrite."""
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(n, x.shape))


def cosine_distance(x1, x2):
    """1 - cosine_similarity(x1, x2): the distance named "cosine"."""
    return 1 - cosine_similarity(x1, x2)


DISTANCES = {"pairwise": pairwise_distance, "cosine": cosine_distance}


# ---------------------------------------------------------------------------------------------
# losses


def margin_ranking(input1, input2, target, *, margin=0.0):
    return Terms(_clamp_min0(-target * (input1 - input2) + margin))


def hinge_embedding(input, target, *, margin=1.0):
    zero = jnp.zeros((), input.dtype)
    hinge = jnp.where(target != 1, _clamp_min0(margin - input), zero)
    return Terms(hinge + jnp.where(target != -1, input, zero))


def cosine_embedding(input1, input2, target, *, margin=0.0):
    prod = jnp.sum(input1 * input2, axis=-1)
    mag1 = jnp.sum(input1 * input1, axis=-1) + COSINE_EMBEDDING_EPS
    mag2 = jnp.sum(input2 * input2, axis=-1) + COSINE_EMBEDDING_EPS
    cos = prod / jnp.sqrt(mag1 * mag2)
    zero = jnp.zeros((), cos.dtype)
    pos = jnp.where(target == 1, 1 - cos, zero)
    neg = jnp.where(target == -1, _clamp_min0(cos - margin), zero)
    return Terms(pos + neg)


def _triplet(dist, anchor, positive, negative, margin, swap):
    d_pos = dist(anchor, positive)
    d_neg = dist(anchor, negative)
    if swap:
        d_neg = _minimum(d_neg, dist(positive, negative))
    return Terms(_clamp_min0(margin + d_pos - d_neg))


def triplet_margin(anchor, positive, negative, *, margin=1.0, p=2.0, eps=PAIRWISE_EPS,
                   swap=False):
    def dist(x1, x2):
        return pairwise_distance(x1, x2, p, eps)

    return _triplet(dist, anchor, positive, negative, margin, swap)


def triplet_margin_with_distance(anchor, positive, negative, *, distance_function=None,
                                 margin=1.0, swap=False):
    if distance_function is None:
        dist = pairwise_distance
    elif isinstance(distance_function, str):
        dist = DISTANCES[distance_function]
    else:
        dist = checked_distance(distance_function, jnp.asarray)
    return _triplet(dist, anchor, positive, negative, margin, swap)
