"""The box losses iou, giou, diou, ciou (torchvision.ops semantics): values worked out by hand
from the papers' formulas, torchvision's eps placements (ciou's IoU and distance terms always
use 1e-7; its alpha has no gradient), degenerate boxes, the empty batch (torchvision's "mean"
of nothing is 0), and bad boxes (the message names the argument).

torchvision is not importable here: the parity grid (tests/test_parity.py) compares both
backends with a torch transcription of torchvision's code in multiloss/losses/detection."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing
from multiloss.losses import detection

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
NAMES = ("iou", "giou", "diou", "ciou")


_run = testing.value_and_grads  # value and gradients of the summed output


B1 = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 4.0, 2.0]])
B2 = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 4.0, 2.0]])
EPS = 1e-7


def _by_hand():
    """Per pair: overlapping 2x2 boxes (inter 1, union 7, enclosing 3x3), disjoint unit boxes
    (inter 0, union 2, enclosing 3x1), identical boxes."""
    iou = np.array([1 / (7 + EPS), 0.0, 8 / (8 + EPS)])
    area_c = np.array([9.0, 3.0, 8.0])
    union = np.array([7.0, 2.0, 8.0])
    giou = 1 - iou + (area_c - union) / (area_c + EPS)
    diag = np.array([18.0, 10.0, 20.0]) + EPS
    rho2 = np.array([2.0, 4.0, 0.0])
    diou = 1 - iou + rho2 / diag
    # aspect ratios: equal in every pair but none: v = 0 (alpha v = 0)
    return {"iou": 1 - iou, "giou": giou, "diou": diou, "ciou": diou}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_values_by_hand(backend, name):
    v, _ = _run(backend, name, (B1, B2), reduction="none")
    np.testing.assert_allclose(v, _by_hand()[name], rtol=1e-15, atol=1e-15)
    m, _ = _run(backend, name, (B1, B2), reduction="mean")
    assert float(m) == pytest.approx(_by_hand()[name].mean(), rel=1e-15)
    # the default is torchvision's reduction="none"
    d = multiloss.get(name, backend)(B1, B2)
    np.testing.assert_allclose(np.asarray(d.tolist()), _by_hand()[name], rtol=1e-15,
                               atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ciou_aspect_term_by_hand(backend):
    b1 = np.array([0.0, 0.0, 2.0, 1.0])  # w/h = 2
    b2 = np.array([0.0, 0.0, 1.0, 1.0])  # w/h = 1, inside b1
    iou = 1 / (2 + EPS)
    diou = 1 - iou + 0.25 / (5 + EPS)
    v_ = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    for eps in (EPS, 0.5):
        alpha = v_ / (1 - iou + v_ + eps)  # the eps option enters alpha only
        got, _ = _run(backend, "ciou", (b1, b2), eps=eps, reduction="none")
        assert float(got) == pytest.approx(diou + alpha * v_, rel=1e-14)
    # alpha has no gradient (torch.no_grad in torchvision): d/dw of alpha(w) v(w) = alpha v'(w)
    (gx,) = _run(backend, "ciou", (b1, b2), wrt=(0,), reduction="sum")[1]
    (gd,) = _run(backend, "diou", (b1, b2), wrt=(0,), reduction="sum")[1]
    alpha = v_ / (1 - iou + v_ + EPS)
    # v = c (atan(1) - atan(w / h))^2 with w = x2 - x1 = 2, h = 1: dv/dx2 = -2c d / (1 + 4)
    c, d = 4 / math.pi**2, math.atan(1.0) - math.atan(2.0)
    dv_dx2 = -2 * c * d * (1 / 1) / (1 + 4.0)
    assert gx[2] - gd[2] == pytest.approx(alpha * dv_dx2, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_boxes_split_gradients_at_ties(backend):
    b = np.array([[1.0, 2.0, 4.0, 3.0]])
    for name in NAMES:
        v, (g1, g2) = _run(backend, name, (b, b.copy()), wrt=(0, 1), reduction="sum")
        assert float(v) == pytest.approx(EPS / (3 + EPS), abs=1e-15)
        # symmetric: each side of every tied min / max gets half, so both boxes see the same
        np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-18)
        assert np.all(np.isfinite(g1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_boxes(backend):
    line = np.array([[1.0, 1.0, 1.0, 3.0]])  # zero width
    box = np.array([[0.0, 0.0, 2.0, 2.0]])
    point = np.array([[2.0, 2.0, 2.0, 2.0]])
    for name in ("iou", "giou", "diou"):
        v, (g,) = _run(backend, name, (line, box), wrt=(0,), reduction="none")
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
        v, _ = _run(backend, name, (point, point.copy()), reduction="none")
        assert np.all(np.isfinite(v))  # union 0: IoU = 0 / (0 + eps) = 0
    assert float(_run(backend, "iou", (point, point.copy()), reduction="sum")[0]) == 1.0
    # ciou of a point box: w / h = 0 / 0 is NaN, as torchvision
    v, _ = _run(backend, "ciou", (point, box), reduction="none")
    assert np.isnan(v).all()
    # a zero-height box: atan(w / 0) = pi / 2, finite value
    v, _ = _run(backend, "ciou", (np.array([[0.0, 1.0, 2.0, 1.0]]), box), reduction="none")
    assert np.isfinite(v).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_mean_is_torchvisions_zero(backend, name):
    e = np.zeros((0, 4))
    assert float(multiloss.get(name, backend, reduction="mean")(e, e)) == 0.0
    assert math.isnan(float(multiloss.get(name, backend, reduction="mean",
                                          empty_reduction="nan")(e, e)))
    assert tuple(np.shape(multiloss.get(name, backend, reduction="none")(e, e))) == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_leading_shape(backend):
    rng = np.random.default_rng(0)
    b1, b2 = detection.random_boxes(rng, (2, 3), np.float64)
    for name in NAMES:
        full, _ = _run(backend, name, (b1, b2), reduction="none")
        flat, _ = _run(backend, name, (b1.reshape(6, 4), b2.reshape(6, 4)), reduction="none")
        assert full.shape == (2, 3)
        np.testing.assert_array_equal(full.reshape(6), flat)
        one, _ = _run(backend, name, (b1[0, 0], b2[0, 0]), reduction="none")
        assert one.shape == () and float(one) == flat[0]


# ---------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_bad_boxes_raise(backend, name):
    good = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 3.0]])
    bad = good.copy()
    bad[1, 2] = 0.5  # x2 < x1
    loss = multiloss.get(name, backend)
    with pytest.raises(ValueError, match=re.escape(
            "boxes1: expected boxes (x1, y1, x2, y2) with x2 >= x1, got [1.0, 1.0, 0.5, 3.0] "
            "at index (1,)")):
        loss(bad, good)
    bad = good.copy()
    bad[0, 1] = 2.0  # y2 < y1
    with pytest.raises(ValueError, match=r"^boxes2: expected boxes \(x1, y1, x2, y2\) with "
                                         r"y2 >= y1, got \[0.0, 2.0, 1.0, 1.0\] at index \(0,\)"):
        loss(good, bad)
    # validate=False: torchvision's formula on whatever is given, both backends alike
    a = multiloss.get(name, "jax", validate=False, reduction="none")(good, bad)
    b = multiloss.get(name, "torch", validate=False, reduction="none")(good, bad)
    np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-13)


def test_bad_boxes_are_not_checked_under_jit():
    good = np.array([[0.0, 0.0, 1.0, 1.0]])
    bad = np.array([[0.0, 2.0, 1.0, 1.0]])
    loss = multiloss.get("giou", "jax", reduction="none")
    traced = jax.jit(lambda a, b: loss(a, b))(good, bad)
    plain = multiloss.get("giou", "jax", validate=False, reduction="none")(good, bad)
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(plain))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_shapes_and_dtypes(backend):
    loss = multiloss.get("diou", backend, reduction="mean")
    with pytest.raises(ValueError, match=re.escape(
            "boxes1: expected boxes of shape (..., 4) as (x1, y1, x2, y2), got shape (2, 3)")):
        loss(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=re.escape(
            "boxes2: expected the shape of boxes1, (2, 4) (one target box per predicted box), "
            "got (3, 4)")):
        loss(np.zeros((2, 4)), np.zeros((3, 4)))
    # integer and bool boxes: float32, as torchvision's _upcast_non_float
    b = np.array([[0, 0, 2, 2], [1, 1, 3, 4]])
    out = loss(b, b[::-1].astype(bool))
    assert str(out.dtype).replace("torch.", "") == "float32"
    assert float(out) == pytest.approx(float(loss(b.astype(np.float32),
                                                  b[::-1].astype(bool).astype(np.float32))))
    with pytest.raises(TypeError, match=r"^boxes1: expected a floating-point array, got "
                                        r"complex128"):
        loss(np.zeros((2, 4), np.complex128), np.zeros((2, 4)))
    with pytest.raises(TypeError, match=r"^boxes2: expected a floating or integer array of "
                                        r"boxes"):
        loss(np.zeros((2, 4)), np.zeros((2, 4), np.complex128))
    with pytest.raises(ValueError, match=r"^eps: expected a value in \[0.0, inf\], got -1.0"):
        multiloss.get("ciou", backend, eps=-1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_target_boxes_are_cast(backend):
    # cast to boxes1's dtype (torchvision's _upcast_non_float makes them float32: the same
    # numbers for iou, giou, diou; its float64 ciou then takes a float32 aspect ratio)
    b2 = np.array([[1, 1, 3, 3], [0, 0, 4, 2], [0, 0, 3, 7]])
    b1 = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 2.0], [0.5, 0.0, 3.0, 6.0]])
    for name in NAMES:
        a, _ = _run(backend, name, (b1, b2), reduction="none")
        b, _ = _run(backend, name, (b1, b2.astype(np.float64)), reduction="none")
        np.testing.assert_array_equal(a, b)
        tv = {"iou": detection._tv_iou, "giou": detection._tv_giou, "diou": detection._tv_diou,
              "ciou": detection._tv_ciou}[name]
        want = tv(torch, torch.tensor(b1), torch.tensor(b2).float(), 1e-7).numpy()
        np.testing.assert_allclose(a, want, rtol=1e-15 if name != "ciou" else 1e-7)
    with pytest.raises(ValueError, match=r"^boxes2: expected boxes \(x1, y1, x2, y2\) with "
                                         r"x2 >= x1, got \[3, 1, 1, 3\] at index \(0,\)"):
        multiloss.get("iou", backend)(B1[:1], np.array([[3, 1, 1, 3]]))


def test_names_resolve_and_defaults():
    for alias, name in [("generalized_box_iou_loss", "giou"), ("distance_box_iou_loss", "diou"),
                        ("complete_box_iou_loss", "ciou"), ("box_iou_loss", "iou")]:
        assert multiloss.info(alias)["name"] == name
    for name in NAMES:
        info = multiloss.info(name)
        opts = {o["name"]: o["default"] for o in info["options"]}
        assert opts["eps"] == 1e-7 and opts["reduction"] == "none"  # torchvision's defaults
        assert opts["empty_reduction"] == "zero"
        assert info["family"] == "detection" and "torchvision" in info["reference"]
