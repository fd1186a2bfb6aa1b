"""Ranking and embedding losses: margin_ranking, hinge_embedding, cosine_embedding,
triplet_margin, triplet_margin_with_distance. Specs only; implementations in ``_jax.py`` and
``_torch.py``.

Every behaviour below was measured on torch 2.13.0 (float64, ``torch.autograd.grad``):

- the hinges (``clamp_min(z, 0)``) pass the whole gradient at z == 0 exactly;
- the targets of margin_ranking are differentiated (gradient -(x1 - x2) where the hinge is
  active); those of hinge_embedding and cosine_embedding only select a branch (no gradient);
- torch broadcasts inputs of equal rank against each other (margin_ranking, hinge_embedding,
  cosine_embedding, the triplet losses); multiloss raises instead (as for every other loss);
- the triplet losses reject margin <= 0 (ValueError); the others accept any margin.
"""

from __future__ import annotations

import math

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, boolean, real, register
from .._common import REDUCTIONS, case_id, expect_float, expect_same_shape, grid, loss_shape_weight

FAMILY = "ranking"

DISTANCE_NAMES = ("pairwise", "cosine")


# ---------------------------------------------------------------------------------------------
# checks


def _expect_labels(name, x):
    if x.kind not in "fi":
        raise TypeError(
            f"{name}: expected a floating-point or signed integer array of labels (+1 / -1), "
            f"got {x.describe()}"
        )


def _margin_ranking_check(named, opts):
    x1, x2, t = named["input1"], named["input2"], named["target"]
    expect_float("input1", x1)
    expect_float("input2", x2)
    _expect_labels("target", t)
    expect_same_shape("input2", x2, "input1", x1)
    expect_same_shape("target", t, "input1", x1)
    return x1.shape


def _hinge_embedding_check(named, opts):
    x, t = named["input"], named["target"]
    expect_float("input", x)
    _expect_labels("target", t)
    expect_same_shape("target", t, "input", x)
    return x.shape


def _cosine_embedding_check(named, opts):
    x1, x2, t = named["input1"], named["input2"], named["target"]
    expect_float("input1", x1)
    expect_float("input2", x2)
    _expect_labels("target", t)
    if x1.ndim not in (1, 2):
        raise ValueError(f"input1: expected shape (N, D) or (D,), got shape {x1.shape}")
    expect_same_shape("input2", x2, "input1", x1)
    want = x1.shape[:1] if x1.ndim == 2 else ()
    if t.shape != want:
        raise ValueError(
            f"target: expected shape {want} (one label per pair) for input1 of shape "
            f"{x1.shape}, got shape {t.shape}"
        )
    return want


def _triplet_shapes(named):
    a, p, n = named["anchor"], named["positive"], named["negative"]
    for name, x in (("anchor", a), ("positive", p), ("negative", n)):
        expect_float(name, x)
    if a.ndim == 0:
        raise ValueError(
            f"anchor: expected shape (N, D) or (D,) (the last axis is the embedding), got shape "
            f"{a.shape}"
        )
    expect_same_shape("positive", p, "anchor", a)
    expect_same_shape("negative", n, "anchor", a)
    return a


def _triplet_margin_check(named, opts):
    a = _triplet_shapes(named)
    if math.isinf(opts["p"]) and a.shape[-1] == 0:
        raise ValueError(
            f"anchor: p=inf needs a non-empty last axis (the inf norm of an empty axis is "
            f"undefined; torch raises), got shape {a.shape}"
        )
    return a.shape[:-1]


def _triplet_distance_check(named, opts):
    return _triplet_shapes(named).shape[:-1]


# ---------------------------------------------------------------------------------------------
# options


def checked_distance(fn, convert=lambda d: d):
    """A user's distance function, checked on each call to return one distance per pair (the
    inputs' shape without the last axis); shared by both backends."""

    def dist(x1, x2):
        d = fn(x1, x2)
        shape = tuple(getattr(d, "shape", ()))
        if shape != tuple(x1.shape[:-1]):
            raise ValueError(
                f"distance_function: expected distances of shape {tuple(x1.shape[:-1])} for "
                f"inputs of shape {tuple(x1.shape)} (one per pair, over the last axis), got "
                f"shape {shape}"
            )
        return convert(d)

    return dist


def _distance_function(name, value):
    if value is None:
        return None
    if isinstance(value, str):
        if value not in DISTANCE_NAMES:
            raise ValueError(
                f"{name}: expected None, a callable or one of {list(DISTANCE_NAMES)}, got "
                f"{value!r}"
            )
        return value
    if not callable(value):
        raise TypeError(
            f"{name}: expected None, a callable (x1, x2) -> distances or one of "
            f"{list(DISTANCE_NAMES)}, got {type(value).__name__} {value!r}"
        )
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"{name}: expected a hashable callable (it is a static option of the jitted "
            f"loss), got an unhashable {type(value).__name__}"
        ) from None
    return value


def _margin(default, positive=False, doc=""):
    if positive:
        return Option("margin", default, doc or "the margin; torch requires margin > 0",
                      real(0.0, lo_open=True), allowed="float > 0")
    return Option("margin", default, doc or "the margin (any value, as torch)", real(),
                  allowed="float")


