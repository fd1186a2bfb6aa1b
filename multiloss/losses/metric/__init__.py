"""Metric-learning losses with a learnable class matrix: arcface and cosface (additive angular
and additive cosine margins on normalised embeddings against normalised class vectors), as
pytorch-metric-learning's ``ArcFaceLoss`` and ``CosFaceLoss``. Specs only; implementations in
``_jax.py`` and ``_torch.py``; the learnable-parameter modules are ``multiloss.nn.ArcFace`` /
``TorchArcFace`` and ``multiloss.nn.CosFace`` / ``TorchCosFace``.

Measured on pytorch-metric-learning 2.9.0 with torch 2.13.0 (float64, ``torch.autograd.grad``):

- the class matrix ``W`` has shape (embedding_size, num_classes), one column per class, and is
  initialised from N(0, 1) (``torch.nn.init.normal_``);
- embeddings and the columns of ``W`` are normalised by ``F.normalize`` (eps 1e-12): a zero
  embedding has every cosine 0 and the gradient ``g / 1e-12``;
- arcface's angle is ``acos(clamp(cos, -1, 1))``, without an epsilon: where the target cosine
  is exactly 1 or -1 the gradient is not finite (NaN in that embedding's row and that class's
  column of ``W``); where rounding puts it beyond 1, clamp's gradient is 0;
- arcface replaces ``cos(theta + m)`` by ``cos(theta) - m sin(m)`` where ``theta > pi - m``
  (insightface's rule); the margin is in degrees;
- the default reducer, ``MeanReducer``, is the mean of the per-sample losses: the contract's
  "mean"; an empty batch gives NaN.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, real, register
from .._common import (
    REDUCTIONS,
    case_id,
    check_embeddings_labels,
    expect_float,
    grid,
    loss_shape_weight,
)

FAMILY = "metric"

#: The reference library's version the semantics were read from and measured on.
PML_VERSION = "2.9.0"

#: F.normalize's default eps: embeddings and class vectors are divided by max(||v||, eps).
NORMALIZE_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# checks


def _check(named, opts):
    e, y, w = named["embeddings"], named["labels"], named["class_weight"]
    expect_float("embeddings", e)
    expect_float("class_weight", w)
    if y.kind not in "iu":
        raise TypeError(f"labels: expected an integer array of class indices, got {y.describe()}")
    if e.ndim != 2:
        raise ValueError(f"embeddings: expected shape (N, D), got shape {e.shape}")
    n, d = e.shape
    if y.shape != (n,):
        raise ValueError(
            f"labels: expected shape ({n},) (one class index per embedding), got shape {y.shape}"
        )
    if w.ndim != 2 or w.shape[0] != d:
        hint = ""
        if w.ndim == 2 and w.shape[1] == d:
            hint = (" (a (num_classes, embedding_size) matrix? multiloss uses "
                    "pytorch-metric-learning's layout: pass its transpose)")
        raise ValueError(
            f"class_weight: expected shape (D, C) = (embedding_size, num_classes) with D = {d} "
            f"(the embeddings' last axis), got shape {w.shape}{hint}"
        )
    if w.shape[1] == 0:
        raise ValueError(f"class_weight: expected at least one class (column), got shape "
                         f"{w.shape}")
    return (n,)


def _check_labels(values, infos, opts):
    """Class indices in [0, C), C = class_weight.shape[1] (read on concrete values only)."""
    t = values.get("labels")
    if t is None or t.size == 0:
        return
    n_classes = infos["class_weight"].shape[1]
    bad = (t < 0) | (t >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"labels: expected class indices in [0, {n_classes}) (num_classes = "
            f"class_weight.shape[1]), got {t[i]} at index {i}"
        )


# ---------------------------------------------------------------------------------------------
# options


def _finite(lo, hi=None, lo_open=False):
    base = real(lo, hi, lo_open=lo_open)

    def check(name, value):
        v = base(name, value)
        if math.isinf(v):
            raise ValueError(f"{name}: expected a finite value, got {value!r}")
        return v

    return check


SCALE = Option("scale", 64.0, "s, the factor on every logit (pytorch-metric-learning's default "
               "64)", _finite(0.0, lo_open=True), allowed="finite float > 0")

ARC_MARGIN = Option(
    "margin", 28.6,
    "the additive angular margin m, in DEGREES as pytorch-metric-learning (28.6 degrees = the "
    "ArcFace paper's 0.5 rad); a value in (0, 1) warns (radians given for degrees?)",
    real(0.0, 90.0), allowed="float in [0, 90] (degrees)")

COS_MARGIN = Option(
    "margin", 0.35, "the additive cosine margin m, subtracted from the target class's cosine",
    real(0.0, 1.0), allowed="float in [0, 1]")


def _arc_warn(opts):
    if 0.0 < opts["margin"] < 1.0:
        warnings.warn(
            f"arcface: margin={opts['margin']!r} is in degrees (pytorch-metric-learning's unit); "
            f"for {opts['margin']!r} rad pass margin={math.degrees(opts['margin']):.4g}",
            UserWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------
# samples


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def _row_loss(kind, row, label, w, margin, scale):
    """One row's loss in NumPy float64 (the formula, to choose well-conditioned samples)."""
    cos = np.array([_cos(row, w[:, k]) for k in range(w.shape[1])])
    c = cos[label]
    if kind == "arcface":
        m = math.radians(margin)
        theta = math.acos(min(max(c, -1.0), 1.0))
        t = math.cos(theta + m) if theta <= math.pi - m else math.cos(theta) - m * math.sin(m)
    else:
        t = c - margin
    z = scale * np.where(np.arange(len(cos)) == label, t, cos)
    return float(np.log(np.sum(np.exp(z - z.max()))) - (z[label] - z.max()))


