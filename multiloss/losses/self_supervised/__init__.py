"""Self-supervised contrastive losses over the pairs of a batch: ``ntxent`` (= ``info_nce``,
SimCLR's NT-Xent, as ``optax.ntxent``) and ``supcon`` (Khosla et al. 2020, as
pytorch-metric-learning's ``SupConLoss``). Specs only; implementations in ``_jax.py`` and
``_torch.py``.

Both are called ``loss(embeddings, labels)``: embeddings (N, D), labels (N,) integer, two
embeddings with the same label form a positive pair (SimCLR's two views of one image get one
label). The unreduced loss has one entry per anchor (embedding), shape (N,), so that a
``sample_weight`` of shape (N,) weights anchors. The loss of an anchor depends on the whole
batch (its negatives are the other embeddings): these losses are ``batch_coupled``, and a
micro-batch or a shard sees the pairs inside it only (as optax and pytorch-metric-learning,
without an all-gather).

Measured on optax 0.2.8 (JAX 0.10, x64) and pytorch-metric-learning 2.9.0 (torch 2.13):

- ``optax.ntxent``: cosine similarities with optax's ``cosine_similarity(epsilon=finfo.eps)``,
  i.e. each embedding divided by ``sqrt(max(||x||^2, eps))`` (a zero embedding has cosines 0 and
  a finite gradient of about 1/sqrt(eps)); the value is the mean over the positive (ordered)
  pairs ``(i, j)``, ``i != j``, of ``-log(e^{s_ij} / (e^{s_ij} + sum_{k: y_k != y_i} e^{s_ik}))``
  with ``s = cos / temperature``; no positive pair gives 0/0 = NaN with a zero gradient; an
  empty batch raises in optax (a max over an empty axis);
- ``SupConLoss``: embeddings normalised by ``F.normalize`` (eps 1e-12), per anchor ``-(1/|P_i|)
  sum_{p in P_i} log(e^{s_ip} / sum_{k != i} e^{s_ik})`` (the denominator over every other
  embedding, positives included), ``|P_i| + finfo.tiny`` in the division (an anchor without
  positive has loss 0); a batch without any positive pair or without any negative pair gives
  0; the default reducer ``AvgNonZeroReducer`` averages the anchor losses that are > 0.
"""

from __future__ import annotations

import math

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, real, register
from .._common import (
    REDUCTIONS,
    case_id,
    check_embeddings_labels,
    jax_reference,
    loss_shape_weight,
)

FAMILY = "self_supervised"

OPTAX_VERSION = "0.2.8"
PML_VERSION = "2.9.0"


# ---------------------------------------------------------------------------------------------
# checks


def check_pairs(named, opts):
    """embeddings (N, D) floating, labels (N,) integer; the loss has one entry per anchor."""
    return (check_embeddings_labels(named),)


def _finite_positive(name, value):
    v = real(0.0, lo_open=True)(name, value)
    if math.isinf(v):
        raise ValueError(f"{name}: expected a finite value > 0, got {value!r}")
    return v


def temperature(default, doc):
    return Option("temperature", default, doc, _finite_positive, allowed="finite float > 0")


# ---------------------------------------------------------------------------------------------
# samples


def views(rng, n_groups, per_group, d, dtype, spread=0.6):
    """Embeddings in groups (views of one item: near a common direction), labels 0.. per group,
    rows shuffled."""
    centers = rng.normal(size=(n_groups, d))
    e = np.repeat(centers, per_group, axis=0) + spread * rng.normal(size=(n_groups * per_group, d))
    e *= rng.uniform(0.3, 3.0, size=(len(e), 1))
    labels = np.repeat(np.arange(n_groups), per_group)
    perm = rng.permutation(len(e))
    return e[perm].astype(dtype), labels[perm].astype(np.int64)


def pair_masks(labels):
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    eye = np.eye(len(labels), dtype=bool)
    return same & ~eye, ~same


# ---------------------------------------------------------------------------------------------
# ntxent