SWAP = Option("swap", False, "use min(d(a, n), d(p, n)) as the negative distance (distance swap, "
              "Balntas et al. 2016); at a tie each distance gets half the gradient (torch)",
              boolean, allowed="bool")


# ---------------------------------------------------------------------------------------------
# samples


def _pm1(rng, shape):
    return np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)


def _ones_normalizer(shape_of):
    def normalizer(inputs, opts):
        shape = shape_of(inputs)
        return np.ones(shape), np.ones(shape)

    return normalizer


def _empty_cases(name, inputs, dtype, loss_shape):
    """An empty batch ("mean", "sum", "sum_over_batch_size") and all-zero sample weights."""
    empty, full = inputs
    for red in ("mean", "sum", "sum_over_batch_size"):
        yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red})
    for e in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={e}]", full, {"empty_reduction": e},
                     np.zeros(loss_shape, dtype))


def _margin_ranking_samples(rng, dtype):
    name = "margin_ranking"

    def data(shape):
        x1, x2 = rng.normal(size=shape), rng.normal(size=shape)
        return x1.astype(dtype), x2.astype(dtype), _pm1(rng, shape).astype(dtype)

    for g in grid(reduction=REDUCTIONS, margin=(0.0, 0.5), sw=(False, True)):
        opts = {"reduction": g["reduction"], "margin": g["margin"]}
        sw = loss_shape_weight(rng, (7,), dtype) if g["sw"] else None
        yield Sample(case_id(f"{name}[1d]", {**opts, "sw": g["sw"]}), data((7,)), opts, sw)
    for red, sw in (("mean", False), ("none", True)):
        w = loss_shape_weight(rng, (3, 4), dtype) if sw else None
        yield Sample(case_id(f"{name}[2d]", {"reduction": red, "sw": sw}), data((3, 4)),
                     {"reduction": red, "margin": 0.25}, w)
    for red in ("mean", "none"):
        yield Sample(f"{name}[0d,reduction={red}]", data(()), {"reduction": red, "margin": 0.5})
    # targets outside +-1: the formula applies as is
    x1, x2, _ = data((6,))
    y = np.array([2.0, 0.5, 0.0, -3.0, -0.25, 1.5], dtype)
    for red in ("none", "mean"):
        yield Sample(f"{name}[targets-outside-pm1,reduction={red}]", (x1, x2, y),
                     {"reduction": red, "margin": 0.5})
    x1, x2, y = data((5,))
    yield Sample(f"{name}[int-target]", (x1, x2, y.astype(np.int64)), {"margin": 0.3})
    # exact ties of the hinge: -y (x1 - x2) + margin == 0 in floating point (the gradient passes)
    d = np.array([0.5, -0.5, 0.25, -1.0, 2.0, 1.0, -3.0, 3.0])
    y = np.array([1.0, -1.0, 2.0, -0.5, 0.25, 0.5, 1.0, 1.0])  # margin / d, then two non-ties
    x2 = np.array([0.0, 1.0, -1.0, 0.5, 2.0, -2.0, 0.75, -0.25])
    for red in ("sum", "none"):
        yield Sample(f"{name}[ties,margin=0.5,reduction={red}]",
                     ((x2 + d).astype(dtype), x2.astype(dtype), y.astype(dtype)),
                     {"reduction": red, "margin": 0.5})
    x1 = np.array([0.5, -1.0, 2.0, 0.0])
    yield Sample(f"{name}[ties,margin=0,reduction=none]",
                 (x1.astype(dtype), x1.astype(dtype), np.array([1.0, -1.0, 1.0, -1.0], dtype)),
                 {"reduction": "none"})
    inf, nan = np.inf, np.nan
    x1 = np.array([inf, -inf, 1.0, nan, 2.0, inf], dtype)
    x2 = np.array([0.0, 0.0, inf, 0.0, 1.0, 1.0], dtype)
    y = np.array([1.0, 1.0, -1.0, 1.0, 1.0, -1.0], dtype)
    yield Sample(f"{name}[inf-nan,reduction=none]", (x1, x2, y), {"reduction": "none"})
    yield from _empty_cases(name, (
        (np.zeros(0, dtype), np.zeros(0, dtype), np.zeros(0, dtype)), data((3,))), dtype, (3,))


def _margin_ranking_random(rng, dtype):
    shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 3))))
    x1 = rng.normal(size=shape) * 2
    x2 = rng.normal(size=shape) * 2
    y = _pm1(rng, shape) if rng.random() < 0.8 else rng.normal(size=shape)
    margin = float(rng.choice([0.0, 0.5, 1.0, -0.5]))
    if x1.size and rng.random() < 0.3:  # a tie
        x2.flat[0] = 0.5
        x1.flat[0] = 0.5 + margin / y.flat[0] if y.flat[0] != 0 else 0.5
        y.flat[0] = 1.0 if y.flat[0] == 0 else y.flat[0]
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "margin": margin}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("margin_ranking[random]", opts),
                  (x1.astype(dtype), x2.astype(dtype), y.astype(dtype)), opts, sw)