def _data(rng, dtype, n, d, c, kind, margin, scale, max_cos=0.9, labels_dtype=np.int64,
          target_cos=None):
    """Embeddings (N, D) of random norms, labels (N,), class matrix (D, C) from N(0, 1) (the
    modules' initialisation), every row well-conditioned (redrawn until it is):

    - its target cosine within [-max_cos, max_cos] (or ``target_cos``, within rounding): the
      gradient of acos, 1 / sqrt(1 - cos^2), turns the last-bit differences of the two
      backends' matrix products into relative errors of about ulp / (1 - cos^2), which near
      +-1 no tolerance can judge (the exact +-1 cases are built apart, from exact values);
    - its loss not in (0, 1e-3): a saturated softmax's 1 - p, and so the loss and its
      gradient, keep only the last bits of p (relative error ulp / (1 - p)); where the loss
      rounds to 0 exactly (or C = 1), both backends give exact zeros."""
    w = rng.normal(size=(d, c))
    labels = rng.integers(0, c, size=n)
    e = np.empty((n, d))
    for i in range(n):
        u = w[:, labels[i]] / np.linalg.norm(w[:, labels[i]])
        for _ in range(1000):
            row = rng.normal(size=d)
            if target_cos is not None:
                v = row - (row @ u) * u
                row = target_cos * u + math.sqrt(1 - target_cos**2) * v / np.linalg.norm(v)
            row = row * rng.uniform(0.3, 3.0)
            loss = _row_loss(kind, row, labels[i], w, margin, scale)
            if abs(_cos(row, u)) <= max_cos and not 0.0 < loss < 1e-3:
                break
        e[i] = row
    return e.astype(dtype), labels.astype(labels_dtype), w.astype(dtype)


def _exact(dtype, signs=(1.0, -1.0)):
    """Exact target cosines of +1 and -1: embeddings on the first axis against a class vector
    on the first axis (every normalisation and product exact on both backends), beside rows
    of ordinary cosines."""
    w = np.array([[2.0, 0.5, -1.0],
                  [0.0, 1.0, 0.5],
                  [0.0, -0.5, 1.0],
                  [0.0, 0.25, 0.75]])
    rows = [[1.5 * s, 0.0, 0.0, 0.0] for s in signs]
    rows += [[0.3, -0.7, 0.5, 0.2], [-0.4, 0.1, 0.9, -0.6]]
    labels = [0] * len(signs) + [1, 2]
    return (np.array(rows, dtype), np.array(labels, np.int64), w.astype(dtype))


def _samples(name, defaults, margins):
    def samples(rng, dtype):
        def data(n, d, c, margin=defaults["margin"], scale=defaults["scale"], **kw):
            return _data(rng, dtype, n, d, c, name, margin, scale, **kw)

        for g in grid(reduction=REDUCTIONS, sw=(False, True)):
            opts = {"reduction": g["reduction"]}
            sw = loss_shape_weight(rng, (6,), dtype) if g["sw"] else None
            yield Sample(case_id(f"{name}[default]", {**opts, "sw": g["sw"]}), data(6, 5, 4),
                         opts, sw)
        for margin in margins:
            for scale in (1.0, 64.0):
                opts = {"reduction": "none", "margin": margin, "scale": scale}
                yield Sample(case_id(name, opts), data(6, 4, 5, margin, scale), opts)
        yield Sample(f"{name}[scale=16,reduction=mean]", data(8, 3, 6, scale=16.0),
                     {"scale": 16.0})
        # more classes than dimensions, int32 labels, one sample, one class
        yield Sample(f"{name}[C>D,int32-labels,reduction=sum]",
                     data(7, 3, 10, labels_dtype=np.int32), {"reduction": "sum"})
        yield Sample(f"{name}[N=1,reduction=mean]", data(1, 4, 3), {})
        yield Sample(f"{name}[C=1,reduction=none]", data(3, 4, 1), {"reduction": "none"})
        # target cosines near +1 and -1 (theta near pi: arcface's branch cos(theta) - m sin(m)
        # for theta > pi - m); a scale that keeps the softmax from saturating
        for tc in (0.95, -0.95):
            opts = {"reduction": "none", "scale": 4.0}
            yield Sample(case_id(f"{name}[target-cos={tc}]", opts),
                         data(4, 4, 3, scale=4.0, max_cos=1.0, target_cos=tc), opts)
        # exact target cosines +1 (theta = 0) and -1 (theta = pi): acos' is -inf there
        for red, sw in (("none", False), ("mean", False), ("sum", True)):
            yield Sample(case_id(f"{name}[exact-cos=+-1]", {"reduction": red, "sw": sw}),
                         _exact(dtype), {"reduction": red},
                         np.array([0.5, 1.0, 2.0, 0.25], dtype) if sw else None)
        # zero vectors: F.normalize's eps (a zero embedding; a zero class vector)
        e, labels, w = data(4, 3, 3)
        e[1] = 0.0
        yield Sample(f"{name}[zero-embedding,reduction=none]", (e, labels, w),
                     {"reduction": "none"})
        e, labels, w = data(4, 3, 3)
        w[:, 2] = 0.0
        yield Sample(f"{name}[zero-class-vector,reduction=mean]", (e, labels, w), {})
        # a NaN embedding: its row (and every column of the class matrix's gradient) is NaN
        e, labels, w = data(3, 3, 3)
        e[0, 1] = np.nan
        yield Sample(f"{name}[nan-embedding,reduction=none]", (e, labels, w),
                     {"reduction": "none"})
        # empty: a batch of no sample, all sample weights 0
        e, labels, w = data(3, 4, 3)
        empty = (np.zeros((0, 4), dtype), np.zeros(0, np.int64), w)
        for red in ("mean", "sum", "sum_over_batch_size"):
            yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red})
        for emp in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={emp}]", (e, labels, w),
                         {"empty_reduction": emp}, np.zeros(3, dtype))

    return samples


