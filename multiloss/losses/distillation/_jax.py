"""JAX implementations of the distillation losses (the torch twins: ``_torch.py``).

Each function takes student and teacher logits of any leading shape (..., V) and optional
labels (...,) and returns ``Terms``: the per-token loss (summed over the vocabulary, 0 where
the label is ``ignore_index``), with the non-ignored mask as the contract's ``weight`` and
``count``, so that "mean" divides by the number of tokens that count. The fused-linear forms
call these functions on chunks of rows and sum their terms."""

from __future__ import annotations

import jax.numpy as jnp
from jax.nn import log_softmax, softmax
from jax.scipy.special import logsumexp

from ...backends import Terms


def _masked(per_token, labels, ignore_index, multiply=False):
    """Terms of a per-token loss: 0 where labels == ignore_index. ``multiply``: the loss times
    the mask, as torchtune (a NaN or an infinity in an ignored token gives NaN); else the
    token is dropped, as TRL (by indexing) and Liger (an ignored row is not read)."""
    if labels is None:
        return Terms(per_token)
    keep = labels != ignore_index
    mask = keep.astype(per_token.dtype)
    # (per_token * 0 where ignored, not per_token * mask: XLA rewrites a product with a
    # converted boolean into a select, which would drop the NaN)
    loss = jnp.where(keep, per_token, per_token * 0 if multiply else 0.0)
    return Terms(loss, mask, keep)


def _kl_log_target(input, target):
    # torch's F.kl_div(input, target, reduction="none", log_target=True): exp(t) * (t - x)
    return jnp.exp(target) * (target - input)


def generalized_jsd(student_logits, teacher_logits, labels=None, *, beta=0.5, temperature=1.0,
                    ignore_index=-100):
    s = log_softmax(student_logits / temperature, axis=-1)
    t = log_softmax(teacher_logits / temperature, axis=-1)
    if beta == 0:
        jsd = _kl_log_target(s, t)
    elif beta == 1:
        jsd = _kl_log_target(t, s)
    else:
        b = jnp.asarray(beta, s.dtype)
        m = logsumexp(jnp.stack([s + jnp.log1p(-b), t + jnp.log(b)]), axis=0)
        jsd = b * _kl_log_target(m, t) + (1 - b) * _kl_log_target(m, s)
    return _masked(jnp.sum(jsd, axis=-1), labels, ignore_index)


def _forward(student_logits, teacher_logits):
    # torchtune's ForwardKLLoss: -sum_v p_t * log q_s, 0 where the student's logit is infinite
    p_t = softmax(teacher_logits, axis=-1)
    lq = log_softmax(student_logits, axis=-1)
    prod = jnp.where(jnp.isinf(student_logits), 0.0, p_t * lq)
    return -jnp.sum(prod, axis=-1)


def _reverse(student_logits, teacher_logits):
    # torchtune's ReverseKLLoss: -sum_v q_s (log p_t - log q_s), 0 where either logit is
    # infinite (each product masked, as torchtune does, so the gradient is its: NaN at -inf)
    q_s = softmax(student_logits, axis=-1)
    ls = log_softmax(student_logits, axis=-1)
    lt = log_softmax(teacher_logits, axis=-1)
    inf = jnp.isinf(student_logits) | jnp.isinf(teacher_logits)
    prod = jnp.where(inf, 0.0, q_s * lt) - jnp.where(inf, 0.0, q_s * ls)
    return -jnp.sum(prod, axis=-1)


def forward_kl(student_logits, teacher_logits, labels=None, *, ignore_index=-100):
    return _masked(_forward(student_logits, teacher_logits), labels, ignore_index, True)


def reverse_kl(student_logits, teacher_logits, labels=None, *, ignore_index=-100):
    return _masked(_reverse(student_logits, teacher_logits), labels, ignore_index, True)


def symmetric_kl(student_logits, teacher_logits, labels=None, *, sym_kd_ratio=0.5,
                 ignore_index=-100):
    r = sym_kd_ratio
    loss = r * _forward(student_logits, teacher_logits) + (1 - r) * _reverse(
        student_logits, teacher_logits)
    return _masked(loss, labels, ignore_index, True)


def tvd(student_logits, teacher_logits, labels=None, *, ignore_index=-100):
    d = softmax(student_logits, axis=-1) - softmax(teacher_logits, axis=-1)
    # |d| as sign(d) * d: torch.abs's gradient, 0 at d == 0 (jnp.abs's is 1 there)
    return _masked(0.5 * jnp.sum(jnp.sign(d) * d, axis=-1), labels, ignore_index)

from ._linear_jax import *  # noqa: E402, F401, F403  (the fused-linear forms: _linear_jax.py)