def _hinge_embedding_samples(rng, dtype):
    name = "hinge_embedding"

    def data(shape):
        return (rng.normal(size=shape) * 1.5).astype(dtype), _pm1(rng, shape).astype(dtype)

    for g in grid(reduction=REDUCTIONS, margin=(1.0, 0.3), sw=(False, True)):
        opts = {"reduction": g["reduction"], "margin": g["margin"]}
        sw = loss_shape_weight(rng, (7,), dtype) if g["sw"] else None
        yield Sample(case_id(f"{name}[1d]", {**opts, "sw": g["sw"]}), data((7,)), opts, sw)
    yield Sample(f"{name}[2d,reduction=mean]", data((3, 4)), {"reduction": "mean"})
    yield Sample(f"{name}[2d,reduction=none,sw=True]", data((3, 4)), {"reduction": "none"},
                 loss_shape_weight(rng, (3, 1), dtype))
    yield Sample(f"{name}[3d,reduction=mean]", data((2, 3, 2)), {"reduction": "mean"})
    yield Sample(f"{name}[0d,reduction=sum]", data(()), {"reduction": "sum"})
    # targets outside +-1 get both terms: max(0, margin - x) + x
    x = np.array([0.3, -1.0, 2.0, 0.5, -0.2, 1.7], dtype)
    y = np.array([0.0, 2.0, 0.5, -3.0, 1.0, -1.0], dtype)
    for margin in (1.0, -0.5):
        yield Sample(f"{name}[targets-outside-pm1,margin={margin}]", (x, y),
                     {"reduction": "none", "margin": margin})
    x, y = data((5,))
    yield Sample(f"{name}[int-target]", (x, np.array([1, -1, 0, 2, -1])), {"reduction": "none"})
    # exact ties of the hinge: x == margin where y != 1 (the gradient passes)
    x = np.array([1.0, 1.0, 0.0, 2.0, 1.0, -0.5])
    y = np.array([-1.0, 0.0, 1.0, -1.0, 2.0, -1.0])
    for red in ("sum", "none"):
        yield Sample(f"{name}[ties,reduction={red}]", (x.astype(dtype), y.astype(dtype)),
                     {"reduction": red})
    yield Sample(f"{name}[ties,margin=-0.5]", (x.astype(dtype), y.astype(dtype)),
                 {"reduction": "none", "margin": -0.5})
    inf, nan = np.inf, np.nan
    x = np.array([inf, -inf, nan, inf, -inf, nan, 0.5], dtype)
    y = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 0.0], dtype)
    yield Sample(f"{name}[inf-nan,reduction=none]", (x, y), {"reduction": "none"})
    yield from _empty_cases(name, ((np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)),
                                   data((4,))), dtype, (4,))


def _hinge_embedding_random(rng, dtype):
    shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 4))))
    margin = float(rng.choice([1.0, 0.5, 2.0, -0.5]))
    x = rng.normal(size=shape) * 2
    y = _pm1(rng, shape) if rng.random() < 0.8 else rng.choice([-1.0, 0.0, 1.0, 2.0], size=shape)
    if x.size and rng.random() < 0.3:  # a tie of the hinge
        x.flat[0], y.flat[0] = margin, -1.0
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "margin": margin}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id("hinge_embedding[random]", opts), (x.astype(dtype), y.astype(dtype)),
                  opts, sw)