def _ntxent_body(jnp, lax, embeddings, labels, temperature, cosine_similarity):
    """optax.ntxent's body (optax 0.2.8, losses/_self_supervised.py), line by line, returning the
    loss of each anchor, the row sums ``-sum_j where(matches, log_softm, 0)``, in place of its
    total divided by ``matches.sum()``. Only the max over a row takes ``initial=-inf`` (optax's
    raises on an empty batch)."""
    xcs = cosine_similarity(embeddings[None, :, :], embeddings[:, None, :],
                            epsilon=jnp.finfo(embeddings.dtype).eps) / temperature
    labels1 = jnp.expand_dims(labels, axis=1)
    labels2 = jnp.expand_dims(labels, axis=0)
    matches = labels1 == labels2
    diffs = matches ^ 1
    matches = jnp.bool_(matches - jnp.eye(matches.shape[0]))
    xcs_diffs = jnp.where(diffs == 1, xcs, -jnp.inf)
    xcs_matches = jnp.where(matches == 1, xcs, -jnp.inf)
    comb = jnp.concatenate((xcs_diffs, xcs_matches), axis=-1)
    xcs_max = jnp.max(comb, axis=1, keepdims=True, initial=-jnp.inf)
    xcs_shift_diffs = xcs_diffs - lax.stop_gradient(xcs_max)
    xcs_shift_matches = xcs_matches - lax.stop_gradient(xcs_max)
    numer = xcs_shift_matches
    numer_exp = jnp.exp(xcs_shift_matches)
    denom = jnp.sum(jnp.exp(xcs_shift_diffs), axis=1, keepdims=True)
    denom += numer_exp
    log_softm = numer - jnp.log(denom)
    return -jnp.where(matches == 1, log_softm, 0.0).sum(axis=1)


@jax_reference
def _ntxent_reference(embeddings, labels, *, opts, reduction):
    """'mean': optax.ntxent itself; 'sum': optax.ntxent times the number of positive pairs (0
    where there is none);
    'none': the anchors' losses from optax's body (``_ntxent_body``, with optax's own
    cosine_similarity)."""
    import jax.numpy as jnp
    import optax
    from jax import lax
    from optax.losses import _regression

    t = opts["temperature"]
    n_pairs = pair_masks(np.asarray(labels))[0].sum()
    if reduction == "none" or (reduction == "sum" and n_pairs == 0):
        # the sum over no positive pair is 0 (optax's mean is 0/0)
        body = _ntxent_body(jnp, lax, embeddings, labels, t, _regression.cosine_similarity)
        return body if reduction == "none" else body.sum()
    value = optax.ntxent(embeddings, labels, temperature=t)
    return value if reduction == "mean" else value * n_pairs


def _ntxent_normalizer(inputs, opts):
    pos, _ = pair_masks(inputs[1])
    return pos.sum(axis=1).astype(np.float64), np.ones(len(pos))