#: The scales of the random samples. float32 stops at 30: the scale multiplies the last-bit
#: differences of the two backends' cosines (XLA's float32 acos is within 1.85 ulp, torch's
#: SLEEF acos within 0.8; the matrix products sum in other orders) into the logits, and the
#: relative gradient error grows as scale * ulp * p / (1 - p) with p the target's softmax
#: probability: at scale 64 about one random float32 case in 600 came within 10% of the
#: float32 tolerance (6.9e-6 of 7.6e-6). The grid keeps scale 64 (the default) in float32.
RANDOM_SCALES = {"float64": (1.0, 8.0, 30.0, 64.0), "float32": (1.0, 8.0, 16.0, 30.0)}


def _random(name, margins):
    def random_sample(rng, dtype):
        n = int(rng.integers(0, 7))
        d = int(rng.integers(2, 7))
        c = int(rng.integers(1, 7))
        opts = {"reduction": str(rng.choice(REDUCTIONS)),
                "margin": float(rng.choice(margins)),
                "scale": float(rng.choice(RANDOM_SCALES.get(np.dtype(dtype).name,
                                                            RANDOM_SCALES["float32"])))}
        labels_dtype = np.int32 if rng.random() < 0.3 else np.int64
        inputs = _data(rng, dtype, n, d, c, name, opts["margin"], opts["scale"],
                       labels_dtype=labels_dtype)
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random,n={n},d={d},c={c}]", opts), inputs, opts, sw)

    return random_sample


# ---------------------------------------------------------------------------------------------
# references: pytorch-metric-learning itself


def _pml_reference(cls_name):
    def reference(torch, inputs, opts, reduction):
        from pytorch_metric_learning import losses, reducers

        embeddings, labels, class_weight = inputs
        reducer = {"none": reducers.DoNothingReducer(), "mean": reducers.MeanReducer(),
                   "sum": reducers.SumReducer()}[reduction]
        d, c = class_weight.shape
        # the class matrix is the given tensor (no initialisation drawn from torch's RNG)
        pml = getattr(losses, cls_name)(num_classes=c, embedding_size=d, margin=opts["margin"],
                                        scale=opts["scale"], reducer=reducer,
                                        weight_init_func=lambda w: None)
        del pml.W
        pml.W = class_weight
        out = pml(embeddings, labels.long())
        return out["loss"]["losses"] if reduction == "none" else out

    return reference


def _normalizer(inputs, opts):
    n = np.shape(inputs[0])[0]
    return np.ones(n), np.ones(n)


# ---------------------------------------------------------------------------------------------
# specs

INPUTS = (
    InputSpec("embeddings", "embeddings, (N, D); normalised inside the loss (need not be)"),
    InputSpec("labels", "class indices in [0, C), (N,), integer", differentiable=False),
    InputSpec("class_weight", "the class matrix W, (D, C) = (embedding_size, num_classes) as "
              "pytorch-metric-learning's W: one column per class, normalised inside the loss. "
              "Differentiable (the learnable parameter of multiloss.nn.ArcFace / CosFace)"),
)

_COMMON_FORMULA = (
    "e_i = x_i / max(||x_i||, 1e-12); w_c = W[:, c] / max(||W[:, c]||, 1e-12) (F.normalize);\n"
    "cos_ic = e_i . w_c;  c_i = cos_{i, y_i} (the target class's cosine);\n"
)
_CE_FORMULA = (
    "logits_ic = s * (cos_ic + [c == y_i] (t_i - c_i))  (pytorch-metric-learning adds the "
    "difference: t_i up to rounding);\n"
    "l_i = -log_softmax(logits_i)[y_i]  (per-sample cross-entropy); 'mean' = sum_i l_i / N "
    "(pytorch-metric-learning's default MeanReducer)."
)
_COMMON_NOTES = (
    "pytorch-metric-learning: the class matrix is the module's parameter W, here the input "
    "class_weight of the same (D, C) layout (multiloss.nn's modules hold it as W: a "
    "pytorch-metric-learning state_dict loads into the torch module); it casts W to the "
    "embeddings' dtype, multiloss promotes both to their common dtype. Its miners "
    "(indices_tuple), ref_emb, weight and embedding regularizers and reducers other than the "
    "mean and the sum (e.g. AvgNonZeroReducer) are not here: use reduction='none' and "
    "sample_weight. It raises an IndexError for a label out of range; multiloss raises "
    "ValueError where labels are concrete and gives NaN under a trace."
)