def _cosine_embedding_samples(rng, dtype):
    name = "cosine_embedding"

    def data(n, d):
        shape = (n, d) if n is not None else (d,)
        t = _pm1(rng, shape[:-1])
        return (rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype),
                np.asarray(t, dtype))

    for g in grid(reduction=REDUCTIONS, margin=(0.0, 0.4), sw=(False, True)):
        opts = {"reduction": g["reduction"], "margin": g["margin"]}
        sw = loss_shape_weight(rng, (5,), dtype) if g["sw"] else None
        yield Sample(case_id(f"{name}[2d]", {**opts, "sw": g["sw"]}), data(5, 3), opts, sw)
    for red in ("mean", "none"):
        yield Sample(f"{name}[2d,margin=-0.3,reduction={red}]", data(6, 4),
                     {"reduction": red, "margin": -0.3})
    # unbatched: (D,) inputs and a 0-d target
    for y in (1.0, -1.0):
        x1, x2, _ = data(None, 4)
        yield Sample(f"{name}[unbatched,y={y:+g}]", (x1, x2, np.asarray(y, dtype)),
                     {"reduction": "none", "margin": -0.5})
    x1, x2, t = data(None, 4)
    yield Sample(f"{name}[unbatched,sw=True]", (x1, x2, t), {"margin": -0.5},
                 np.asarray(0.7, dtype))
    # targets other than +-1 give 0 (neither branch)
    x1, x2, _ = data(5, 3)
    yield Sample(f"{name}[targets-outside-pm1]", (x1, x2, np.array([0.0, 0.5, 2.0, 1.0, -1.0],
                                                                   dtype)),
                 {"reduction": "none"})
    x1, x2, _ = data(4, 3)
    yield Sample(f"{name}[int-target]", (x1, x2, np.array([1, -1, 0, -1])),
                 {"reduction": "none", "margin": -0.2})
    # zero vectors: cos = 0 through torch's 1e-12 on each squared norm; gradient x2 / sqrt(eps |x2|^2)
    x1 = np.array([[0, 0, 0], [1, 2, -1], [0, 0, 0], [0, 0, 0], [0.5, -1, 2], [0, 0, 0]], float)
    x2 = np.array([[3, -1, 2], [0, 0, 0], [0, 0, 0], [1, 1, 1], [0, 0, 0], [2, 0, 1]], float)
    y = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    for red in ("none", "sum"):
        yield Sample(f"{name}[zero-vectors,reduction={red}]",
                     (x1.astype(dtype), x2.astype(dtype), y.astype(dtype)),
                     {"reduction": red, "margin": -0.5})
    # exact ties of the hinge: orthogonal vectors (cos == 0 exactly), y = -1, margin 0
    x1 = np.array([[1, 0, 0], [1, 2, 0], [3, 0, 4], [1, 1, 1], [2, -1, 0.5]], float)
    x2 = np.array([[0, 1, 0], [2, -1, 5], [0, 7, 0], [-1, 2, -1], [1, 1, -2]], float)
    y = np.array([-1.0, -1.0, -1.0, -1.0, 1.0])
    for red in ("none", "sum"):
        yield Sample(f"{name}[ties,reduction={red}]",
                     (x1.astype(dtype), x2.astype(dtype), y.astype(dtype)), {"reduction": red})
    # infinities: a NaN cosine (inf / inf) where the row counts, 0 where its target is outside +-1
    x1, x2, _ = data(4, 3)
    x1[0, 1] = np.inf
    x2[2, 0] = -np.inf
    yield Sample(f"{name}[inf,reduction=none]", (x1, x2, np.array([1.0, -1.0, 0.5, 1.0], dtype)),
                 {"reduction": "none"})
    yield Sample(f"{name}[D=0]", (np.zeros((3, 0), dtype), np.zeros((3, 0), dtype),
                                  np.array([1.0, -1.0, 1.0], dtype)), {"margin": -0.5})
    yield from _empty_cases(name, ((np.zeros((0, 3), dtype), np.zeros((0, 3), dtype),
                                    np.zeros(0, dtype)), data(3, 2)), dtype, (3,))


def _cosine_embedding_random(rng, dtype):
    unbatched = rng.random() < 0.2
    # D >= 2: for D = 1 the vectors are parallel, and the gradient is 0 up to rounding, which a
    # relative error cannot judge
    d = int(rng.integers(2, 5))
    shape = (d,) if unbatched else (int(rng.integers(0, 5)), d)
    x1 = rng.normal(size=shape)
    x2 = rng.normal(size=shape)
    y = _pm1(rng, shape[:-1])
    if x1.size and rng.random() < 0.2:
        x1.reshape(-1, d)[0] = 0.0  # a zero vector
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "margin": float(rng.choice([0.0, 0.3, -0.4]))}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape[:-1], dtype) if rng.random() < 0.5 else None
    return Sample(case_id("cosine_embedding[random]", opts),
                  (x1.astype(dtype), x2.astype(dtype), np.asarray(y, dtype)), opts, sw)


def _triplet_data(rng, dtype, shape, scale=1.0):
    return tuple((rng.normal(size=shape) * scale).astype(dtype) for _ in range(3))