def optax_finite(e, y, t, dtype):
    """Whether optax.ntxent's gradient is finite here: not where, in a row with negatives,
    every negative's exp underflows (e^{s_ik - max} = 0 for every k, float32 with temperature
    < 0.023): optax's log of the masked entries' zero denominators turns their zero cotangent
    into 0 / 0 = NaN. multiloss's gradient is finite there (tests/test_self_supervised.py)."""
    if len(y) == 0:
        return True
    e = np.asarray(e, np.float64)
    u = e / np.sqrt(np.maximum((e * e).sum(1, keepdims=True), np.finfo(dtype).eps))
    s = u @ u.T / t
    pos, neg = pair_masks(y)
    m = np.where(pos | neg, s, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore"):  # a row without pairs: -inf - -inf
        gap = np.where(neg, s, -np.inf).max(axis=1) - m
    lowest = np.log(np.finfo(dtype).tiny) + 5.0  # exp below that underflows (with a margin)
    return bool(np.all((gap > lowest) | ~neg.any(axis=1)))


def _ntxent_saturated(e, y, t):
    """Whether the positive pairs' losses are all below 1e-3 (but some exist): every positive
    certain to rounding, the loss and its gradient are then a few ulps of noise (XLA's fused
    exp and log round otherwise than torch's), which no relative error can judge."""
    e = np.asarray(e, np.float64)
    if len(y) == 0:
        return False
    u = e / np.sqrt(np.maximum((e * e).sum(1, keepdims=True), np.finfo(np.float64).eps))
    s = u @ u.T / t
    pos, neg = pair_masks(y)
    if not pos.any():
        return False
    negsum = np.where(neg, np.exp(s - s.max(1, keepdims=True)), 0.0).sum(1, keepdims=True)
    sp = np.exp(s - s.max(1, keepdims=True))
    losses = np.where(pos, -np.log(sp / (sp + negsum)), 0.0)
    return losses.sum() < 1e-3


def _ntxent_samples(rng, dtype):
    name = "ntxent"

    def data(n_groups=3, per_group=2, d=4, t=0.07, modify=None, **kw):
        for _ in range(200):
            e, y = views(rng, n_groups, per_group, d, dtype, **kw)
            if modify is not None:
                modify(e)
            if optax_finite(e, y, t, dtype):
                break
        return e, y

    def zero_row(e):
        e[1] = 0.0

    def extreme_norms(e):
        e[0] *= 1e4
        e[3] *= 1e-6

    for red in REDUCTIONS:
        for with_sw in (False, True):
            sw = loss_shape_weight(rng, (6,), dtype) if with_sw else None
            yield Sample(case_id(f"{name}[2-views]", {"reduction": red, "sw": with_sw}),
                         data(), {"reduction": red}, sw)
    # temperatures, 0.01 included (logits up to 100: finite values and gradients)
    for t in (0.01, 0.2, 1.0):
        for red in ("none", "mean"):
            opts = {"reduction": red, "temperature": t}
            yield Sample(case_id(f"{name}[2-views]", opts), data(t=t, spread=1.0), opts)
    # groups of 3 and 4 (several positives per anchor), singletons (anchors without positive)
    e, y = data(2, 3, 5)
    e2, y2 = data(1, 4, 5)
    e = np.concatenate([e, e2, rng.normal(size=(2, 5)).astype(dtype)])
    y = np.concatenate([y, y2 + 2, [10, 11]])
    for red in ("none", "mean"):
        yield Sample(f"{name}[groups,singletons,reduction={red}]", (e, y), {"reduction": red},
                     loss_shape_weight(rng, (len(y),), dtype) if red == "none" else None)
    e, y = data(4, 2, 3)
    yield Sample(f"{name}[int32-labels,D<N]", (e, y.astype(np.int32)), {"temperature": 0.1})
    # a zero embedding: optax's eps (cosines 0, a gradient of about 1/sqrt(eps)); embeddings of
    # norms 1e4 and 1e-6
    e, y = data(t=0.01, spread=1.0, modify=zero_row)
    for t in (0.07, 0.01):
        yield Sample(f"{name}[zero-embedding,temperature={t}]", (e, y),
                     {"reduction": "none", "temperature": t})
    e, y = data(t=0.01, spread=1.0, modify=extreme_norms)
    yield Sample(f"{name}[norms-1e4-1e-6,temperature=0.01]", (e, y), {"temperature": 0.01})
    # a row without negatives next to others (two labels, one of 5 and a singleton)
    e, y = data(1, 5, 3)
    e = np.concatenate([e, rng.normal(size=(1, 3)).astype(dtype)])
    yield Sample(f"{name}[one-negative,reduction=none]", (e, np.append(y, 7)),
                 {"reduction": "none"})
    # no positive pair: optax's 0/0 = NaN (a zero gradient); an empty batch; one embedding
    e, _ = data()
    for emp in ("nan", "zero"):
        yield Sample(f"{name}[no-positive-pair,empty={emp}]", (e, np.arange(6)),
                     {"empty_reduction": emp})
    empty = (np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    for red in ("mean", "sum", "sum_over_batch_size"):
        # optax raises on an empty batch: the reference is the contract's formula over
        # optax's body
        yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red},
                     contract_reference=True)
    yield Sample(f"{name}[N=1,reduction=mean]", (e[:1], np.zeros(1, np.int64)), {})
    e, y = data()
    for emp in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={emp}]", (e, y),
                     {"empty_reduction": emp}, np.zeros(6, dtype))


def _ntxent_random(rng, dtype):
    n_groups = int(rng.integers(0, 4))
    per_group = int(rng.integers(1, 4))
    d = int(rng.integers(2, 6))
    t = float(rng.choice([0.01, 0.07, 0.3, 1.0]))
    for _ in range(200):
        e, y = views(rng, n_groups, per_group, d, dtype, spread=1.0)
        if n_groups == 1 and per_group > 1:
            # one label for the whole batch: every loss is 0 in exact arithmetic, and both the
            # value and the gradient are rounding noise, which no relative error can judge
            # (tests/test_self_supervised.py checks that case against 0): add a negative
            e = np.concatenate([e, rng.normal(size=(1, d)).astype(dtype)])
            y = np.append(y, 1)
        if optax_finite(e, y, t, dtype) and not _ntxent_saturated(e, y, t):
            break
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "temperature": t}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    n = len(y)
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    # optax raises on an empty batch: the contract's formula over optax's body there
    return Sample(case_id(f"ntxent[random,n={n},d={d}]", opts), (e, y), opts, sw,
                  contract_reference=n == 0)