register(LossSpec(
    name="arcface",
    family=FAMILY,
    summary="ArcFace (additive angular margin) loss: cross-entropy over scaled cosines of "
            "normalised embeddings and class vectors, the target's angle increased by m.",
    aliases=("arcface_loss", "arc_face", "additive_angular_margin"),
    inputs=INPUTS,
    options=(ARC_MARGIN, SCALE),
    formula=(
        _COMMON_FORMULA
        + "m = radians(margin);  theta_i = acos(clamp(c_i, -1, 1));\n"
        "t_i = cos(theta_i + m) where theta_i <= pi - m, else cos(theta_i) - m sin(m);\n"
        + _CE_FORMULA
        + "\nGradients are autograd's of these expressions: clamp passes the gradient on "
        "[-1, 1] (the ends included) and none beyond; at c_i = +-1 exactly acos' is -inf and "
        "the gradient is not finite (NaN in row i of d/d embeddings and column y_i of "
        "d/d class_weight), as pytorch-metric-learning's."
    ),
    reference_name=(f"pytorch_metric_learning.losses.ArcFaceLoss (pytorch-metric-learning "
                    f"{PML_VERSION}) with W = class_weight; reducers DoNothingReducer ('none'), "
                    f"MeanReducer ('mean', its default), SumReducer ('sum')"),
    notes=(
        "The margin is in degrees (pytorch-metric-learning's unit; the ArcFace paper's m = 0.5 "
        "is in radians): 28.6 by default. pytorch-metric-learning accepts any margin; "
        "multiloss [0, 90] degrees, and warns for a margin in (0, 1). The ArcFace paper "
        "(Deng et al. 2019) writes s cos(theta + m) for every theta; pytorch-metric-learning, "
        "as the widely copied ArcMarginProduct of insightface's early code, uses cos(theta) - "
        "m sin(m) for theta > pi - m (where cos(theta + m) would rise again), a value that "
        "jumps at theta = pi - m (-1 against -cos(m) - m sin(m)). Those implementations "
        "compute cos(theta + m) as c cos(m) - sqrt(1 - c^2) sin(m), equal in exact arithmetic "
        "to pytorch-metric-learning's cos(acos(c) + m), which multiloss follows operation by "
        "operation (the two round differently). " + _COMMON_NOTES
    ),
    check=_check,
    check_values=_check_labels,
    value_args=("labels",),
    samples=_samples("arcface", {"margin": 28.6, "scale": 64.0}, (0.0, 10.0, 28.6, 57.3, 90.0)),
    random_sample=_random("arcface", (0.0, 5.0, 28.6, 45.0, 90.0)),
    reference=_pml_reference("ArcFaceLoss"),
    normalizer=_normalizer,
    warn=_arc_warn,
))

register(LossSpec(
    name="cosface",
    family=FAMILY,
    summary="CosFace (large margin cosine) loss: cross-entropy over scaled cosines of "
            "normalised embeddings and class vectors, m subtracted from the target's cosine.",
    aliases=("cosface_loss", "cos_face", "large_margin_cosine", "lmcl"),
    inputs=INPUTS,
    options=(COS_MARGIN, SCALE),
    formula=(
        _COMMON_FORMULA
        + "t_i = c_i - m;\n"
        + _CE_FORMULA
    ),
    reference_name=(f"pytorch_metric_learning.losses.CosFaceLoss (pytorch-metric-learning "
                    f"{PML_VERSION}) with W = class_weight; reducers DoNothingReducer ('none'), "
                    f"MeanReducer ('mean', its default), SumReducer ('sum')"),
    notes=(
        "As the CosFace paper (Wang et al. 2018, the large margin cosine loss): s (cos(theta) "
        "- m) for the target. pytorch-metric-learning accepts any margin; multiloss [0, 1]. "
        + _COMMON_NOTES
    ),
    check=_check,
    check_values=_check_labels,
    value_args=("labels",),
    samples=_samples("cosface", {"margin": 0.35, "scale": 64.0}, (0.0, 0.1, 0.35, 1.0)),
    random_sample=_random("cosface", (0.0, 0.1, 0.35, 0.5, 1.0)),
    reference=_pml_reference("CosFaceLoss"),
    normalizer=_normalizer,
))


# =============================================================================================
# contrastive: pairs with margins (Hadsell et al. 2006), as pytorch-metric-learning's
# ContrastiveLoss with its defaults (LpDistance: normalised embeddings, p = 2; the reducer
# AvgNonZeroReducer)
#
# Measured on pytorch-metric-learning 2.9.0 with torch 2.13.0 (float64, torch.autograd.grad):
#
# - every ordered pair (i, j), i != j, of the batch is a positive pair (same label) or a
#   negative one; the distance is torch.cdist of the F.normalize'd embeddings (eps 1e-12; cdist's
#   gradient is 0 where the distance is 0);
# - pair losses relu(d - pos_margin) and relu(neg_margin - d) (F.relu: gradient 0 at the tie);
# - the loss dict has two sub-losses, "pos_loss" and "neg_loss"; each is reduced on its own
#   (AvgNonZeroReducer: the mean of its losses > 0, 0 if none is) and the two results are
#   summed (MultipleReducers); MeanReducer and SumReducer likewise per sub-loss;
# - NaN pair losses fail "> 0" and are dropped by AvgNonZeroReducer.


