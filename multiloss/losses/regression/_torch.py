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
