"""torch implementations of arcface and cosface (see the specs in ``__init__.py``): the
operations of pytorch-metric-learning's ArcFaceLoss and CosFaceLoss, written with torch's own
functions (pytorch-metric-learning itself is only the parity reference). Each returns the
unreduced ``Terms``; ``multiloss.backends._torch`` reduces them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import promote
from . import NORMALIZE_EPS


def _margin_loss(embeddings, labels, class_weight, scale, modify):
    embeddings, class_weight = promote(embeddings, class_weight)
    labels = labels.long()
    e = F.normalize(embeddings, p=2, dim=1, eps=NORMALIZE_EPS)
    w = F.normalize(class_weight.t(), p=2, dim=1, eps=NORMALIZE_EPS)  # (C, D): one row a class
    cos = torch.matmul(e, w.transpose(-1, -2))
    mask = F.one_hot(labels, class_weight.shape[1]).to(cos.dtype)
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