def _contrastive_check(named, opts):
    n = check_embeddings_labels(named)
    return (n, n)


def _contrastive_warn(opts):
    if opts["neg_margin"] <= opts["pos_margin"]:
        warnings.warn(
            f"contrastive: neg_margin={opts['neg_margin']!r} <= pos_margin="
            f"{opts['pos_margin']!r}: no distance satisfies both margins",
            UserWarning, stacklevel=4)


POS_MARGIN = Option("pos_margin", 0.0, "positive pairs are penalised beyond this distance "
                    "(pytorch-metric-learning's default 0)", _finite(0.0),
                    allowed="finite float >= 0")
NEG_MARGIN = Option("neg_margin", 1.0, "negative pairs are penalised within this distance "
                    "(pytorch-metric-learning's default 1; the distance of unit vectors is at "
                    "most 2)", _finite(0.0), allowed="finite float >= 0")


def _pair_masks(labels):
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    eye = np.eye(len(labels), dtype=bool)
    return same & ~eye, ~same


def contrastive_weights(loss, labels):
    """The Terms' weight d, count c and scale r of the (N, N) pair losses (NumPy; the
    backends compute the same): with n+ and n- the numbers of positive and negative pairs
    whose loss is > 0, and k the number of those two groups that are not empty,
    r = 1 / n+ on positive pairs, 1 / n- on negative ones (0 on the diagonal) and
    d = [l > 0] r / k: sum(d) = 1 (0 where no pair loss is > 0), so that
    'mean' = sum(r l) / sum(d) = sum_pos l / n+ + sum_neg l / n- (AvgNonZeroReducer per
    sub-loss, summed)."""
    pos, neg = _pair_masks(labels)
    nz = (np.asarray(loss) > 0) | np.isnan(loss)  # a NaN loss counts (NaN is not hidden)
    n_pos, n_neg = (pos & nz).sum(), (neg & nz).sum()
    r = pos / max(n_pos, 1) + neg / max(n_neg, 1)
    k = max(int(n_pos > 0) + int(n_neg > 0), 1)
    return nz * r / k, (pos | neg).astype(np.float64), r


def _contrastive_unit(e):
    e = np.asarray(e, np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), NORMALIZE_EPS)


def _contrastive_far_from_ties(e, y, pos_margin, neg_margin, tol):
    """No pair's distance within tol of its margin (unless exactly at it): AvgNonZeroReducer
    counts the losses > 0, which a last-bit difference of two backends' distances would flip."""
    u = _contrastive_unit(e)
    d = np.linalg.norm(u[:, None, :] - u[None, :, :], axis=-1)
    pos, neg = _pair_masks(y)
    gap = np.where(pos, d - pos_margin, np.where(neg, neg_margin - d, np.inf))
    return not np.any((np.abs(gap) < tol) & (gap != 0))


def _contrastive_data(rng, dtype, n_groups, per_group, d, pos_margin=0.0, neg_margin=1.0,
                      spread=0.8, labels_dtype=np.int64):
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-7
    for _ in range(500):
        centers = rng.normal(size=(n_groups, d))
        e = np.repeat(centers, per_group, axis=0) + spread * rng.normal(
            size=(n_groups * per_group, d))
        e *= rng.uniform(0.3, 3.0, size=(len(e), 1))
        y = np.repeat(np.arange(n_groups), per_group)
        perm = rng.permutation(len(e))
        e, y = e[perm].astype(dtype), y[perm]
        if _contrastive_far_from_ties(e, y, pos_margin, neg_margin, tol):
            break
    return e, y.astype(labels_dtype)


def _contrastive_exact(dtype):
    """Axis-aligned embeddings (every normalisation and distance exact): identical positives
    (d = 0: the positive hinge's tie at pos_margin = 0), opposite negatives (d = 2: the tie at
    neg_margin = 2) and perpendicular pairs (d = sqrt 2)."""
    e = np.array([[2.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 3.0, 0.0],
                  [0.0, 0.0, 0.25], [0.0, -1.5, 0.0]], dtype)
    y = np.array([0, 0, 1, 1, 2, 2])
    return e, y