def _triplet_margin_samples(rng, dtype):
    name = "triplet_margin"
    for g in grid(reduction=REDUCTIONS, sw=(False, True)):
        opts = {"reduction": g["reduction"]}
        sw = loss_shape_weight(rng, (5,), dtype) if g["sw"] else None
        yield Sample(case_id(f"{name}[2d]", {**opts, "sw": g["sw"]}),
                     _triplet_data(rng, dtype, (5, 4)), opts, sw)
    for g in grid(p=(1.0, 3.0, 1.5, 0.5, np.inf), swap=(False, True)):
        opts = {"reduction": "none", "p": g["p"], "swap": g["swap"], "margin": 2.0}
        yield Sample(case_id(f"{name}[2d]", opts), _triplet_data(rng, dtype, (5, 4)), opts)
    yield Sample(f"{name}[2d,swap=True,margin=0.3,reduction=mean]",
                 _triplet_data(rng, dtype, (6, 3)), {"swap": True, "margin": 0.3})
    yield Sample(f"{name}[unbatched,reduction=mean]", _triplet_data(rng, dtype, (4,)), {})
    yield Sample(f"{name}[unbatched,reduction=none,sw=True]", _triplet_data(rng, dtype, (4,)),
                 {"reduction": "none", "margin": 3.0}, np.asarray(1.5, dtype))
    yield Sample(f"{name}[3d,reduction=mean]", _triplet_data(rng, dtype, (2, 3, 4)),
                 {"margin": 2.0})
    # exact ties of the hinge (eps=0, integer vectors: 3-4-5 distances): margin + dp - dn == 0
    a = np.array([[0, 0], [1, 1], [0, 0], [2, -1]], float)
    p = np.array([[3, 4], [1, 1], [6, 8], [5, 3]], float)
    n = np.array([[6, 8], [4, 5], [3, 4], [-4, 7]], float)
    for red in ("none", "sum"):
        yield Sample(f"{name}[ties,eps=0,reduction={red}]",
                     (a.astype(dtype), p.astype(dtype), n.astype(dtype)),
                     {"reduction": red, "eps": 0.0, "margin": 5.0})
    # a tie of the swap: anchor == positive, so d(a, n) == d(p, n) exactly (half each)
    a, _, n = _triplet_data(rng, dtype, (4, 3))
    for p_ in (2.0, np.inf):
        yield Sample(f"{name}[swap-tie,p={p_}]", (a, a.copy(), n),
                     {"reduction": "none", "swap": True, "p": p_, "margin": 4.0})
    # zero distances (eps=0, anchor == positive): torch's norm gradient is 0 there; and an inf
    # norm with two maxima (the gradient shared between them)
    a = np.array([[1, -1, 0.5], [0, 2, 1], [1, 1, 1]], float)
    p = np.array([[1, -1, 0.5], [0, 0, 0], [1, 1, 1]], float)
    n = np.array([[4, 2, -3], [2, 0, 1], [3, -1, 1]], float)
    for p_ in (2.0, 1.0, 3.0, 1.5, 0.5, np.inf):
        yield Sample(f"{name}[zero-distance,eps=0,p={p_}]",
                     (a.astype(dtype), p.astype(dtype), n.astype(dtype)),
                     {"reduction": "none", "eps": 0.0, "p": p_, "margin": 5.0})
    # infinities: an inf negative (loss 0 with torch's NaN gradient), an inf positive (loss inf)
    a, p, n = _triplet_data(rng, dtype, (3, 2))
    n[0, 0] = np.inf
    p[1, 1] = -np.inf
    yield Sample(f"{name}[inf,reduction=none]", (a, p, n), {"reduction": "none"})
    yield Sample(f"{name}[D=0]", tuple(np.zeros((3, 0), dtype) for _ in range(3)),
                 {"reduction": "none"})
    yield from _empty_cases(name, (tuple(np.zeros((0, 4), dtype) for _ in range(3)),
                                   _triplet_data(rng, dtype, (3, 2))), dtype, (3,))


def _triplet_margin_random(rng, dtype):
    # D >= 2: for D = 1, d(a, p) - d(a, n) often has an anchor gradient of 0 up to rounding
    # (|z|^(p-1) |z|^(1-p) - 1), which a relative error cannot judge
    d = int(rng.integers(2, 5))
    shape = tuple(int(k) for k in rng.integers(0, 4, size=int(rng.integers(0, 3)))) + (d,)
    a, p, n = (rng.normal(size=shape) for _ in range(3))
    opts = {"reduction": str(rng.choice(REDUCTIONS)),
            "margin": float(rng.choice([1.0, 0.5, 2.0])),
            "p": float(rng.choice([2.0, 1.0, 3.0, 1.5, 0.5, np.inf])),
            "swap": bool(rng.random() < 0.5)}
    if rng.random() < 0.2:
        opts["eps"] = float(rng.choice([0.0, 1e-3]))
    if a.size and rng.random() < 0.2:
        p[...] = a  # a zero distance (with eps=0) or a tie of the swap
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape[:-1], dtype) if rng.random() < 0.5 else None
    return Sample(case_id("triplet_margin[random]", opts),
                  (a.astype(dtype), p.astype(dtype), n.astype(dtype)), opts, sw)


