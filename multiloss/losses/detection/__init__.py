"""Bounding-box regression losses: iou, giou, diou, ciou, with torchvision.ops semantics
(generalized_box_iou_loss, distance_box_iou_loss, complete_box_iou_loss). Specs only;
implementations in ``_jax.py`` and ``_torch.py``.

Boxes are ``(..., 4)`` arrays of ``(x1, y1, x2, y2)``; the unreduced loss has one value per box
pair, the boxes' shape without the last axis. torchvision is not importable here: the
reference is a torch transcription of torchvision's code (torchvision 0.15 and later, as in
its ``ops/giou_loss.py``, ``ops/diou_loss.py``, ``ops/ciou_loss.py`` and
``ops/_utils.py::_loss_inter_union``), in this module.

What was checked in torchvision's source:

- the eps placements: IoU = inter / (union + eps); giou's enclosing term
  (area_c - union) / (area_c + eps); diou's squared diagonal + eps; ciou's
  alpha = v / (1 - iou + v + eps) under ``torch.no_grad()`` (no gradient through alpha);
- complete_box_iou_loss calls ``_diou_iou_loss(boxes1, boxes2)`` without its ``eps``: the IoU
  and distance terms of ciou always use 1e-7, only alpha uses the ``eps`` option;
- the intersection is non-zero only where both overlaps are strictly positive (a masked
  assignment: no gradient through a zero intersection);
- torchvision's current losses do not check boxes (the first generalized_box_iou_loss, from
  fvcore, asserted ``x2 >= x1`` and ``y2 >= y1``; ops.boxes documents ``0 <= x1 < x2`` and
  checks nothing). multiloss raises for x2 < x1 or y2 < y1 where the boxes are concrete (as
  that assertion); zero-width, zero-height and point boxes are accepted;
- "mean" of an empty batch is 0 in torchvision (``0.0 * loss.sum()``): these losses default
  to ``empty_reduction="zero"``; their default reduction is torchvision's, "none".
"""

from __future__ import annotations

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, real, register
from .._common import REDUCTIONS, case_id, expect_float, grid, loss_shape_weight

FAMILY = "detection"

#: torchvision's default eps (and the fixed eps of ciou's IoU and distance terms)
EPS = 1e-7

INPUTS = (
    InputSpec("boxes1", "predicted boxes (..., 4) as (x1, y1, x2, y2), x2 >= x1, y2 >= y1"),
    InputSpec("boxes2", "target boxes, boxes1's shape (floating, or integer: computed in "
              "float32, as torchvision's _upcast_non_float)"),
)

EPS_OPTION = Option("eps", EPS, "small number added to the denominators (torchvision's)",
                    real(0.0), allowed="float >= 0")


def _check(named, opts):
    b1, b2 = named["boxes1"], named["boxes2"]
    expect_float("boxes1", b1)
    if b2.kind not in "fiu":
        raise TypeError(
            f"boxes2: expected a floating or integer array of boxes (integers computed in "
            f"float32, as torchvision), got {b2.describe()}"
        )
    if b1.ndim == 0 or b1.shape[-1] != 4:
        raise ValueError(
            f"boxes1: expected boxes of shape (..., 4) as (x1, y1, x2, y2), got shape {b1.shape}"
        )
    if b2.shape != b1.shape:
        raise ValueError(
            f"boxes2: expected the shape of boxes1, {b1.shape} (one target box per predicted "
            f"box), got {b2.shape}"
        )
    return b1.shape[:-1]


def _check_values(values, infos, opts):
    for name in ("boxes1", "boxes2"):
        b = values.get(name)
        if b is None or b.size == 0:
            continue
        for lo, hi, what in ((0, 2, "x2 >= x1"), (1, 3, "y2 >= y1")):
            # a non-finite coordinate is not checked: it propagates as in torchvision
            bad = (b[..., hi] < b[..., lo]) & np.isfinite(b[..., hi]) & np.isfinite(b[..., lo])
            if np.any(bad):
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                where = f" at index {pos}" if pos else ""
                raise ValueError(
                    f"{name}: expected boxes (x1, y1, x2, y2) with {what}, got "
                    f"{np.asarray(b[pos]).tolist()}{where}"
                )


def _normalizer(inputs, opts):
    shape = np.shape(inputs[0])[:-1]
    return np.ones(shape), np.ones(shape)


# ---------------------------------------------------------------------------------------------
# the reference: torchvision's code, transcribed (torchvision is not importable here)


def _tv_loss_inter_union(torch, boxes1, boxes2):
    # torchvision/ops/_utils.py::_loss_inter_union
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    return intsctk, unionk


