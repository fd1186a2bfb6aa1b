"""torch implementations of the ranking losses (see the specs in ``__init__.py``): torch's own
functions, with torch's reduction where it suffices."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms
from . import checked_distance


def _out(loss_fn, reduction):
    """torch's reduction where asked for (``reduction`` given), else the unreduced Terms."""
    if reduction is None:
        return Terms(loss_fn("none"))
    return loss_fn(reduction)


def margin_ranking(input1, input2, target, *, reduction, margin=0.0):
    return _out(lambda r: F.margin_ranking_loss(input1, input2, target, margin=margin,
                                                reduction=r), reduction)


def hinge_embedding(input, target, *, reduction, margin=1.0):
    return _out(lambda r: F.hinge_embedding_loss(input, target, margin=margin, reduction=r),
                reduction)


def cosine_embedding(input1, input2, target, *, reduction, margin=0.0):
    return _out(lambda r: F.cosine_embedding_loss(input1, input2, target, margin=margin,
                                                  reduction=r), reduction)


def triplet_margin(anchor, positive, negative, *, reduction, margin=1.0, p=2.0, eps=1e-6,
                   swap=False):
    return _out(lambda r: F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=p,
                                                eps=eps, swap=swap, reduction=r), reduction)


def cosine_distance(x1, x2):
    """1 - cosine_similarity over the last axis: the distance named "cosine"."""
    return 1 - F.cosine_similarity(x1, x2, dim=-1)


DISTANCES = {"pairwise": torch.pairwise_distance, "cosine": cosine_distance}


def triplet_margin_with_distance(anchor, positive, negative, *, reduction,
                                 distance_function=None, margin=1.0, swap=False):
    if distance_function is None:
        dist = None  # torch's default, torch.pairwise_distance
    elif isinstance(distance_function, str):
        dist = DISTANCES[distance_function]
    else:
        dist = checked_distance(distance_function)
    return _out(lambda r: F.triplet_margin_with_distance_loss(
        anchor, positive, negative, distance_function=dist, margin=margin, swap=swap,
        reduction=r), reduction)
