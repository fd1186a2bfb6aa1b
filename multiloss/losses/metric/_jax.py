"""JAX implementations of arcface and cosface (see the specs in ``__init__.py``).

The operations are pytorch-metric-learning's, one by one, with torch 2.13's autograd at every
non-smooth point rather than JAX's defaults:

- ``F.normalize``: ``x / clamp_min(||x||, eps)``; the norm's gradient is 0 at a zero vector
  (torch's ``norm_backward``, where JAX's sqrt gives 0 * inf = NaN), clamp_min passes the
  gradient where ``||x|| >= eps`` (JAX's maximum would split it at a tie);
- ``clamp(c, -1, 1)`` passes the gradient on [-1, 1], the ends included (jnp.clip would halve
  it at +-1), and none beyond;
- the division by the norm is a true division (XLA rewrites a division by a broadcast into a
  multiplication by the reciprocal, which rounds differently);
- the target logit is ``cos + onehot * (t - cos)``, not ``t``: the same rounding, and a NaN
  of one row's target spreads over that row only, as in torch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ...backends import Terms
from . import NORMALIZE_EPS


def _true_div(x, d):
    """x / d, d broadcast to x's shape, as a true division: XLA rewrites a division by a
    broadcast into a multiplication by the reciprocal, which rounds differently; the barrier
    hides the broadcast from that rewrite."""
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(d, x.shape))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _normalize(x, axis):
    """torch.nn.functional.normalize(x, p=2, dim=axis), eps 1e-12: x / max(||x||, eps)."""
    n = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    d = jnp.maximum(n, jnp.asarray(NORMALIZE_EPS, x.dtype))  # NaN stays NaN
    return _true_div(x, d)


@_normalize.defjvp
def _normalize_jvp(axis, primals, tangents):
    # linear in dx; its transpose is torch's autograd of ``x / norm(x).clamp_min(eps)
    # .expand_as(x)``, operation by operation (the gradient of a normalisation cancels where g
    # is nearly parallel to x: the same roundings keep the two backends together there):
    #   DivBackward: g / d, and -g * ((x / d) / d) summed over the expanded axis;
    #   clamp_min: passes where ||x|| >= eps; norm_backward: x * (s / ||x||), 0 at ||x|| = 0
    (x,), (dx,) = primals, tangents
    y = _normalize(x, axis)  # itself: its derivatives (second order) are these rules again
    n = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    d = jnp.maximum(n, jnp.asarray(NORMALIZE_EPS, x.dtype))
    zero = jnp.zeros((), x.dtype)
    s = jnp.sum(x * dx, axis=axis, keepdims=True)
    s = jnp.where(n >= NORMALIZE_EPS, s, zero)
    s = jnp.where(n == 0, zero, s / jnp.where(n == 0, jnp.ones_like(n), n))
    return y, _true_div(dx, d) - _true_div(y, d) * jnp.broadcast_to(s, x.shape)


@jax.custom_jvp
def _clamp_unit(x):
    """torch.clamp(x, -1, 1): NaN stays NaN; the gradient passes on [-1, 1], ends included."""
    return jnp.minimum(jnp.maximum(x, -1.0), 1.0)


_clamp_unit.defjvps(
    lambda t, ans, x: jnp.where((x >= -1.0) & (x <= 1.0), t, jnp.zeros_like(t)))


def _cosines(embeddings, labels, class_weight):
    """(cosines (N, C), target cosines (N,), one-hot mask (N, C), labels in range (N,))."""
    dtype = jnp.result_type(embeddings, class_weight)
    e = _normalize(embeddings.astype(dtype), 1)
    w = _normalize(class_weight.astype(dtype), 0)
    cos = jnp.matmul(e, w, precision=jax.lax.Precision.HIGHEST)
    n_classes = class_weight.shape[1]
    in_range = (labels >= 0) & (labels < n_classes)
    safe = jnp.where(in_range, labels, 0)
    mask = (jnp.arange(n_classes) == safe[:, None]).astype(dtype)
    target = jnp.take_along_axis(cos, safe[:, None], axis=1)[:, 0]
    return cos, target, mask, safe, in_range


def _margin_loss(embeddings, labels, class_weight, scale, modify):
    cos, target, mask, safe, in_range = _cosines(embeddings, labels, class_weight)
    diff = modify(target) - target
    logits = (cos + mask * diff[:, None]) * scale
    logp = jax.nn.log_softmax(logits, axis=1)
    loss = -jnp.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    # NaN (with a NaN gradient) where a label is out of range: only reachable under a trace,
    # as concrete labels are checked before the call
    return Terms(loss * jnp.where(in_range, 1.0, jnp.nan).astype(loss.dtype))


def arcface(embeddings, labels, class_weight, *, margin=28.6, scale=64.0):
    m = np.radians(margin)  # NumPy's, as pytorch-metric-learning (the same double)
    # Python floats: weakly typed, so that float32 inputs stay float32 (torch's scalars)
    m_f = float(m)
    bound = float(np.deg2rad(180) - m)
    fallback = float(m * np.sin(m))

    def modify(c):
        angles = jnp.arccos(_clamp_unit(c))
        return jnp.where(angles <= bound, jnp.cos(angles + m_f), jnp.cos(angles) - fallback)

    return _margin_loss(embeddings, labels, class_weight, float(scale), modify)


def cosface(embeddings, labels, class_weight, *, margin=0.35, scale=64.0):
    m = float(margin)
    return _margin_loss(embeddings, labels, class_weight, float(scale), lambda c: c - m)


# ---------------------------------------------------------------------------------------------
# contrastive (pytorch-metric-learning's ContrastiveLoss, see the spec)


@jax.custom_jvp
def _pair_distances(u):
    """torch.cdist(u, u, p=2) by the direct difference: d_ij = sqrt(sum_k (u_ik - u_jk)^2),
    with cdist's gradient, 0 where d_ij = 0 (sqrt's would be inf there)."""
    diff = u[:, None, :] - u[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


@_pair_distances.defjvp
def _pair_distances_jvp(primals, tangents):
    (u,), (t,) = primals, tangents
    diff = u[:, None, :] - u[None, :, :]
    # itself, not sqrt: the rule is differentiated again for second order, and sqrt's
    # derivative at d = 0 (the diagonal) is inf (NaN in jacrev(jacrev))
    d = _pair_distances(u)
    dt = t[:, None, :] - t[None, :, :]
    safe = jnp.where(d == 0, jnp.ones_like(d), d)
    return d, jnp.where(d == 0, jnp.zeros_like(d), jnp.sum(diff * dt, axis=-1) / safe)


@jax.custom_jvp
def _relu(x):
    """torch.relu with torch's threshold_backward: gradient 0 where x <= 0, passed elsewhere
    (NaN included)."""
    return jnp.maximum(x, jnp.zeros((), x.dtype))


_relu.defjvps(lambda t, ans, x: jnp.where(x <= 0, jnp.zeros_like(t), t))


def contrastive(embeddings, labels, *, pos_margin=0.0, neg_margin=1.0):
    u = _normalize(embeddings, 1)
    d = _pair_distances(u)
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(n, dtype=bool)
    neg = ~same
    zero = jnp.zeros((), d.dtype)
    loss = jnp.where(pos, _relu(d - pos_margin), jnp.where(neg, _relu(neg_margin - d), zero))
    # AvgNonZeroReducer per sub-loss, summed (multiloss.losses.metric.contrastive_weights)
    sg = jax.lax.stop_gradient(loss)
    nz = (sg > 0) | jnp.isnan(sg)  # a NaN pair loss counts: NaN is not hidden
    n_pos = jnp.sum(pos & nz)
    n_neg = jnp.sum(neg & nz)
    one = jnp.ones((), d.dtype)
    r = (pos * (one / jnp.maximum(n_pos, 1).astype(d.dtype))
         + neg * (one / jnp.maximum(n_neg, 1).astype(d.dtype)))
    k = jnp.maximum((n_pos > 0).astype(d.dtype) + (n_neg > 0).astype(d.dtype), one)
    return Terms(loss, weight=nz * r / k, count=(pos | neg).astype(d.dtype), scale=r)


# ---------------------------------------------------------------------------------------------
# multi_similarity (pytorch-metric-learning's MultiSimilarityLoss, see the spec)


def _pml_logsumexp_add_one(x, keep):
    """pytorch-metric-learning's lmu.logsumexp(x, keep_mask, add_one=True, dim=1): masked
    entries at finfo.min, a 0 appended to each row, 0 for a row without any kept entry."""
    dtype = x.dtype
    masked = jnp.where(keep, x, jnp.asarray(jnp.finfo(dtype).min, dtype))
    masked = jnp.concatenate([masked, jnp.zeros((x.shape[0], 1), dtype)], axis=1)
    out = jax.nn.logsumexp(masked, axis=1)
    return jnp.where(jnp.any(keep, axis=1), out, jnp.zeros((), dtype))


def multi_similarity(embeddings, labels, *, alpha=2.0, beta=50.0, base=0.5):
    e = _normalize(embeddings, 1)
    mat = jnp.matmul(e, e.T, precision=jax.lax.Precision.HIGHEST)
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(n, dtype=bool)
    neg = ~same
    pos_loss = (1.0 / alpha) * _pml_logsumexp_add_one(alpha * (base - mat), pos)
    neg_loss = (1.0 / beta) * _pml_logsumexp_add_one(beta * (mat - base), neg)
    return Terms(pos_loss + neg_loss)