# ---------------------------------------------------------------------------------------------
# supcon


def _pml_supcon(torch, embeddings, labels, t, reduction):
    from pytorch_metric_learning import losses, reducers

    reducer = {"none": reducers.DoNothingReducer(), "mean": reducers.AvgNonZeroReducer(),
               "sum": reducers.SumReducer()}[reduction]
    out = losses.SupConLoss(temperature=t, reducer=reducer)(embeddings, labels.long())
    if reduction != "none":
        return out
    losses_ = out["loss"]["losses"]
    if not torch.is_tensor(losses_):  # pml's zero_losses(): no positive or no negative pair
        return (embeddings * 0).sum(dim=1)
    return losses_


def _supcon_reference(torch, inputs, opts, reduction):
    embeddings, labels = inputs
    if embeddings.shape[0] == 0 and reduction == "none":
        return (embeddings * 0).sum(dim=1)
    return _pml_supcon(torch, embeddings, labels, opts["temperature"], reduction)


def _supcon_normalizer(inputs, opts):
    """d = [l_i > 0] (AvgNonZeroReducer's filter, read on pytorch-metric-learning's own
    per-anchor losses), c = 1."""
    import torch

    e, y = (torch.from_numpy(np.array(x)) for x in inputs)
    if len(y) == 0:
        return np.zeros(0), np.zeros(0)
    with torch.no_grad():
        losses_ = _pml_supcon(torch, e, y, opts["temperature"], "none").numpy()
    return ((losses_ > 0) | np.isnan(losses_)).astype(np.float64), np.ones(len(y))


def _supcon_losses_np(e, y, t):
    """The anchors' losses in NumPy float64 (to draw well-conditioned samples)."""
    e = np.asarray(e, np.float64)
    n = len(y)
    if n == 0:
        return np.zeros(0)
    u = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    s = u @ u.T / t
    pos, neg = pair_masks(y)
    if not (pos.any() and neg.any()):
        return np.zeros(n)
    keep = pos | neg
    m = np.where(keep, s, -np.inf).max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    lse = m[:, 0] + np.log(np.where(keep, np.exp(s - m), 0.0).sum(axis=1))
    logp = s - lse[:, None]
    return -(np.where(pos, logp, 0.0).sum(axis=1)) / np.maximum(pos.sum(axis=1), 1)


def _well_conditioned(draw, t, tries=200):
    """Redraw until no anchor's loss is in (0, 1e-3): AvgNonZeroReducer counts the losses > 0,
    and a saturated anchor's loss (-log of a probability within rounding of 1) is 0 or a few
    ulps on one backend and not on the other."""
    for _ in range(tries):
        e, y = draw()
        losses_ = _supcon_losses_np(e, y, t)
        if not np.any((losses_ > 0) & (losses_ < 1e-3)):
            break
    return e, y


