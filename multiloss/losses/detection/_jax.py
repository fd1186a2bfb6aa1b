"""JAX implementations of the box losses (see the specs and torchvision's formulas in
``__init__.py``). jnp.maximum / jnp.minimum split the gradient evenly at ties, as torch.max /
torch.min; the intersection is masked with ``where`` (torchvision's masked assignment: no
gradient where the boxes do not overlap)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ...backends import Terms

EPS = 1e-7


def _cast(boxes1, boxes2):
    """Integer target boxes in boxes1's dtype (see the specs' notes: torchvision's float32)."""
    return boxes2 if boxes2.dtype == boxes1.dtype else boxes2.astype(boxes1.dtype)


def _unbind(b):
    return b[..., 0], b[..., 1], b[..., 2], b[..., 3]


def _inter_union(boxes1, boxes2):
    x1, y1, x2, y2 = _unbind(boxes1)
    x1g, y1g, x2g, y2g = _unbind(boxes2)
    xkis1 = jnp.maximum(x1, x1g)
    ykis1 = jnp.maximum(y1, y1g)
    xkis2 = jnp.minimum(x2, x2g)
    ykis2 = jnp.minimum(y2, y2g)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk = jnp.where(mask, (xkis2 - xkis1) * (ykis2 - ykis1), jnp.zeros((), x1.dtype))
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    return intsctk, unionk


def _enclosing(boxes1, boxes2):
    x1, y1, x2, y2 = _unbind(boxes1)
    x1g, y1g, x2g, y2g = _unbind(boxes2)
    return jnp.minimum(x1, x1g), jnp.minimum(y1, y1g), jnp.maximum(x2, x2g), jnp.maximum(y2, y2g)


def _diou_iou(boxes1, boxes2, eps):
    intsct, union = _inter_union(boxes1, boxes2)
    iou = intsct / (union + eps)
    x1, y1, x2, y2 = _unbind(boxes1)
    x1g, y1g, x2g, y2g = _unbind(boxes2)
    xc1, yc1, xc2, yc2 = _enclosing(boxes1, boxes2)
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p = (x2 + x1) / 2
    y_p = (y2 + y1) / 2
    x_g = (x1g + x2g) / 2
    y_g = (y1g + y2g) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    return 1 - iou + (centers_distance_squared / diagonal_distance_squared), iou


def iou(boxes1, boxes2, *, eps=EPS):
    boxes2 = _cast(boxes1, boxes2)
    intsctk, unionk = _inter_union(boxes1, boxes2)
    return Terms(1 - intsctk / (unionk + eps))


def giou(boxes1, boxes2, *, eps=EPS):
    boxes2 = _cast(boxes1, boxes2)
    intsctk, unionk = _inter_union(boxes1, boxes2)
    iouk = intsctk / (unionk + eps)
    xc1, yc1, xc2, yc2 = _enclosing(boxes1, boxes2)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    return Terms(1 - (iouk - ((area_c - unionk) / (area_c + eps))))


def diou(boxes1, boxes2, *, eps=EPS):
    boxes2 = _cast(boxes1, boxes2)
    return Terms(_diou_iou(boxes1, boxes2, eps)[0])


def ciou(boxes1, boxes2, *, eps=EPS):
    boxes2 = _cast(boxes1, boxes2)
    diou_loss, iou_ = _diou_iou(boxes1, boxes2, EPS)  # torchvision: 1e-7 here, whatever eps
    x1, y1, x2, y2 = _unbind(boxes1)
    x1g, y1g, x2g, y2g = _unbind(boxes2)
    w_pred = x2 - x1
    h_pred = y2 - y1
    w_gt = x2g - x1g
    h_gt = y2g - y1g
    v = (4 / (math.pi**2)) * ((jnp.arctan(w_gt / h_gt) - jnp.arctan(w_pred / h_pred)) ** 2)
    alpha = jax.lax.stop_gradient(v / (1 - iou_ + v + eps))
    return Terms(diou_loss + alpha * v)