def _tv_diou_iou_loss(torch, boxes1, boxes2, eps=1e-7):
    # torchvision/ops/diou_loss.py::_diou_iou_loss
    intsct, union = _tv_loss_inter_union(torch, boxes1, boxes2)
    iou = intsct / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p = (x2 + x1) / 2
    y_p = (y2 + y1) / 2
    x_g = (x1g + x2g) / 2
    y_g = (y1g + y2g) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    loss = 1 - iou + (centers_distance_squared / diagonal_distance_squared)
    return loss, iou


def _tv_iou(torch, boxes1, boxes2, eps):
    # no torchvision function: 1 - IoU with the IoU of its box losses
    intsctk, unionk = _tv_loss_inter_union(torch, boxes1, boxes2)
    return 1 - intsctk / (unionk + eps)


def _tv_giou(torch, boxes1, boxes2, eps):
    # torchvision/ops/giou_loss.py::generalized_box_iou_loss
    intsctk, unionk = _tv_loss_inter_union(torch, boxes1, boxes2)
    iouk = intsctk / (unionk + eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    miouk = iouk - ((area_c - unionk) / (area_c + eps))
    return 1 - miouk


def _tv_diou(torch, boxes1, boxes2, eps):
    # torchvision/ops/diou_loss.py::distance_box_iou_loss
    loss, _ = _tv_diou_iou_loss(torch, boxes1, boxes2, eps)
    return loss


def _tv_ciou(torch, boxes1, boxes2, eps):
    # torchvision/ops/ciou_loss.py::complete_box_iou_loss (its _diou_iou_loss call passes no
    # eps: 1e-7 there whatever eps is)
    diou_loss, iou = _tv_diou_iou_loss(torch, boxes1, boxes2)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    w_pred = x2 - x1
    h_pred = y2 - y1
    w_gt = x2g - x1g
    h_gt = y2g - y1g
    v = (4 / (torch.pi**2)) * torch.pow((torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou_loss + alpha * v


def _reference(fn):
    def reference(torch, inputs, opts, reduction):
        b1, b2 = inputs
        if not b2.is_floating_point() and b1.dtype == torch.float64:
            # torchvision's _upcast_non_float makes it float32; in boxes1's dtype here:
            # torchvision's float32 atan of a float64 ciou is not reproducible to 1e-12 by
            # another atan implementation (multiloss promotes; see the notes)
            b2 = b2.to(b1.dtype)
        # torchvision's _upcast_non_float: float16, bfloat16 and integer boxes in float32 (the
        # areas of pixel-scale boxes overflow float16); the loss is then float32
        upcast = (torch.float32, torch.float64)
        b1 = b1 if b1.dtype in upcast else b1.float()
        b2 = b2 if b2.dtype in upcast else b2.float()
        loss = fn(torch, b1, b2, opts["eps"])
        if reduction == "mean":  # torchvision's reduction
            loss = loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
        elif reduction == "sum":
            loss = loss.sum()
        return loss

    return reference


# ---------------------------------------------------------------------------------------------
# samples


def random_boxes(rng, shape, dtype, degenerate=0.0):
    """Predicted and target boxes (shape + (4,)): targets near the predictions (overlapping
    mostly, some disjoint); a fraction ``degenerate`` of zero widths or heights."""
    x1 = rng.uniform(0.0, 4.0, size=shape)
    y1 = rng.uniform(0.0, 4.0, size=shape)
    w = rng.uniform(0.2, 3.0, size=shape)
    h = rng.uniform(0.2, 3.0, size=shape)
    if degenerate:
        w = np.where(rng.random(size=shape) < degenerate, 0.0, w)
        h = np.where(rng.random(size=shape) < degenerate, 0.0, h)
    b1 = np.stack([x1, y1, x1 + w, y1 + h], axis=-1)
    x1g = x1 + rng.normal(size=shape) * 1.0
    y1g = y1 + rng.normal(size=shape) * 1.0
    wg = w * np.exp(rng.normal(size=shape) * 0.4) + (w == 0) * 0.5
    hg = h * np.exp(rng.normal(size=shape) * 0.4) + (h == 0) * 0.5
    b2 = np.stack([x1g, y1g, x1g + wg, y1g + hg], axis=-1)
    return b1.astype(dtype), b2.astype(dtype)


def _edges(dtype):
    # pred, target per row: identical boxes (every min/max tied), disjoint, touching along an
    # edge (zero intersection, the strict mask), nested, a shared corner coordinate, a
    # zero-width box, a zero-height box, a point box, two identical point boxes (union 0),
    # large coordinates
    b1 = np.array([
        [1.0, 1.0, 3.0, 4.0],
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 2.0, 2.0],
        [0.0, 0.0, 4.0, 4.0],
        [1.0, 1.0, 3.0, 2.0],
        [1.0, 1.0, 1.0, 3.0],
        [0.0, 2.0, 3.0, 2.0],
        [2.0, 2.0, 2.0, 2.0],
        [5.0, 5.0, 5.0, 5.0],
        [1000.0, 2000.0, 1400.0, 2300.0],
    ], dtype)
    b2 = np.array([
        [1.0, 1.0, 3.0, 4.0],
        [2.0, 3.0, 4.0, 5.0],
        [2.0, 0.0, 3.0, 2.0],
        [1.0, 1.0, 2.0, 3.0],
        [1.0, 0.0, 4.0, 2.0],
        [0.0, 0.0, 2.0, 2.0],
        [1.0, 1.0, 2.0, 4.0],
        [1.0, 1.0, 3.0, 3.0],
        [5.0, 5.0, 5.0, 5.0],
        [1100.0, 2100.0, 1500.0, 2350.0],
    ], dtype)
    out = [("edges,none", (b1, b2), {"reduction": "none"}),
           ("edges,eps=0,none", (b1[:8], b2[:8]), {"reduction": "none", "eps": 0.0})]
    return out


def _samples(name):
    def samples(rng, dtype):
        cases = [("2d", (6,), REDUCTIONS, (False, True), {}),
                 ("1box", (), ("mean", "none"), (False,), {}),
                 ("3d", (2, 3), ("mean", "none"), (False, True), {}),
                 ("2d", (6,), ("mean", "none"), (False,), {"eps": 1e-3}),
                 ("degenerate", (8,), ("mean", "none"), (False,), {"degenerate": 0.3})]
        for shape_name, shape, reds, sws, extra in cases:
            for g in grid(reduction=reds, sw=sws):
                extra = dict(extra)
                degenerate = extra.pop("degenerate", 0.0)
                b1, b2 = random_boxes(rng, shape, dtype, degenerate)
                opts = {"reduction": g["reduction"], **extra}
                sw = loss_shape_weight(rng, shape, dtype) if g["sw"] else None
                yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}),
                             (b1, b2), opts, sw)
        for cid, inputs, opts in _edges(dtype):
            yield Sample(f"{name}[{cid}]", inputs, opts)
        b1, b2 = random_boxes(rng, (4,), dtype)
        b2 = np.round(b2 * 2).astype(np.int64)  # integer targets
        b2[:, 2:] = np.maximum(b2[:, 2:], b2[:, :2])
        yield Sample(f"{name}[integer-target]", (b1, b2), {"reduction": "sum"})
        b1, b2 = random_boxes(rng, (3,), dtype)
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (b1, b2),
                         {"empty_reduction": empty}, np.zeros(3, dtype))
        e1, e2 = random_boxes(rng, (0,), dtype)
        for red in ("mean", "sum"):
            yield Sample(f"{name}[empty-batch,reduction={red}]", (e1, e2), {"reduction": red})
        # the contract's NaN for a mean over nothing (torchvision gives 0, the default here)
        yield Sample(f"{name}[empty-batch,empty=nan]", (e1, e2), {"empty_reduction": "nan"},
                     contract_reference=True)

    return samples


