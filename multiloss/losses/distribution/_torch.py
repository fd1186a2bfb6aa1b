"""torch implementation of kl_div: torch's own kernel."""

from __future__ import annotations

import torch.nn.functional as F

from ...backends import Terms


def kl_div(input, target, *, reduction, log_target=False):
    if reduction in (None, "mean"):  # "mean": reduced by the contract (torch would warn per call)
        return Terms(F.kl_div(input, target, reduction="none", log_target=log_target))
    return F.kl_div(input, target, reduction=reduction, log_target=log_target)


# ---------------------------------------------------------------------------------------------
# generalized_kl (optax's formula), js_divergence (kornia's): see the specs in ``__init__.py``

import torch  # noqa: E402


def _sum(x, ax):
    return x.sum(dim=ax) if ax else x


def generalized_kl(input, target, *, reduction, axis=-1):
    from . import reduced_axes

    ax = reduced_axes(input.ndim, axis)
    kl = _sum(target * (torch.where(target == 0, 0.0, torch.log(target)) - input), ax)
    return Terms(kl + _sum(torch.exp(input) - target, ax))


def _kl_masked(p, q, ax):
    empty = (p == 0) & (q >= 0) & torch.isfinite(q)
    p = p.masked_fill(empty, 1.0)
    q = q.masked_fill(empty, 1.0)
    return _sum(F.kl_div(q.log(), p, reduction="none"), ax)


def js_divergence(input, target, *, reduction, axis=-1):
    from . import reduced_axes

    ax = reduced_axes(input.ndim, axis)
    dtype = input.dtype
    if dtype in (torch.float16, torch.bfloat16):
        # kornia's: float16/bfloat16 evaluated in float32 (the halved mixture underflows
        # otherwise), the result in the input's dtype; so autocast, which computes F.kl_div in
        # float32 in any case, changes nothing, as it changes nothing in kornia's
        input, target = input.float(), target.float()
    m = 0.5 * (target + input)
    return Terms((0.5 * _kl_masked(target, m, ax) + 0.5 * _kl_masked(input, m, ax)).to(dtype))