def _triplet_distance_samples(rng, dtype):
    name = "triplet_margin_with_distance"
    for g in grid(distance_function=(None, "pairwise", "cosine"), swap=(False, True)):
        opts = {"reduction": "none", **g}
        yield Sample(case_id(f"{name}[2d]", opts), _triplet_data(rng, dtype, (5, 4)), opts)
    for g in grid(reduction=REDUCTIONS, sw=(False, True)):
        opts = {"reduction": g["reduction"], "distance_function": "cosine", "margin": 0.5}
        sw = loss_shape_weight(rng, (5,), dtype) if g["sw"] else None
        yield Sample(case_id(f"{name}[2d]", {**opts, "sw": g["sw"]}),
                     _triplet_data(rng, dtype, (5, 4)), opts, sw)
    yield Sample(f"{name}[2d,pairwise,margin=2,reduction=mean]", _triplet_data(rng, dtype, (5, 4)),
                 {"distance_function": "pairwise", "margin": 2.0})
    for dist in (None, "cosine"):
        yield Sample(case_id(f"{name}[unbatched]", {"distance_function": dist}),
                     _triplet_data(rng, dtype, (4,)), {"distance_function": dist, "margin": 2.0})
    yield Sample(f"{name}[3d,cosine]", _triplet_data(rng, dtype, (2, 3, 4)),
                 {"distance_function": "cosine", "reduction": "none"})
    # zero vectors under the cosine distance (torch clamps each norm at 1e-8 outside autograd)
    a = np.array([[0, 0, 0], [1, 2, -1], [0.5, 1, 1], [0, 0, 0]], float)
    p = np.array([[1, -1, 2], [0, 0, 0], [2, 1, 0], [0, 0, 0]], float)
    n = np.array([[2, 0, 1], [-1, 1, 0], [0, 0, 0], [0, 0, 0]], float)
    for swap in (False, True):
        yield Sample(f"{name}[zero-vectors,cosine,swap={swap}]",
                     (a.astype(dtype), p.astype(dtype), n.astype(dtype)),
                     {"distance_function": "cosine", "swap": swap, "margin": 1.5,
                      "reduction": "none"})
    # exact ties of the hinge under the cosine distance: d(a, p) = 0, d(a, n) = 1 (orthogonal);
    # the last row is active with a positive not parallel to the anchor (where it is, d l / d p
    # is 0 up to rounding, which a relative error cannot judge)
    a = np.array([[1, 0], [0, 2], [3, 4], [1, 1], [1, 2]], float)
    p = np.array([[1, 0], [0, 2], [3, 4], [2, 2], [2, -1]], float)
    n = np.array([[0, 1], [-3, 0], [-4, 3], [0, 1], [1, 2.5]], float)
    for red in ("none", "sum"):
        yield Sample(f"{name}[ties,cosine,reduction={red}]",
                     (a.astype(dtype), p.astype(dtype), n.astype(dtype)),
                     {"distance_function": "cosine", "reduction": red})
    # a tie of the swap: anchor == positive
    a, _, n = _triplet_data(rng, dtype, (4, 3))
    for dist in ("pairwise", "cosine"):
        yield Sample(f"{name}[swap-tie,{dist}]", (a, a.copy(), n),
                     {"distance_function": dist, "swap": True, "margin": 3.0, "reduction": "none"})
    a, p, n = _triplet_data(rng, dtype, (3, 2))
    n[0, 0] = np.inf
    p[1, 1] = -np.inf
    yield Sample(f"{name}[inf,pairwise,reduction=none]", (a, p, n), {"reduction": "none"})
    yield from _empty_cases(name, (tuple(np.zeros((0, 4), dtype) for _ in range(3)),
                                   _triplet_data(rng, dtype, (3, 2))), dtype, (3,))


def _triplet_distance_random(rng, dtype):
    # D >= 2, and a positive equal to the anchor only with swap (where d(p, n) gives it a
    # gradient): under the cosine distance, the gradient between parallel vectors is 0 up to
    # rounding, which a relative error cannot judge
    d = int(rng.integers(2, 5))
    shape = tuple(int(k) for k in rng.integers(0, 4, size=int(rng.integers(0, 3)))) + (d,)
    a, p, n = (rng.normal(size=shape) for _ in range(3))
    opts = {"reduction": str(rng.choice(REDUCTIONS)),
            "distance_function": [None, "pairwise", "cosine"][int(rng.integers(0, 3))],
            "margin": float(rng.choice([1.0, 0.5, 2.0])),
            "swap": bool(rng.random() < 0.5)}
    if a.size and opts["swap"] and rng.random() < 0.3:
        p[...] = a  # a tie of the swap
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = loss_shape_weight(rng, shape[:-1], dtype) if rng.random() < 0.5 else None
    return Sample(case_id("triplet_margin_with_distance[random]", opts),
                  (a.astype(dtype), p.astype(dtype), n.astype(dtype)), opts, sw)


# ---------------------------------------------------------------------------------------------
# references: torch.nn.functional's own functions


def _ref_margin_ranking(torch, inputs, opts, reduction):
    return torch.nn.functional.margin_ranking_loss(*inputs, margin=opts["margin"],
                                                   reduction=reduction)


def _ref_hinge_embedding(torch, inputs, opts, reduction):
    return torch.nn.functional.hinge_embedding_loss(*inputs, margin=opts["margin"],
                                                    reduction=reduction)


def _ref_cosine_embedding(torch, inputs, opts, reduction):
    return torch.nn.functional.cosine_embedding_loss(*inputs, margin=opts["margin"],
                                                     reduction=reduction)


def _ref_triplet_margin(torch, inputs, opts, reduction):
    return torch.nn.functional.triplet_margin_loss(
        *inputs, margin=opts["margin"], p=opts["p"], eps=opts["eps"], swap=opts["swap"],
        reduction=reduction)


def _ref_triplet_distance(torch, inputs, opts, reduction):
    F = torch.nn.functional
    fn = opts["distance_function"]
    if fn == "pairwise":
        fn = F.pairwise_distance
    elif fn == "cosine":
        def fn(x1, x2):
            return 1.0 - F.cosine_similarity(x1, x2, dim=-1)
    return F.triplet_margin_with_distance_loss(
        *inputs, distance_function=fn, margin=opts["margin"], swap=opts["swap"],
        reduction=reduction)


# ---------------------------------------------------------------------------------------------
# specs

