"""torch implementations of arcface and cosface (see the specs in ``__init__.py``): the
operations of pytorch-metric-learning's ArcFaceLoss and CosFaceLoss, written with torch's own
functions (pytorch-metric-learning itself is only the parity reference). Each returns the
unreduced ``Terms``; ``multiloss.backends._torch`` reduces them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import one_hot, promote
from . import NORMALIZE_EPS


def _margin_loss(embeddings, labels, class_weight, scale, modify):
    embeddings, class_weight = promote(embeddings, class_weight)
    labels = labels.long()
    e = F.normalize(embeddings, p=2, dim=1, eps=NORMALIZE_EPS)
    w = F.normalize(class_weight.t(), p=2, dim=1, eps=NORMALIZE_EPS)  # (C, D): one row a class
    cos = torch.matmul(e, w.transpose(-1, -2))
    mask = one_hot(labels, class_weight.shape[1], cos.dtype)
    target = cos.gather(1, labels[:, None]).squeeze(1)
    diff = (modify(target) - target).unsqueeze(1)
    logits = (cos + mask * diff) * scale
    return Terms(F.cross_entropy(logits, labels, reduction="none"))


def arcface(embeddings, labels, class_weight, *, reduction, margin=28.6, scale=64.0):
    # reduction: the backend reduces the Terms (the mean of the per-sample losses)
    m = np.radians(margin)
    m_f = float(m)
    bound = float(np.deg2rad(180) - m)
    fallback = float(m * np.sin(m))

    def modify(c):
        angles = torch.acos(torch.clamp(c, -1, 1))
        return torch.where(angles <= bound, torch.cos(angles + m_f), torch.cos(angles) - fallback)

    return _margin_loss(embeddings, labels, class_weight, float(scale), modify)


def cosface(embeddings, labels, class_weight, *, reduction, margin=0.35, scale=64.0):
    m = float(margin)
    return _margin_loss(embeddings, labels, class_weight, float(scale), lambda c: c - m)


def contrastive(embeddings, labels, *, reduction, pos_margin=0.0, neg_margin=1.0):
    # reduction: the backend reduces the Terms (see the spec: AvgNonZeroReducer per sub-loss)
    u = F.normalize(embeddings, p=2, dim=1, eps=NORMALIZE_EPS)
    if u.dtype in (torch.float16, torch.bfloat16):
        # torch 2.13 has no CPU cdist for these: the norm of the differences (the same value;
        # norm_backward's gradient is 0 at a zero difference, as cdist's)
        d = torch.linalg.vector_norm(u[:, None, :] - u[None, :, :], dim=-1)
    else:
        d = torch.cdist(u, u, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    neg = ~same
    zero = torch.zeros((), dtype=d.dtype, device=d.device)
    loss = torch.where(pos, F.relu(d - pos_margin), torch.where(neg, F.relu(neg_margin - d),
                                                                  zero))
    nz = (loss.detach() > 0) | torch.isnan(loss.detach())  # a NaN counts: NaN is not hidden
    n_pos = (pos & nz).sum()
    n_neg = (neg & nz).sum()
    r = pos / n_pos.clamp_min(1).to(d.dtype) + neg / n_neg.clamp_min(1).to(d.dtype)
    k = ((n_pos > 0).to(d.dtype) + (n_neg > 0).to(d.dtype)).clamp_min(1)
    return Terms(loss, weight=nz * r / k, count=(pos | neg).to(d.dtype), scale=r)


def _pml_logsumexp_add_one(x, keep):
    """pytorch-metric-learning's lmu.logsumexp(x, keep_mask, add_one=True, dim=1)."""
    x = x.masked_fill(~keep, torch.finfo(x.dtype).min)
    x = torch.cat([x, torch.zeros((x.shape[0], 1), dtype=x.dtype, device=x.device)], dim=1)
    out = torch.logsumexp(x, dim=1)
    return out.masked_fill(~keep.any(dim=1), 0)


def multi_similarity(embeddings, labels, *, reduction, alpha=2.0, beta=50.0, base=0.5):
    e = F.normalize(embeddings, p=2, dim=1)
    mat = torch.matmul(e, e.t())
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    neg = ~same
    pos_loss = (1.0 / alpha) * _pml_logsumexp_add_one(alpha * (base - mat), pos)
    neg_loss = (1.0 / beta) * _pml_logsumexp_add_one(beta * (mat - base), neg)
    return Terms(pos_loss + neg_loss)