def _contrastive_samples(rng, dtype):
    name = "contrastive"

    def data(n_groups=3, per_group=2, d=4, **kw):
        return _contrastive_data(rng, dtype, n_groups, per_group, d, **kw)

    for red in REDUCTIONS:
        for sw in (None, "anchor", "pair"):
            if sw == "pair" and red not in ("mean", "none"):
                continue
            shape = {"anchor": (6, 1), "pair": (6, 6)}.get(sw)
            w = None if sw is None else loss_shape_weight(rng, shape, dtype)
            yield Sample(case_id(f"{name}[default]", {"reduction": red, "sw": sw}), data(),
                         {"reduction": red}, w)
    # pytorch-metric-learning's own AvgNonZeroReducer ("mean" with empty_reduction="nan" is
    # computed natively by the reference), several margins
    for pm, nm in ((0.0, 1.0), (0.2, 0.8), (0.1, 1.5), (0.0, 2.0)):
        opts = {"pos_margin": pm, "neg_margin": nm, "empty_reduction": "nan"}
        yield Sample(case_id(f"{name}[avg-non-zero]", opts),
                     data(3, 3, 5, pos_margin=pm, neg_margin=nm), opts)
    for pm, nm in ((0.3, 1.2), (0.0, 0.5)):
        opts = {"reduction": "none", "pos_margin": pm, "neg_margin": nm}
        yield Sample(case_id(name, opts), data(2, 4, 3, pos_margin=pm, neg_margin=nm), opts)
    # exact distances 0, sqrt 2 and 2: the hinges' ties (pos_margin 0, neg_margin 2)
    for red in ("none", "mean"):
        yield Sample(f"{name}[exact-ties,neg_margin=2,reduction={red}]", _contrastive_exact(dtype),
                     {"reduction": red, "neg_margin": 2.0, "empty_reduction": "nan"})
    # a zero embedding (F.normalize's eps: distance 1 to every other embedding, within rounding:
    # neg_margin 1.3 keeps clear of that tie); int32 labels
    e, y = data(3, 2, 4, neg_margin=1.3, labels_dtype=np.int32)
    e[1] = 0.0
    yield Sample(f"{name}[zero-embedding,int32-labels]", (e, y),
                 {"neg_margin": 1.3, "empty_reduction": "nan"})
    # no positive pair (all labels distinct); no negative pair (one label); singletons
    e, _ = data(3, 2, 4)
    yield Sample(f"{name}[no-positive-pair]", (e, np.arange(6)), {"empty_reduction": "nan"})
    e, _ = data(1, 5, 4)
    yield Sample(f"{name}[no-negative-pair]", (e, np.zeros(5, np.int64)),
                 {"empty_reduction": "nan"})
    # every pair loss 0 (pos_margin 2 and neg_margin 0): pytorch-metric-learning's 0, and
    # the contract's NaN with empty_reduction="nan"
    e, y = data()
    for emp in ("zero", "nan"):
        yield Sample(f"{name}[all-pair-losses-zero,empty={emp}]", (e, y),
                     {"pos_margin": 2.0, "neg_margin": 0.0, "empty_reduction": emp},
                     contract_reference=emp == "nan")
    empty = (np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    for red in ("mean", "sum", "sum_over_batch_size"):
        yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red})
    yield Sample(f"{name}[N=1,reduction=mean]", (e[:1], y[:1]), {})
    for emp in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={emp}]", (e, y),
                     {"empty_reduction": emp}, np.zeros((6, 1), dtype))


def _contrastive_random(rng, dtype):
    n_groups = int(rng.integers(0, 4))
    per_group = int(rng.integers(1, 4))
    d = int(rng.integers(2, 6))
    pm = float(rng.choice([0.0, 0.1, 0.4]))
    nm = float(rng.choice([0.5, 1.0, 1.5, 2.0]))
    e, y = _contrastive_data(rng, dtype, n_groups, per_group, d, pm, nm,
                             labels_dtype=np.int32 if rng.random() < 0.3 else np.int64)
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "pos_margin": pm, "neg_margin": nm}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "nan"
    n = len(y)
    sw = None
    if rng.random() < 0.5:
        sw = loss_shape_weight(rng, (n, 1) if rng.random() < 0.5 else (n, n), dtype)
    # where no pair loss is > 0, pytorch-metric-learning's "mean" is 0: the contract's formula
    # is the reference of empty_reduction="nan" there
    u = _contrastive_unit(e)
    dist = np.linalg.norm(u[:, None, :] - u[None, :, :], axis=-1)
    pos, neg = _pair_masks(y)
    nothing = not np.any((pos & (dist > pm)) | (neg & (dist < nm)))
    return Sample(case_id(f"contrastive[random,n={n},d={d}]", opts), (e, y), opts, sw,
                  contract_reference=nothing)


def _pml_contrastive(torch, embeddings, labels, opts, reduction):
    from pytorch_metric_learning import losses, reducers

    reducer = {"none": reducers.DoNothingReducer(), "mean": None,
               "sum": reducers.SumReducer()}[reduction]  # None: its default, AvgNonZeroReducer
    pml = losses.ContrastiveLoss(pos_margin=opts["pos_margin"], neg_margin=opts["neg_margin"],
                                 reducer=reducer)
    out = pml(embeddings, labels.long())
    if reduction != "none":
        return out
    n = embeddings.shape[0]
    # in the graph (pml's zero), without touching the values: a NaN embedding stays in its
    # own pairs (embeddings * 0 would spread it to every pair)
    mat = embeddings.new_zeros((n, n)) + embeddings[:0].sum()
    for key in ("pos_loss", "neg_loss"):
        part = out[key]
        if torch.is_tensor(part["losses"]):
            a, b = part["indices"]
            mat = mat.index_put((a, b), part["losses"], accumulate=True)
    return mat


def _contrastive_reference(torch, inputs, opts, reduction):
    embeddings, labels = inputs
    return _pml_contrastive(torch, embeddings, labels, opts, reduction)


def _contrastive_normalizer(inputs, opts):
    import torch

    e, y = (torch.from_numpy(np.array(x)) for x in inputs)
    with torch.no_grad():
        loss = _pml_contrastive(torch, e, y, opts, "none").numpy()
    return contrastive_weights(loss, inputs[1])