def _random(name):
    def random_sample(rng, dtype):
        shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 3))))
        b1, b2 = random_boxes(rng, shape, dtype, degenerate=float(rng.choice([0.0, 0.0, 0.3])))
        if b1.size >= 8 and rng.random() < 0.3:
            # identical boxes: every min/max tied. Not alone in a sample: their gradient is
            # O(eps) = 1e-8, a cancellation of O(1) terms whose rounding (1e-18 absolute)
            # differs between torch's and XLA's autodiff, which a relative error cannot judge
            b2.reshape(-1, 4)[0] = b1.reshape(-1, 4)[0]
        opts = {"reduction": str(rng.choice(REDUCTIONS))}
        if rng.random() < 0.3:
            opts["eps"] = float(rng.choice([0.0, 1e-3]))
            if opts["eps"] == 0.0:  # no zero-area unions: 0 / 0
                b1, b2 = random_boxes(rng, shape, dtype)
        if rng.random() < 0.3:
            opts["empty_reduction"] = "nan"
        sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts), (b1, b2), opts, sw)

    return random_sample


_COMMON_NOTES = (
    "Boxes may have any leading shape (torchvision: (N, 4) or (4,)). As torchvision, the "
    "default reduction is 'none' and a 'mean' of an empty batch is 0 "
    "(empty_reduction='zero'). Boxes with x2 < x1 or y2 < y1 raise where "
    "concrete, unless a coordinate is NaN or infinite (as torchvision's, the loss is then "
    "computed and propagates it) (torchvision computes a meaningless number; fvcore's "
    "original giou asserted); "
    "under a JAX trace they are not checked. At tied coordinates (identical boxes) the "
    "gradient of each min / max is split evenly between its arguments (torch.max/min and "
    "jnp.maximum/minimum agree). As torchvision's _upcast_non_float, boxes that are not "
    "float32 or float64 (float16, bfloat16, integers) are computed in float32 and the loss is "
    "float32 (float16 areas of pixel-scale boxes overflow). Integer target boxes with float64 "
    "predictions are computed in float64; torchvision's are float32, so that "
    "its ciou computes the target's aspect ratio w / h and its atan in float32 (a 1e-8 "
    "relative difference; the reference here casts as multiloss)."
)