def _supcon_samples(rng, dtype):
    name = "supcon"

    def data(n_groups=3, per_group=2, d=4, t=0.1, **kw):
        return _well_conditioned(lambda: views(rng, n_groups, per_group, d, dtype, **kw), t)

    for red in REDUCTIONS:
        for with_sw in (False, True):
            sw = loss_shape_weight(rng, (8,), dtype) if with_sw else None
            yield Sample(case_id(f"{name}[groups]", {"reduction": red, "sw": with_sw}),
                         data(2, 4), {"reduction": red}, sw)
    # pytorch-metric-learning's AvgNonZeroReducer itself ("mean" with empty_reduction="nan" is
    # computed by the reference natively)
    yield Sample(f"{name}[groups,avg-non-zero]", data(3, 3),
                 {"empty_reduction": "nan"})
    for t in (0.01, 0.07, 1.0):
        for red in ("none", "mean"):
            opts = {"reduction": red, "temperature": t, "empty_reduction": "nan"}
            yield Sample(case_id(f"{name}[2-views]", opts), data(3, 2, t=t), opts)
    # anchors without positive (loss 0, not counted by the mean), an int32 label array
    e, y = data(2, 3, 5)
    e = np.concatenate([e, rng.normal(size=(2, 5)).astype(dtype)])
    y = np.concatenate([y, [10, 11]])
    for red, sw in (("none", True), ("mean", True), ("mean", False)):
        yield Sample(case_id(f"{name}[singletons]", {"reduction": red, "sw": sw}),
                     (e, y.astype(np.int32)), {"reduction": red, "empty_reduction": "nan"},
                     loss_shape_weight(rng, (len(y),), dtype) if sw else None)
    # a zero embedding (F.normalize's eps: gradient g / 1e-12), norms 1e4 and 1e-6
    e, y = data(2, 3, 4)
    e[2] = 0.0
    yield Sample(f"{name}[zero-embedding,reduction=none]", (e, y), {"reduction": "none"})
    e, y = data(2, 3, 4)
    e[0] *= 1e4
    e[3] *= 1e-6
    yield Sample(f"{name}[norms-1e4-1e-6,temperature=0.01]", (e, y),
                 {"temperature": 0.01, "reduction": "none"})
    # an anchor whose only other term is its positive: log 1 = 0 exactly, not counted
    e = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.5], [0.2, -1.0]], dtype)
    yield Sample(f"{name}[exact-zero-anchor]", (e, np.array([0, 0, 1, 2])),
                 {"empty_reduction": "nan"})
    # no positive pair, no negative pair: pytorch-metric-learning gives 0 (the default
    # empty_reduction="zero"); "nan" gives NaN
    e, _ = data()
    for emp in ("zero", "nan"):
        # "nan": the contract's formula over pytorch-metric-learning's anchor losses (it
        # returns 0 where nothing counts)
        yield Sample(f"{name}[no-positive-pair,empty={emp}]", (e, np.arange(6)),
                     {"empty_reduction": emp}, contract_reference=emp == "nan")
    yield Sample(f"{name}[no-negative-pair,reduction=mean]", (e, np.zeros(6, np.int64)), {})
    empty = (np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    for red in ("mean", "sum", "sum_over_batch_size"):
        yield Sample(f"{name}[empty-batch,reduction={red}]", empty, {"reduction": red},
                     contract_reference=True)
    e, y = data(2, 4)
    for emp in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={emp}]", (e, y),
                     {"empty_reduction": emp}, np.zeros(8, dtype))


def _supcon_random(rng, dtype):
    n_groups = int(rng.integers(0, 4))
    per_group = int(rng.integers(1, 4))
    d = int(rng.integers(2, 6))
    t = float(rng.choice([0.01, 0.07, 0.3, 1.0]))
    e, y = _well_conditioned(lambda: views(rng, n_groups, per_group, d, dtype), t)
    opts = {"reduction": str(rng.choice(REDUCTIONS)), "temperature": t}
    if rng.random() < 0.3:
        opts["empty_reduction"] = "nan"
    n = len(y)
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    # where no anchor's loss is > 0, pytorch-metric-learning's "mean" is 0: the contract's
    # formula is the reference of empty_reduction="nan" there
    nothing = not np.any(_supcon_losses_np(e, y, t) > 0)
    return Sample(case_id(f"supcon[random,n={n},d={d}]", opts), (e, y), opts, sw,
                  contract_reference=n == 0 or nothing)


# ---------------------------------------------------------------------------------------------
# specs

INPUTS = (
    InputSpec("embeddings", "embeddings, (N, D); normalised inside the loss (need not be)"),
    InputSpec("labels", "integer labels, (N,): embeddings with the same label are positive "
              "pairs (SimCLR: the two views of an image share a label)", differentiable=False),
)

_COUPLED_NOTE = (
    "The loss of an anchor depends on the whole batch: a micro-batch or a data-parallel shard "
    "sees the pairs inside it only (no all-gather, as optax and pytorch-metric-learning); "
    "gather the embeddings before the loss for the global batch's pairs."
)

