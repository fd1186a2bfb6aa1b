"""torch implementations of ntxent and supcon (see the specs in ``__init__.py``): optax.ntxent's
operations written with torch, and pytorch-metric-learning's SupConLoss's operations (the
library itself is only the parity reference). Each returns the unreduced ``Terms``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms


def _masks(labels):
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _cosine_matrix(embeddings):
    eps = torch.finfo(embeddings.dtype).eps
    norm2 = torch.square(embeddings).sum(dim=-1, keepdim=True)
    unit = embeddings / torch.sqrt(torch.clamp(norm2, min=eps))
    return (unit[None, :, :] * unit[:, None, :]).sum(dim=-1)


def _row_max(x):
    if x.shape[1] == 0:
        return torch.full(x.shape[:1] + (1,), float("-inf"), dtype=x.dtype, device=x.device)
    return x.max(dim=1, keepdim=True).values


def ntxent(embeddings, labels, *, reduction, temperature=0.07):
    xcs = _cosine_matrix(embeddings) / temperature
    matches, diffs = _masks(labels)
    neg_inf = torch.full((), float("-inf"), dtype=xcs.dtype, device=xcs.device)
    xcs_diffs = torch.where(diffs, xcs, neg_inf)
    xcs_matches = torch.where(matches, xcs, neg_inf)
    xcs_max = _row_max(torch.cat((xcs_diffs, xcs_matches), dim=-1)).detach()
    numer = xcs_matches - xcs_max
    denom = torch.exp(xcs_diffs - xcs_max).sum(dim=1, keepdim=True) + torch.exp(numer)
    # 1 in the masked entries' denominators: no value changes, and no 0 / 0 in the gradient
    # where every negative's exp underflows (see _jax.py)
    one = torch.ones((), dtype=xcs.dtype, device=xcs.device)
    log_softm = numer - torch.log(torch.where(matches, denom, one))
    zero = torch.zeros((), dtype=xcs.dtype, device=xcs.device)
    loss = -torch.where(matches, log_softm, zero).sum(dim=1)
    return Terms(loss, weight=matches.sum(dim=1).to(loss.dtype))


def supcon(embeddings, labels, *, reduction, temperature=0.1):
    e = F.normalize(embeddings, p=2, dim=1)
    mat = torch.matmul(e, e.t())
    pos, neg = _masks(labels)
    dtype = mat.dtype
    mat = mat / temperature
    mat = mat - _row_max(mat).detach()
    keep = pos | neg
    masked = mat.masked_fill(~keep, torch.finfo(dtype).min)
    lse = torch.logsumexp(masked, dim=1, keepdim=True)
    lse = lse.masked_fill(~keep.any(dim=1, keepdim=True), 0)
    log_prob = mat - lse
    posf = pos.to(dtype)
    loss = -(posf * log_prob).sum(dim=1) / (posf.sum(dim=1) + torch.finfo(dtype).tiny)
    # pytorch-metric-learning's zero loss where the batch has no positive or no negative pair
    # (a select, not a branch on the values: vmap and torch.compile's fullgraph trace it)
    loss = torch.where(pos.any() & neg.any(), loss, (embeddings * 0).sum(dim=1).to(loss.dtype))
    counts = (loss > 0) | torch.isnan(loss)  # a NaN loss counts: NaN is not hidden
    return Terms(loss, weight=counts.to(dtype).detach())
