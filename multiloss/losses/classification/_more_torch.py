"""torch implementations of the classification extras (specs in ``_more_spec.py``). Each
returns the unreduced ``Terms`` (``reduction`` is accepted and not used: the contract's
``multiloss.backends._torch.reduce`` reduces them).

Non-smooth points follow the references' autodiff: ``torch.amax`` and ``torch.maximum``
split the gradient evenly at a tie, as ``jnp.max`` and ``jnp.maximum`` do in optax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import one_hot, promote

__all__ = [
    "focal",
    "generalized_cross_entropy",
    "multiclass_hinge",
    "multiclass_perceptron",
    "multiclass_sparsemax",
    "perceptron",
    "poly1_cross_entropy",
    "ranking_softmax",
    "softmax_focal",
    "sparsemax",
]

def _nan_where_invalid(loss, ok):
    one = torch.ones((), dtype=loss.dtype, device=loss.device)
    return loss * torch.where(ok, one, torch.full_like(one, float("nan")))


def _one_hot(target, n_classes, dtype):
    ok = (target >= 0) & (target < n_classes)
    safe = torch.where(ok, target, torch.zeros_like(target)).long()
    return one_hot(safe, n_classes, dtype), ok, safe


# ---------------------------------------------------------------------------------------------
# focal losses


def focal(input, target, *, reduction=None, alpha=0.25, gamma=2.0):
    x, t = promote(input, target)
    # torchvision.ops.sigmoid_focal_loss
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return Terms(loss)


def softmax_focal(input, target, *, reduction=None, alpha=None, gamma=2.0, weight=None,
                  ignore_index=-100):
    n_classes = input.shape[1]
    valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target))
    ok = (valid & (t >= 0) & (t < n_classes)) | ~valid
    t = torch.where(ok, t, torch.zeros_like(t)).long()
    x = input.masked_fill(~valid.unsqueeze(1), 0.0)
    logp_t = x.log_softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
    base = 1.0 - logp_t.exp()
    saturated = base == 0
    fw = torch.where(saturated, base.detach().pow(gamma), base.masked_fill(saturated, 1.0).pow(gamma))
    loss = -fw * logp_t.masked_fill(~valid, 0.0)
    if alpha is not None:
        alpha = alpha.to(input.dtype)
        if alpha.ndim == 0:
            alpha_t = torch.where(t == 0, 1 - alpha, alpha)
        else:
            alpha_t = alpha[t]
        loss = alpha_t * loss
    if weight is not None:
        loss = weight.to(input.dtype)[t] * loss
    loss = loss.masked_fill(~valid, 0.0)
    return Terms(_nan_where_invalid(loss, ok), valid.to(input.dtype), valid)


# ---------------------------------------------------------------------------------------------
# cross-entropy variants


def poly1_cross_entropy(input, target, *, reduction=None, epsilon=2.0):
    ok = None
    if target.is_floating_point():
        input, labels = promote(input, target)
    else:
        labels, ok, _ = _one_hot(target, input.shape[-1], input.dtype)
    p = torch.softmax(input, dim=-1)
    one_minus_pt = (labels * (1 - p)).sum(-1)
    ce = -(labels * torch.log_softmax(input, dim=-1)).sum(-1)
    loss = ce + epsilon * one_minus_pt
    return Terms(loss if ok is None else _nan_where_invalid(loss, ok))


def generalized_cross_entropy(input, target, *, reduction=None, q=0.7):
    axis = 0 if input.ndim == 1 else 1
    n_classes = input.shape[axis]
    ok = (target >= 0) & (target < n_classes)
    t = torch.where(ok, target, torch.zeros_like(target)).long().unsqueeze(axis)
    logp_t = torch.log_softmax(input, dim=axis).gather(axis, t).squeeze(axis)
    loss = -torch.expm1(q * logp_t) / q
    return Terms(_nan_where_invalid(loss, ok))


# ---------------------------------------------------------------------------------------------
# optax's margin, perceptron and sparsemax losses


def multiclass_hinge(input, target, *, reduction=None):
    onehot, ok, _ = _one_hot(target, input.shape[-1], input.dtype)
    loss = torch.amax(input + 1.0 - onehot, dim=-1) - (input * onehot).sum(-1)
    return Terms(_nan_where_invalid(loss, ok))


def multiclass_perceptron(input, target, *, reduction=None):
    onehot, ok, _ = _one_hot(target, input.shape[-1], input.dtype)
    loss = torch.amax(input, dim=-1) - (input * onehot).sum(-1)
    return Terms(_nan_where_invalid(loss, ok))


def perceptron(input, target, *, reduction=None):
    if not target.is_floating_point():
        target = target.to(input.dtype)
    x, t = promote(input, target)
    z = -x * t
    return Terms(torch.maximum(torch.zeros_like(z), z))


def _sparse_plus(z):
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    return torch.where(z <= -1.0, zero, torch.where(z >= 1.0, z, (z + 1.0) ** 2 / 4))


def sparsemax(input, target, *, reduction=None):
    x = input
    if target.is_floating_point():
        x, target = promote(input, target)
    return Terms(_sparse_plus(torch.where(target != 0, -x, x)))


def projection_simplex(s):
    """Each row (last axis) projected onto the probability simplex: the arithmetic of
    optax.projections.projection_simplex."""
    n = s.shape[-1]
    u = torch.sort(s, dim=-1, descending=True).values
    cumsum_u = torch.cumsum(u, dim=-1)
    ind = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    cond = 1 / ind + (u - cumsum_u / ind) > 0
    idx = torch.count_nonzero(cond, dim=-1).unsqueeze(-1)
    c = torch.gather(cumsum_u, -1, (idx - 1).clamp_min(0))
    idx = idx.to(s.dtype)
    return torch.relu(1 / idx + (s - c / idx))


def multiclass_sparsemax(input, target, *, reduction=None):
    onehot, ok, safe = _one_hot(target, input.shape[-1], input.dtype)
    with torch.no_grad():  # gradient sparsemax(s) - onehot (see _more_jax.py)
        p = projection_simplex(input)
    s_y = torch.gather(input, -1, safe.unsqueeze(-1))
    zero = torch.zeros((), dtype=input.dtype, device=input.device)
    scores = torch.where(onehot != 0, zero, input - s_y)
    loss = (p * torch.where(p != 0, scores, zero)).sum(-1) + 0.5 * (1.0 - (p * p).sum(-1))
    return Terms(_nan_where_invalid(loss, ok))


def ranking_softmax(input, target, *, reduction=None):
    if not target.is_floating_point():
        target = target.to(input.dtype)
    x, labels = promote(input, target)
    return Terms(-(labels * torch.log_softmax(x, dim=-1)).sum(-1))