register(LossSpec(
    name="ntxent",
    family=FAMILY,
    summary="NT-Xent (SimCLR's normalized temperature-scaled cross-entropy, InfoNCE over "
            "in-batch negatives), as optax.ntxent.",
    aliases=("info_nce", "infonce", "nt_xent", "ntxent_loss", "simclr"),
    inputs=INPUTS,
    options=(temperature(0.07, "tau, the divisor of the cosine similarities (optax's default "
                               "0.07); > 0"),),
    formula=(
        "u_i = x_i / sqrt(max(||x_i||^2, eps)), eps = finfo(dtype).eps (optax's "
        "cosine_similarity);  s_ij = (u_i . u_j) / temperature;\n"
        "P(i) = {j != i: y_j = y_i} (positives), N(i) = {k: y_k != y_i} (negatives);\n"
        "l_i = sum_{j in P(i)} -log( e^{s_ij} / (e^{s_ij} + sum_{k in N(i)} e^{s_ik}) )  "
        "(shifted by the row's max, as optax);\n"
        "weight d_i = |P(i)|: 'mean' = sum_i l_i / sum_i |P(i)| = the mean over the positive "
        "ordered pairs = optax.ntxent; 'sum' = the sum over them."
    ),
    reference_name=(f"optax.ntxent (optax {OPTAX_VERSION}) on JAX ('mean'; 'sum' = its value "
                    f"times the number of positive pairs; 'none': the anchors' losses from "
                    f"optax's own body and cosine_similarity, "
                    f"multiloss.losses.self_supervised._ntxent_body); gradients by jax.vjp"),
    notes=(
        "optax returns the mean only; multiloss adds the anchors' losses ('none') and the "
        "weighting contract. An anchor's positives are excluded from each other's "
        "denominators (optax's and pytorch-metric-learning's NTXentLoss convention; SupCon's "
        "denominator includes them). optax raises on an empty batch (a max over an empty "
        "axis); multiloss gives the contract's nothing-counts value (NaN by default, as optax's "
        "0/0 for a batch without positive pairs). pytorch-metric-learning's NTXentLoss differs "
        "in its edge cases (F.normalize's eps 1e-12, + finfo.tiny inside the log, 0 without "
        "negatives, MeanReducer over the pairs). optax accepts any label dtype; multiloss "
        "takes integer labels. " + _COUPLED_NOTE
    ),
    check=check_pairs,
    samples=_ntxent_samples,
    random_sample=_ntxent_random,
    reference=_ntxent_reference,
    normalizer=_ntxent_normalizer,
    batch_coupled=True,
))

register(LossSpec(
    name="supcon",
    family=FAMILY,
    summary="Supervised contrastive loss (Khosla et al. 2020), as pytorch-metric-learning's "
            "SupConLoss.",
    aliases=("supcon_loss", "sup_con", "supervised_contrastive"),
    inputs=INPUTS,
    options=(temperature(0.1, "tau, the divisor of the cosine similarities "
                              "(pytorch-metric-learning's default 0.1); > 0"),),
    formula=(
        "u_i = x_i / max(||x_i||, 1e-12) (F.normalize);  s_ij = (u_i . u_j) / temperature;\n"
        "P(i) = {j != i: y_j = y_i}, A(i) = {k != i};\n"
        "l_i = -(1 / (|P(i)| + tiny)) sum_{p in P(i)} (s_ip - log sum_{k in A(i)} e^{s_ik})  "
        "(tiny = finfo(dtype).tiny: 0 for an anchor without positive);\n"
        "l = 0 everywhere if the batch has no positive pair or no negative pair;\n"
        "weight d_i = [l_i > 0 or l_i is NaN] (not differentiated): 'mean' = sum_i l_i / "
        "#{i: l_i > 0} = "
        "pytorch-metric-learning's default AvgNonZeroReducer; nothing > 0 gives 0 "
        "(empty_reduction='zero', the default here, as pytorch-metric-learning)."
    ),
    reference_name=(f"pytorch_metric_learning.losses.SupConLoss (pytorch-metric-learning "
                    f"{PML_VERSION}); reducers DoNothingReducer ('none'), AvgNonZeroReducer "
                    f"('mean', its default), SumReducer ('sum')"),
    notes=(
        "'mean' is pytorch-metric-learning's default reducer, AvgNonZeroReducer (the mean "
        "over the anchors whose loss is > 0), not the plain mean over anchors; with a "
        "sample_weight it is sum_i s_i l_i / sum_{i: l_i > 0} s_i. empty_reduction defaults "
        "to 'zero' (pytorch-metric-learning's 0 where no anchor's loss is > 0); 'nan' gives "
        "the contract's NaN there. A NaN embedding is in every anchor's denominator: every "
        "anchor's loss and the mean are NaN, in both (AvgNonZeroReducer drops NaN losses, "
        "as NaN > 0 is false, and then returns its zero loss, sum(embeddings * 0) = NaN). "
        "Khosla et al.'s L_out; SupContrast's reference code also scales by "
        "temperature / base_temperature (1 by default there) and takes the views as a "
        "(N, V, D) tensor: flatten the views and repeat the labels. "
        "Miners (indices_tuple) and ref_emb are not supported. " + _COUPLED_NOTE
    ),
    check=check_pairs,
    samples=_supcon_samples,
    random_sample=_supcon_random,
    reference=_supcon_reference,
    normalizer=_supcon_normalizer,
    default_empty_reduction="zero",
    batch_coupled=True,
))
