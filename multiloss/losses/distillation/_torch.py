"""torch implementations of the distillation losses (the JAX twins: ``_jax.py``).

Each function takes student and teacher logits of any leading shape (..., V) and optional
labels (...,) and returns ``Terms`` (the per-token loss, 0 where ignored, and the mask of the
tokens that count); ``reduction`` is not computed natively: the contract reduces the terms.
float16/bfloat16 logits are computed in float32 (torchtune's upcast; the JAX backend's rule)
and the per-token loss is rounded to their dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import promote

_LOW = (torch.float16, torch.bfloat16)


def _up(student_logits, teacher_logits, autocast=False):
    """The logits promoted to one dtype and float16/bfloat16 raised to float32, and the dtype
    of the result (None: as computed). ``autocast``: a loss whose reference is plain torch ops
    (TRL's, the TVD's) computes inside torch.autocast on the logits as they are, so that
    autocast's policy for those ops on that device (log_softmax in float32 on CPU, ...) gives
    the reference's dtype and numbers; torchtune's upcast is explicit, the same inside and
    outside autocast."""
    s, t = promote(student_logits, teacher_logits)
    if autocast and torch.is_autocast_enabled(s.device.type):
        return s, t, None
    dtype = s.dtype
    if dtype in _LOW:
        return s.float(), t.float(), dtype
    return s, t, dtype


def _masked(per_token, labels, ignore_index, dtype, multiply=False):
    """The twin of ``_jax._masked``: 0 where ignored (``multiply``: times the mask, as
    torchtune; else dropped, as TRL and Liger)."""
    dtype = per_token.dtype if dtype is None else dtype
    per_token = per_token.to(dtype)
    if labels is None:
        return Terms(per_token)
    keep = labels != ignore_index
    mask = keep.to(dtype)
    if multiply:
        return Terms(per_token * mask, mask, keep)
    return Terms(torch.where(keep, per_token, torch.zeros((), dtype=dtype, device=keep.device)),
                 mask, keep)


def _kl_log_target(input, target):
    # F.kl_div(input, target, reduction="none", log_target=True)
    return F.kl_div(input, target, reduction="none", log_target=True)


def generalized_jsd(student_logits, teacher_logits, labels=None, *, reduction=None, beta=0.5,
                    temperature=1.0, ignore_index=-100):
    x, y, dtype = _up(student_logits, teacher_logits, autocast=True)
    s = F.log_softmax(x / temperature, dim=-1)
    t = F.log_softmax(y / temperature, dim=-1)
    if beta == 0:
        jsd = _kl_log_target(s, t)
    elif beta == 1:
        jsd = _kl_log_target(t, s)
    else:
        b = torch.tensor(beta, dtype=s.dtype, device=s.device)
        m = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        jsd = b * _kl_log_target(m, t) + (1 - b) * _kl_log_target(m, s)
    return _masked(jsd.sum(-1), labels, ignore_index, dtype)


def _forward(x, y):
    # torchtune's ForwardKLLoss: -sum_v p_t * log q_s, 0 where the student's logit is infinite
    prod = F.softmax(y, dim=-1) * F.log_softmax(x, dim=-1)
    return -torch.masked_fill(prod, torch.isinf(x), 0).sum(-1)


def _reverse(x, y):
    # torchtune's ReverseKLLoss: -sum_v q_s (log p_t - log q_s), each product 0 where either
    # logit is infinite (so the gradient is torchtune's: NaN at a -inf student logit)
    q = F.softmax(x, dim=-1)
    inf = torch.isinf(x) | torch.isinf(y)
    prod = torch.masked_fill(q * F.log_softmax(y, dim=-1), inf, 0)
    prod = prod - torch.masked_fill(q * F.log_softmax(x, dim=-1), inf, 0)
    return -prod.sum(-1)


def forward_kl(student_logits, teacher_logits, labels=None, *, reduction=None,
               ignore_index=-100):
    x, y, dtype = _up(student_logits, teacher_logits)
    return _masked(_forward(x, y), labels, ignore_index, dtype, True)


def reverse_kl(student_logits, teacher_logits, labels=None, *, reduction=None,
               ignore_index=-100):
    x, y, dtype = _up(student_logits, teacher_logits)
    return _masked(_reverse(x, y), labels, ignore_index, dtype, True)


def symmetric_kl(student_logits, teacher_logits, labels=None, *, reduction=None,
                 sym_kd_ratio=0.5, ignore_index=-100):
    x, y, dtype = _up(student_logits, teacher_logits)
    r = sym_kd_ratio
    return _masked(r * _forward(x, y) + (1 - r) * _reverse(x, y), labels, ignore_index, dtype,
                   True)


def tvd(student_logits, teacher_logits, labels=None, *, reduction=None, ignore_index=-100):
    x, y, dtype = _up(student_logits, teacher_logits, autocast=True)
    d = F.softmax(x, dim=-1) - F.softmax(y, dim=-1)
    return _masked(0.5 * d.abs().sum(-1), labels, ignore_index, dtype)

from ._linear_torch import *  # noqa: E402, F401, F403  (the fused-linear forms: _linear_torch.py)
