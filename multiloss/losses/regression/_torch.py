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


def _gaussian_nll_loss(input, target, var, full, eps, reduction):
    """F.gaussian_nll_loss (torch 2.13) step for step, without its ``if torch.any(var < 0)``:
    a branch on the values, which torch.func's vmap cannot take and torch.compile breaks the
    graph on. multiloss checks the variance's values itself (where they are concrete)."""
    if var.size() != input.size() and input.size()[:-1] == var.size():
        var = torch.unsqueeze(var, -1)  # the homoscedastic case of torch's function
    var = var.clone()
    with torch.no_grad():  # torch's clamp: the gradient passes through it unchanged
        var.clamp_(min=eps)
    loss = 0.5 * (torch.log(var) + (input - target) ** 2 / var)
    if full:
        loss += 0.5 * math.log(2 * math.pi)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def gaussian_nll(input, target, var, *, reduction, full=False, eps=1e-6):
    input, target, var = promote(input, target, var)
    if var.ndim == 0:
        var = var.expand_as(input)  # torch takes a Python float here, not a 0-d tensor
    loss = _gaussian_nll_loss(input, target, var, full, eps, reduction or "none")
    if reduction is None:
        loss = Terms(loss.expand_as(input) if loss.shape != input.shape else loss)
    return loss


# ---------------------------------------------------------------------------------------------
# log_cosh, quantile, charbonnier, mape, msle, poisson (see the specs in ``__init__.py``):
# written in torch ops with the reference's derivatives (Keras-on-JAX's where they differ from
# torch's own: abs at 0).

import math  # noqa: E402

import torch  # noqa: E402

_KERAS_EPSILON = 1e-7


def _as_input_dtype(target, input):
    return target if target.dtype == input.dtype else target.to(input.dtype)


def log_cosh(input, target, *, reduction):
    e = input - target
    return Terms(torch.logaddexp(e, -e) - math.log(2.0))


def quantile(input, target, *, reduction, quantiles=0.5):
    if isinstance(quantiles, tuple):
        q = torch.tensor(quantiles, dtype=input.dtype, device=input.device)
        qm1 = torch.tensor([qi - 1 for qi in quantiles], dtype=input.dtype, device=input.device)
        e = target.unsqueeze(-1) - input
    else:
        q, qm1 = quantiles, quantiles - 1
        e = target - input
    return Terms(torch.maximum(qm1 * e, q * e))


def charbonnier(input, target, *, reduction, eps=1.0):
    d = input / eps - target / eps
    sq = d**2
    small = sq < 1.0
    ss = torch.where(small, sq, 0.0)
    loss = torch.where(small, ss / ((ss + 1.0).sqrt() + 1.0), (sq + 1.0).sqrt() - 1.0)
    return Terms(eps * loss)


def _jax_abs(z):
    """|z| with JAX's derivative: +1 where z >= 0 (at 0 too), -1 elsewhere (NaN included)."""
    return torch.where(z >= 0, z, -z)


def mape(input, target, *, reduction):
    t = _as_input_dtype(target, input)
    eps = torch.tensor(_KERAS_EPSILON, dtype=input.dtype, device=input.device)
    return Terms(100.0 * _jax_abs((t - input) / torch.maximum(_jax_abs(t), eps)))


def msle(input, target, *, reduction):
    t = _as_input_dtype(target, input)
    eps = torch.tensor(_KERAS_EPSILON, dtype=input.dtype, device=input.device)
    first = torch.log(torch.maximum(input, eps) + 1.0)
    second = torch.log(torch.maximum(t, eps) + 1.0)
    return Terms(torch.square(first - second))


def poisson(input, target, *, reduction):
    t = _as_input_dtype(target, input)
    return Terms(input - t * torch.log(input + _KERAS_EPSILON))
