"""JAX implementations of ntxent and supcon (see the specs in ``__init__.py``).

ntxent follows optax.ntxent's operations one by one (optax's cosine_similarity with
``epsilon=finfo.eps``, the row max under stop_gradient, the masks as -inf), returning each
anchor's loss; supcon follows pytorch-metric-learning's SupConLoss with torch's autograd at its
non-smooth points (``F.normalize``'s backward, from ``multiloss.losses.metric._jax``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ...backends import Terms
from ..metric._jax import _normalize


def _masks(labels):
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    eye = jnp.eye(n, dtype=bool)
    return same & ~eye, ~same  # positives (i != j), negatives


def _cosine_matrix(embeddings):
    """optax.losses.cosine_similarity(e[None, :, :], e[:, None, :], epsilon=finfo.eps)."""
    eps = jnp.finfo(embeddings.dtype).eps
    norm2 = jnp.sum(jnp.square(embeddings), axis=-1, keepdims=True)
    unit = embeddings / jnp.sqrt(jnp.clip(norm2, eps))
    return jnp.sum(unit[None, :, :] * unit[:, None, :], axis=-1)


def ntxent(embeddings, labels, *, temperature=0.07):
    xcs = _cosine_matrix(embeddings) / temperature
    matches, diffs = _masks(labels)
    neg_inf = jnp.asarray(-jnp.inf, xcs.dtype)
    xcs_diffs = jnp.where(diffs, xcs, neg_inf)
    xcs_matches = jnp.where(matches, xcs, neg_inf)
    xcs_max = jnp.max(jnp.concatenate((xcs_diffs, xcs_matches), axis=-1), axis=1,
                      keepdims=True, initial=-jnp.inf)
    xcs_max = jax.lax.stop_gradient(xcs_max)
    numer = xcs_matches - xcs_max
    denom = jnp.sum(jnp.exp(xcs_diffs - xcs_max), axis=1, keepdims=True) + jnp.exp(numer)
    # optax takes the log of every entry's denominator, the masked ones included: where every
    # negative's exp underflows (float32, temperature < 0.023) a masked entry's is 0, and the
    # zero cotangent of its -inf becomes 0 / 0 = NaN in the gradient; 1 there changes no value
    one = jnp.ones((), xcs.dtype)
    log_softm = numer - jnp.log(jnp.where(matches, denom, one))
    zero = jnp.zeros((), xcs.dtype)
    loss = -jnp.sum(jnp.where(matches, log_softm, zero), axis=1)
    return Terms(loss, weight=jnp.sum(matches, axis=1).astype(loss.dtype))


def supcon(embeddings, labels, *, temperature=0.1):
    e = _normalize(embeddings, 1)
    mat = jnp.matmul(e, e.T, precision=jax.lax.Precision.HIGHEST)
    pos, neg = _masks(labels)
    dtype = mat.dtype
    mat = mat / temperature
    mat = mat - jax.lax.stop_gradient(jnp.max(mat, axis=1, keepdims=True, initial=-jnp.inf))
    keep = pos | neg
    # pytorch-metric-learning's lmu.logsumexp: masked entries at finfo.min, a row without
    # any kept entry gives 0
    masked = jnp.where(keep, mat, jnp.asarray(jnp.finfo(dtype).min, dtype))
    lse = jax.nn.logsumexp(masked, axis=1, keepdims=True) if mat.shape[1] else \
        jnp.zeros(mat.shape[:1] + (1,), dtype)
    lse = jnp.where(jnp.any(keep, axis=1, keepdims=True), lse, jnp.zeros((), dtype))
    log_prob = mat - lse
    posf = pos.astype(dtype)
    loss = -jnp.sum(posf * log_prob, axis=1) / (
        jnp.sum(posf, axis=1) + jnp.asarray(jnp.finfo(dtype).tiny, dtype))
    # no positive pair or no negative pair in the batch: pytorch-metric-learning's zero loss
    ok = jnp.any(pos) & jnp.any(neg)
    loss = jnp.where(ok, loss, jnp.zeros((), dtype))
    # AvgNonZeroReducer's filter, l > 0; a NaN loss counts too, so that NaN is not hidden by
    # the nothing-counts rule (pytorch-metric-learning returns NaN there as well)
    counts = (loss > 0) | jnp.isnan(loss)
    return Terms(loss, weight=jax.lax.stop_gradient(counts.astype(dtype)))