_BROADCAST_NOTE = ("torch broadcasts inputs of the same rank against each other (a (1, D) "
                   "against an (N, D)); multiloss raises instead, as for every loss: broadcast "
                   "explicitly if it is meant.")

#: torch's integer and bool inputs, converted here (LossSpec.converts) where torch computes
#: partly in the integer dtype
_CONVERTED_NOTE = ("Integer and bool inputs are converted to the floating dtype before the loss, "
                   "as torch promotes them; torch computes some steps in the integer dtype, "
                   "where uint8 wraps (a uint8 label 255 reads as -1, products overflow): "
                   "multiloss gives the loss of the values as floats. ")
_MIXED_NOTE = ("Mixed floating inputs are computed in their common dtype, which is the result's "
               "dtype (torch's kernel returns the input's dtype here). ")

register(LossSpec(
    name="margin_ranking",
    converts={"input1": ("iu", "float"), "input2": ("iu", "float"), "target": ("iu", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Margin ranking loss: input1 should rank above input2 where target = 1, below "
            "where target = -1.",
    aliases=("margin_ranking_loss", "MarginRankingLoss"),
    inputs=(
        InputSpec("input1", "scores, any shape"),
        InputSpec("input2", "scores, the shape of input1"),
        InputSpec("target", "labels +1 / -1 (any real value is used as is), the shape of "
                  "input1; floating or signed integer. torch differentiates a floating target"),
    ),
    options=(_margin(0.0),),
    formula=("l = max(0, -y (x1 - x2) + margin) (torch's clamp_min: the gradient passes at a tie, "
             "z == 0 exactly). d l / d y = -(x1 - x2) where the hinge is active."),
    reference_name="torch.nn.functional.margin_ranking_loss (torch 2.13)",
    notes=(_CONVERTED_NOTE +
           f"{_BROADCAST_NOTE} A 0-d problem is allowed (loss of shape ()). A bool target "
           "raises TypeError, as torch (which cannot negate a bool tensor). jnp.maximum would "
           "split the gradient at a tie 0.5/0.5."),
    check=_margin_ranking_check,
    samples=_margin_ranking_samples,
    random_sample=_margin_ranking_random,
    reference=_ref_margin_ranking,
    normalizer=_ones_normalizer(lambda inputs: np.shape(inputs[0])),
))

register(LossSpec(
    name="hinge_embedding",
    converts={"target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Hinge embedding loss: x where target = 1, max(0, margin - x) where target = -1 "
            "(x is typically a distance).",
    aliases=("hinge_embedding_loss", "HingeEmbeddingLoss"),
    inputs=(
        InputSpec("input", "distances (or any scores), any shape"),
        InputSpec("target", "labels +1 / -1, the input's shape; floating or signed integer. "
                  "Not differentiated (it selects a branch)", differentiable=False),
    ),
    options=(_margin(1.0),),
    formula=("l = [y != 1] max(0, margin - x) + [y != -1] x: a target outside {-1, 1} gets both "
             "terms. The gradient passes at margin - x == 0 exactly (torch's clamp_min)."),
    reference_name="torch.nn.functional.hinge_embedding_loss (torch 2.13)",
    notes=(_CONVERTED_NOTE +
           _MIXED_NOTE +
           "torch broadcasts the target against the input (any ranks); multiloss raises. "
           "Integer and bool targets are compared as floats, as torch compares them (True "
           "is 1, False is 0: a False target gets both terms)."),
    check=_hinge_embedding_check,
    samples=_hinge_embedding_samples,
    random_sample=_hinge_embedding_random,
    reference=_ref_hinge_embedding,
    normalizer=_ones_normalizer(lambda inputs: np.shape(inputs[0])),
))

register(LossSpec(
    name="cosine_embedding",
    converts={"input1": ("iub", "float"), "input2": ("iub", "float"), "target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Cosine embedding loss: 1 - cos(x1, x2) where target = 1, max(0, cos - margin) "
            "where target = -1.",
    aliases=("cosine_embedding_loss", "CosineEmbeddingLoss"),
    inputs=(
        InputSpec("input1", "embeddings, (N, D), or (D,) unbatched"),
        InputSpec("input2", "embeddings, the shape of input1"),
        InputSpec("target", "labels +1 / -1, (N,) (0-d for unbatched inputs); floating or "
                  "signed integer. Not differentiated (it selects a branch)",
                  differentiable=False),
    ),
    options=(_margin(0.0, doc="the margin of the target = -1 branch; torch suggests [-1, 1] "
                     "and accepts any value, as does multiloss"),),
    formula=("cos = sum(x1 x2) / sqrt((sum(x1^2) + e) (sum(x2^2) + e)), e = float32(1e-12) "
             "(torch's EPSILON, a C++ float: 9.99999996e-13 in float64).\n"
             "l = 1 - cos where y == 1; max(0, cos - margin) where y == -1; 0 for any other "
             "target. A zero vector has cos = 0 and the finite gradient x2 / sqrt(e (|x2|^2 + e))."),
    reference_name="torch.nn.functional.cosine_embedding_loss (torch 2.13)",
    notes=(_CONVERTED_NOTE +
           _MIXED_NOTE +
           f"{_BROADCAST_NOTE} The target must be (N,) for (N, D) inputs and 0-d for (D,) "
           "inputs (torch likewise). The loss's shape is the target's."),
    check=_cosine_embedding_check,
    samples=_cosine_embedding_samples,
    random_sample=_cosine_embedding_random,
    reference=_ref_cosine_embedding,
    normalizer=_ones_normalizer(lambda inputs: np.shape(inputs[2])),
))

register(LossSpec(
    name="triplet_margin",
    converts={"anchor": ("iu", "float"), "positive": ("iu", "float"), "negative": ("iu", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Triplet margin loss with the p-norm distance: the anchor should be nearer the "
            "positive than the negative by the margin.",
    aliases=("triplet_margin_loss", "TripletMarginLoss", "triplet", "triplet_loss"),
    inputs=(
        InputSpec("anchor", "embeddings, (N, D) or (D,) unbatched (any (..., D): the distance "
                  "is over the last axis)"),
        InputSpec("positive", "embeddings, the anchor's shape"),
        InputSpec("negative", "embeddings, the anchor's shape"),
    ),
    options=(
        _margin(1.0, positive=True),
        Option("p", 2.0, "the norm degree of the distance (torch.pairwise_distance's p)",
               real(0.0, lo_open=True), allowed="float > 0 (inf allowed)"),
        Option("eps", 1e-6, "added to the difference inside the norm: d = ||a - b + eps||_p",
               real(), allowed="float"),
        SWAP,
    ),
    formula=("d(a, b) = ||a - b + eps||_p over the last axis (torch.pairwise_distance); "
             "d_neg = min(d(a, n), d(p, n)) with swap, else d(a, n);\n"
             "l = max(0, margin + d(a, p) - d_neg). Gradients are torch's: the hinge passes at "
             "0, a zero-length difference (eps=0) gets 0, an inf norm splits between its "
             "maxima, the swap splits 0.5/0.5 at a tie."),
    reference_name="torch.nn.functional.triplet_margin_loss (torch 2.13)",
    notes=(f"{_BROADCAST_NOTE} margin <= 0 raises (torch too). p <= 0 raises (torch computes "
           "a count (p=0, no gradient) or a negative-degree 'norm'); p=inf on an empty last "
           "axis raises (torch too). The loss's shape is the anchor's without its last axis."),
    check=_triplet_margin_check,
    samples=_triplet_margin_samples,
    random_sample=_triplet_margin_random,
    reference=_ref_triplet_margin,
    normalizer=_ones_normalizer(lambda inputs: np.shape(inputs[0])[:-1]),
))

register(LossSpec(
    name="triplet_margin_with_distance",
    converts={"anchor": ("iub", "float"), "positive": ("iub", "float"), "negative": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Triplet margin loss with a distance function of your choice.",
    aliases=("triplet_margin_with_distance_loss", "TripletMarginWithDistanceLoss"),
    inputs=(
        InputSpec("anchor", "embeddings, (N, D) or (D,) unbatched (any (..., D))"),
        InputSpec("positive", "embeddings, the anchor's shape"),
        InputSpec("negative", "embeddings, the anchor's shape"),
    ),
    options=(
        Option("distance_function", None,
               "None or 'pairwise': torch.pairwise_distance (p=2, eps=1e-6); 'cosine': "
               "1 - cosine_similarity over the last axis (torch's eps=1e-8 clamp of each norm); "
               "or a callable (x1, x2) -> distances of the backend's arrays (a JAX function on "
               "'jax', a torch function on 'torch'): it receives two arrays of the anchor's "
               "shape, (N, D) (or (D,)), and must return (N,) (or ()). A callable is a static "
               "option (hashable; JAX traces it once per shape)",
               _distance_function, allowed="None | 'pairwise' | 'cosine' | callable"),
        _margin(1.0, positive=True),
        SWAP,
    ),
    formula=("l = max(0, margin + d(a, p) - d_neg), d_neg = min(d(a, n), d(p, n)) with swap, "
             "else d(a, n).\n'cosine': d = 1 - sum((x1 / max(||x1||, 1e-8)) * (x2 / "
             "max(||x2||, 1e-8))), the clamp outside autograd as in torch 2.13 (at x1 = 0, "
             "d cos / d x1 = x2 / (max(||x2||, 1e-8) 1e-8))."),
    reference_name="torch.nn.functional.triplet_margin_with_distance_loss (torch 2.13)",
    notes=(f"{_BROADCAST_NOTE} margin <= 0 raises (torch too). torch's documented example "
           "distance, 1 - F.cosine_similarity(x1, x2), reduces over dim=1 and fails on "
           "unbatched inputs; 'cosine' reduces over the last axis. A callable returning another "
           "shape than the anchor's without its last axis raises ValueError."),
    check=_triplet_distance_check,
    samples=_triplet_distance_samples,
    random_sample=_triplet_distance_random,
    reference=_ref_triplet_distance,
    normalizer=_ones_normalizer(lambda inputs: np.shape(inputs[0])[:-1]),
))