#: torchvision's _upcast_non_float of both boxes (LossSpec.converts)
_UPCAST = {"boxes1": ("fiub", "float32+"), "boxes2": ("fiub", "float32+")}


def _spec(name, aliases, summary, formula, reference_name, fn, notes=""):
    return register(LossSpec(
        name=name,
        family=FAMILY,
        summary=summary,
        aliases=aliases,
        inputs=INPUTS,
        options=(EPS_OPTION,),
        formula=formula,
        reference_name=reference_name,
        notes=(notes + " " + _COMMON_NOTES).strip(),
        check=_check,
        converts=_UPCAST,
        check_values=_check_values,
        value_args=("boxes1", "boxes2"),
        value_kinds="fiu",
        samples=_samples(name),
        random_sample=_random(name),
        reference=_reference(fn),
        normalizer=_normalizer,
        default_reduction="none",
        default_empty_reduction="zero",
    ))


_INTER = ("inter = (min(x2, x2g) - max(x1, x1g)) (min(y2, y2g) - max(y1, y1g)) where both are "
          "> 0, else 0 (no gradient);\nunion = area1 + area2 - inter; IoU = inter / (union + eps)")

_spec(
    "iou",
    ("box_iou_loss",),
    "IoU loss of box pairs: 1 - IoU.",
    _INTER + ";\nl = 1 - IoU.",
    ("torchvision.ops' IoU of its box losses (ops/_utils.py::_loss_inter_union, inter / "
     "(union + eps)), transcribed in torch: torchvision has no plain IoU loss"),
    _tv_iou,
)

_spec(
    "giou",
    ("generalized_box_iou_loss", "giou_loss"),
    "Generalized IoU loss (Rezatofighi et al. 2019) of box pairs.",
    _INTER + ";\nC = the smallest enclosing box's area; l = 1 - IoU + (C - union) / (C + eps).",
    ("torchvision.ops.generalized_box_iou_loss (torchvision >= 0.15), transcribed in torch "
     "(torchvision is not importable here)"),
    _tv_giou,
)

_spec(
    "diou",
    ("distance_box_iou_loss", "diou_loss"),
    "Distance IoU loss (Zheng et al. 2020) of box pairs.",
    _INTER + (";\nc2 = the enclosing box's squared diagonal + eps; rho2 = the squared distance "
              "of the centres; l = 1 - IoU + rho2 / c2."),
    ("torchvision.ops.distance_box_iou_loss (torchvision >= 0.15), transcribed in torch "
     "(torchvision is not importable here)"),
    _tv_diou,
)

_spec(
    "ciou",
    ("complete_box_iou_loss", "ciou_loss"),
    "Complete IoU loss (Zheng et al. 2020) of box pairs.",
    _INTER.replace("eps)", "1e-7)") + (
        ";\nl = diou(eps=1e-7) + alpha v, v = (4 / pi^2) (atan(wg / hg) - atan(w / h))^2, "
        "alpha = v / (1 - IoU + v + eps) without gradient (torch.no_grad)."),
    ("torchvision.ops.complete_box_iou_loss (torchvision >= 0.15), transcribed in torch "
     "(torchvision is not importable here)"),
    _tv_ciou,
    notes=("As torchvision, the eps option enters alpha only: the IoU and distance terms use "
           "1e-7 (complete_box_iou_loss calls _diou_iou_loss without eps). A box of zero "
           "height gives atan(w / 0) = pi/2; a point box (0 / 0) gives NaN, as torchvision."),
)