register(LossSpec(
    name="contrastive",
    family=FAMILY,
    summary="Contrastive (pair margin) loss over every pair of the batch (Hadsell et al. "
            "2006), as pytorch-metric-learning's ContrastiveLoss.",
    aliases=("contrastive_loss", "pair_margin", "hadsell"),
    inputs=(
        InputSpec("embeddings", "embeddings, (N, D); normalised inside the loss (need not be)"),
        InputSpec("labels", "integer labels, (N,): same label, positive pair",
                  differentiable=False),
    ),
    options=(POS_MARGIN, NEG_MARGIN),
    formula=(
        "u_i = x_i / max(||x_i||, 1e-12) (F.normalize);  d_ij = ||u_i - u_j||_2 (torch.cdist; "
        "gradient 0 where d_ij = 0);\n"
        "l_ij = relu(d_ij - pos_margin) for i != j with y_i = y_j (positive pairs),\n"
        "l_ij = relu(neg_margin - d_ij) for y_i != y_j (negative pairs), l_ii = 0:\n"
        "the unreduced loss is the (N, N) matrix of the ordered pairs' losses (each pair twice, "
        "as pytorch-metric-learning);\n"
        "'mean' = sum_pos l / n+ + sum_neg l / n-, n+- = the number of positive / negative "
        "pairs with l > 0 (a term is 0 where its n is 0): pytorch-metric-learning's default "
        "AvgNonZeroReducer applied to each sub-loss and summed. As Terms: scale r = 1/n+ on "
        "positive pairs, 1/n- on negative ones; weight d = [l > 0] r / k, k the number of "
        "non-empty groups (sum d = 1); count c = [i != j];\n"
        "'sum' = sum of every pair loss (SumReducer); 'sum_over_batch_size' = sum / (N (N - 1))."
    ),
    reference_name=(f"pytorch_metric_learning.losses.ContrastiveLoss (pytorch-metric-learning "
                    f"{PML_VERSION}) with its default LpDistance; reducers DoNothingReducer "
                    f"('none', its two sub-losses scattered into the (N, N) matrix), "
                    f"AvgNonZeroReducer ('mean', its default), SumReducer ('sum')"),
    notes=(
        "'mean' is pytorch-metric-learning's default AvgNonZeroReducer, per sub-loss and "
        "summed, not a plain mean over pairs (its MeanReducer, the mean over all positive "
        "pairs plus the mean over all negative pairs, is not offered: use reduction='none'). "
        "With a sample_weight s (broadcast to the (N, N) pairs; s[:, None] weights anchors) "
        "'mean' is sum(s r l) / sum(s d): for a constant s it is the unweighted value. "
        "empty_reduction defaults to 'zero': where no pair loss is > 0 pytorch-metric-learning "
        "returns 0 ('nan' gives NaN). A NaN embedding makes its pairs' losses NaN: "
        "AvgNonZeroReducer drops them silently (NaN > 0 is false), multiloss returns NaN. "
        "torch.cdist switches to a matrix-product formula for batches over 25 embeddings "
        "(distances with a rounding error of about sqrt(eps) between nearly identical "
        "embeddings); multiloss always takes the direct difference. Only the default distance "
        "(LpDistance, normalised, p = 2, power 1) is supported; miners (indices_tuple) and "
        "ref_emb are not. The loss couples the rows of a batch: a micro-batch or shard sees "
        "its own pairs only."
    ),
    check=_contrastive_check,
    samples=_contrastive_samples,
    random_sample=_contrastive_random,
    reference=_contrastive_reference,
    normalizer=_contrastive_normalizer,
    warn=_contrastive_warn,
    default_empty_reduction="zero",
    batch_coupled=True,
))


# =============================================================================================
# multi_similarity (Wang et al. 2019), as pytorch-metric-learning's MultiSimilarityLoss with its
# defaults (CosineSimilarity on normalised embeddings, MeanReducer)
#
# Measured on pytorch-metric-learning 2.9.0: per anchor (an "element" loss of shape (N, 1),
# squeezed here), the log-sum-exps of lmu.logsumexp with add_one=True (a 0 appended to the
# row), masked entries at finfo.min and 0 for a row without any kept entry.


def _ms_samples(rng, dtype):
    name = "multi_similarity"

    def data(n_groups=3, per_group=3, d=4, **kw):
        from ..self_supervised import views

        return views(rng, n_groups, per_group, d, dtype, **kw)

    for red in REDUCTIONS:
        for with_sw in (False, True):
            sw = loss_shape_weight(rng, (9,), dtype) if with_sw else None
            yield Sample(case_id(f"{name}[default]", {"reduction": red, "sw": with_sw}), data(),
                         {"reduction": red}, sw)
    # pytorch-metric-learning's MeanReducer itself ("mean" with empty_reduction="nan")
    for alpha, beta, base in ((2.0, 50.0, 0.5), (1.0, 10.0, 0.0), (5.0, 80.0, 0.8)):
        opts = {"alpha": alpha, "beta": beta, "base": base, "empty_reduction": "nan"}
        yield Sample(case_id(f"{name}[pml-mean]", opts), data(2, 4, 5), opts)
    opts = {"reduction": "none", "alpha": 0.5, "beta": 20.0, "base": -0.2}
    yield Sample(case_id(name, opts), data(3, 2, 3), opts)
    # singletons (no positive), a zero embedding (cosines 0), int32 labels, norms 1e4 / 1e-6
    e, y = data(2, 3, 4)
    e = np.concatenate([e, rng.normal(size=(2, 4)).astype(dtype)])
    y = np.concatenate([y, [7, 8]]).astype(np.int32)
    e[0] = 0.0
    e[1] *= 1e4
    e[2] *= 1e-6
    for red in ("none", "mean"):
        yield Sample(f"{name}[singletons,zero-embedding,norms,reduction={red}]", (e, y),
                     {"reduction": red, "empty_reduction": "nan"})
    # no positive pair, no negative pair
    e, _ = data(2, 3, 4)
    yield Sample(f"{name}[no-positive-pair]", (e, np.arange(6)), {"reduction": "none"})
    yield Sample(f"{name}[no-negative-pair]", (e, np.zeros(6, np.int64)),
                 {"empty_reduction": "nan"})
    # empty batch: pytorch-metric-learning's 0 (the default empty_reduction="zero")
    empty = (np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    for red in ("mean", "sum", "sum_over_batch_size"):
        yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red})
    yield Sample(f"{name}[N=1,reduction=mean]", (e[:1], np.zeros(1, np.int64)),
                 {"empty_reduction": "nan"})
    e, y = data()
    for emp in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={emp}]", (e, y),
                     {"empty_reduction": emp}, np.zeros(9, dtype))


