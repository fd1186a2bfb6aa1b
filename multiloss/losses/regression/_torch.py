"""torch implementations of the regression losses: torch's own kernels. The ``weight`` of
mse/l1/huber is applied here with torch 2.13's semantics, so that older torch versions (whose
functions have no ``weight``) give the same numbers."""

from __future__ import annotations

import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import promote


def _weighted(kernel, input, target, reduction, weight, normalised, **kw):
    input, target = promote(input, target)
    if weight is None:
        loss = kernel(input, target, reduction=reduction or "none", **kw)
        return loss if reduction is not None else Terms(loss)
    w = weight.to(input.dtype).expand_as(input)
    loss = kernel(input, target, reduction="none", **kw) * w
    return Terms(loss, w if normalised else None)


def mse(input, target, *, reduction, weight=None):
    return _weighted(F.mse_loss, input, target, reduction, weight, normalised=True)


def l1(input, target, *, reduction, weight=None):
    return _weighted(F.l1_loss, input, target, reduction, weight, normalised=True)


def smooth_l1(input, target, *, reduction, beta=1.0):
    input, target = promote(input, target)
    loss = F.smooth_l1_loss(input, target, reduction=reduction or "none", beta=beta)
    return loss if reduction is not None else Terms(loss)


def huber(input, target, *, reduction, delta=1.0, weight=None):
    return _weighted(F.huber_loss, input, target, reduction, weight, normalised=False, delta=delta)


def poisson_nll(input, target, *, reduction, log_input=True, full=False, eps=1e-8):
    if not target.is_floating_point():
        target = target.to(input.dtype)  # torch would take log(t) of integers in float32
    input, target = promote(input, target)
    loss = F.poisson_nll_loss(input, target, log_input=log_input, full=full, eps=eps,
                              reduction=reduction or "none")
    return loss if reduction is not None else Terms(loss)


def gaussian_nll(input, target, var, *, reduction, full=False, eps=1e-6):
    input, target, var = promote(input, target, var)
    if var.ndim == 0:
        var = var.expand_as(input)  # torch takes a Python float here, not a 0-d tensor
    loss = F.gaussian_nll_loss(input, target, var, full=full, eps=eps,
                               reduction=reduction or "none")
    if reduction is None:
        loss = Terms(loss.expand_as(input) if loss.shape != input.shape else loss)
    return loss