def _ms_random(rng, dtype):
    from ..self_supervised import views

    n_groups, per_group, d = int(rng.integers(0, 4)), int(rng.integers(1, 4)), \
        int(rng.integers(2, 6))
    e, y = views(rng, n_groups, per_group, d, dtype)
    opts = {"reduction": str(rng.choice(REDUCTIONS)),
            "alpha": float(rng.choice([0.5, 2.0, 5.0])),
            "beta": float(rng.choice([10.0, 50.0, 80.0])),
            "base": float(rng.choice([0.0, 0.5, 0.8]))}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "nan"
    n = len(y)
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    return Sample(case_id(f"multi_similarity[random,n={n},d={d}]", opts), (e, y), opts, sw,
                  contract_reference=n == 0)


def _ms_reference(torch, inputs, opts, reduction):
    from pytorch_metric_learning import losses, reducers

    embeddings, labels = inputs
    reducer = {"none": reducers.DoNothingReducer(), "mean": None,
               "sum": reducers.SumReducer()}[reduction]  # None: its default, MeanReducer
    out = losses.MultiSimilarityLoss(alpha=opts["alpha"], beta=opts["beta"], base=opts["base"],
                                     reducer=reducer)(embeddings, labels.long())
    if reduction != "none":
        return out
    losses_ = out["loss"]["losses"]
    if not torch.is_tensor(losses_):  # pml's zero_losses(): no pair at all
        return (embeddings * 0).sum(dim=1)
    return losses_.reshape(-1)


def _ms_normalizer(inputs, opts):
    n = np.shape(inputs[0])[0]
    return np.ones(n), np.ones(n)


def _positive_finite(name, value):
    v = real(0.0, lo_open=True)(name, value)
    if math.isinf(v):
        raise ValueError(f"{name}: expected a finite value > 0, got {value!r}")
    return v


register(LossSpec(
    name="multi_similarity",
    family=FAMILY,
    summary="Multi-similarity loss (Wang et al. 2019) over every pair of the batch, as "
            "pytorch-metric-learning's MultiSimilarityLoss.",
    aliases=("multi_similarity_loss", "ms_loss", "multisimilarity"),
    inputs=(
        InputSpec("embeddings", "embeddings, (N, D); normalised inside the loss (need not be)"),
        InputSpec("labels", "integer labels, (N,): same label, positive pair",
                  differentiable=False),
    ),
    options=(
        Option("alpha", 2.0, "the scale of the positive pairs' term (pytorch-metric-learning's "
               "default 2)", _positive_finite, allowed="finite float > 0"),
        Option("beta", 50.0, "the scale of the negative pairs' term (default 50)",
               _positive_finite, allowed="finite float > 0"),
        Option("base", 0.5, "lambda, the similarity offset of both terms (default 0.5)",
               _finite(None), allowed="finite float"),
    ),
    formula=(
        "u_i = x_i / max(||x_i||, 1e-12) (F.normalize);  s_ij = u_i . u_j (CosineSimilarity);\n"
        "l_i = (1/alpha) log(1 + sum_{p in P(i)} e^{-alpha (s_ip - base)})\n"
        "    + (1/beta)  log(1 + sum_{n in N(i)} e^{beta (s_in - base)}),\n"
        "P(i) = {j != i: y_j = y_i}, N(i) = {k: y_k != y_i}; each log-sum-exp stable (its "
        "row max subtracted), a term with no pair is 0;\n"
        "'mean' = sum_i l_i / N (pytorch-metric-learning's default MeanReducer)."
    ),
    reference_name=(f"pytorch_metric_learning.losses.MultiSimilarityLoss (pytorch-metric-learning "
                    f"{PML_VERSION}); reducers DoNothingReducer ('none'), MeanReducer ('mean', "
                    f"its default), SumReducer ('sum')"),
    notes=(
        "Without a miner: every pair of the batch (the paper's pair mining, "
        "MultiSimilarityMiner, is pytorch-metric-learning's separate miner; pass the mined "
        "pairs' losses yourself). empty_reduction defaults to 'zero': an empty batch gives 0, "
        "as pytorch-metric-learning. The loss couples the rows of a batch: a micro-batch or "
        "shard sees its own pairs only."
    ),
    check=_contrastive_check,
    samples=_ms_samples,
    random_sample=_ms_random,
    reference=_ms_reference,
    normalizer=_ms_normalizer,
    default_empty_reduction="zero",
    batch_coupled=True,
))
