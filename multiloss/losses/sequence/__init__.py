"""Sequence losses: ctc. Specs only; implementations in ``_jax.py`` and ``_torch.py``."""

from __future__ import annotations

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, boolean, integer, register
from .._common import REDUCTIONS, case_id, expect_float, loss_shape_weight

FAMILY = "sequence"


# ---------------------------------------------------------------------------------------------
# options


def _blank_index(name, value):
    value = integer(name, value)
    if value < 0:
        raise ValueError(f"{name}: expected a label index in [0, C), got {value}")
    return value


BLANK = Option("blank", 0, "index of the blank label, in [0, C)", _blank_index,
               allowed="int in [0, C)")
ZERO_INFINITY = Option(
    "zero_infinity", False,
    "replace an infinite loss (a target no alignment of the input can produce) by 0, with a "
    "zero gradient",
    boolean, allowed="bool",
)


# ---------------------------------------------------------------------------------------------
# checks (shapes and dtypes: no values read)


def _check(named, opts):
    lp, tg = named["log_probs"], named["targets"]
    expect_float("log_probs", lp, "floating-point log-probabilities")
    if lp.ndim not in (2, 3):
        raise ValueError(
            f"log_probs: expected shape (T, N, C), or (T, C) unbatched, got shape {lp.shape}"
        )
    if 0 in lp.shape:
        raise ValueError(
            f"log_probs: expected a non-empty array (torch requires T, N and C >= 1), got shape "
            f"{lp.shape}"
        )
    n_classes = lp.shape[-1]
    if opts["blank"] >= n_classes:
        raise ValueError(
            f"blank: expected a label index in [0, {n_classes}) (C = log_probs.shape[-1]), got "
            f"{opts['blank']}"
        )
    batched = lp.ndim == 3
    n = lp.shape[1] if batched else 1
    if tg.kind not in "iu":
        raise TypeError(f"targets: expected integer labels, got {tg.describe()}")
    if batched and not (tg.ndim == 1 or (tg.ndim == 2 and tg.shape[0] == n)):
        raise ValueError(
            f"targets: expected padded targets of shape (N, S) with N = {n}, or concatenated "
            f"targets of shape (sum(target_lengths),), got shape {tg.shape}"
        )
    if not batched and not (tg.ndim == 1 or (tg.ndim == 2 and tg.shape[0] == 1)):
        raise ValueError(
            f"targets: expected shape (S,) or (1, S) for unbatched log_probs of shape "
            f"{lp.shape}, got shape {tg.shape}"
        )
    for name in ("input_lengths", "target_lengths"):
        x = named[name]
        if x.kind not in "iu":
            raise TypeError(f"{name}: expected integer lengths, got {x.describe()}")
        ok = x.shape == (n,) or (x.ndim == 0 and n == 1)
        if not ok:
            want = f"({n},), one length per sequence" if batched else "() or (1,) (unbatched)"
            raise ValueError(f"{name}: expected shape {want}, got shape {x.shape}")
    return (n,) if batched else ()


def _first_bad(bad):
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    return pos, f" at index {pos}" if pos else ""


def _check_values(values, infos, opts):
    """Lengths in range and consistent with the targets, labels in [0, C) and not blank within
    each target's length (torch silently reads out of range there)."""
    lp, tg_info = infos["log_probs"], infos["targets"]
    n_frames, n_classes, blank = lp.shape[0], lp.shape[-1], opts["blank"]
    il = values.get("input_lengths")
    if il is not None:
        bad = (il < 0) | (il > n_frames)
        if bad.any():
            pos, where = _first_bad(bad)
            raise ValueError(
                f"input_lengths: expected values in [0, {n_frames}] (T = log_probs.shape[0]), "
                f"got {il[pos]}{where}"
            )
    tl = values.get("target_lengths")
    if tl is not None:
        if (tl < 0).any():
            pos, where = _first_bad(tl < 0)
            raise ValueError(f"target_lengths: expected values >= 0, got {tl[pos]}{where}")
        if tg_info.ndim == 2:
            width = tg_info.shape[1]
            if (tl > width).any():
                pos, where = _first_bad(tl > width)
                raise ValueError(
                    f"target_lengths: expected values in [0, {width}] (S = targets.shape[1], "
                    f"padded targets), got {tl[pos]}{where}"
                )
        else:
            total = int(np.sum(tl.astype(np.int64)))
            if total != tg_info.shape[0]:
                raise ValueError(
                    f"target_lengths: expected values that sum to len(targets) = "
                    f"{tg_info.shape[0]} (concatenated targets), got sum {total}"
                )
    tg = values.get("targets")
    if tg is None or tg.size == 0:
        return
    if tg.ndim == 2:
        if tl is None:  # which entries are padding is unknown: nothing to check
            return
        inside = np.arange(tg.shape[1])[None, :] < tl.reshape(-1)[:, None]
    else:
        inside = np.ones(tg.shape, bool)
    t64 = tg.astype(np.int64)
    bad = inside & ((t64 < 0) | (t64 >= n_classes) | (t64 == blank))
    if bad.any():
        pos, where = _first_bad(bad)
        raise ValueError(
            f"targets: expected labels in [0, {n_classes}) other than blank={blank} within "
            f"target_lengths, got {tg[pos]}{where}"
        )


# ---------------------------------------------------------------------------------------------
# normalizer and reference


def _loss_shape(inputs):
    lp = inputs[0]
    return (lp.shape[1],) if lp.ndim == 3 else ()


def _normalizer(inputs, opts):
    shape = _loss_shape(inputs)
    tl = np.asarray(inputs[3], np.float64).reshape(shape)
    return np.ones(shape), np.ones(shape), 1.0 / np.maximum(tl, 1.0)


def _reference(torch, inputs, opts, reduction):
    lp, tg, il, tl = inputs
    return torch.nn.functional.ctc_loss(lp, tg, il, tl, blank=opts["blank"], reduction=reduction,
                                        zero_infinity=opts["zero_infinity"])


# ---------------------------------------------------------------------------------------------
# samples


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _labels(rng, n_classes, length, blank, repeats):
    choices = [c for c in range(n_classes) if c != blank]
    lab = [int(v) for v in rng.choice(choices, size=length)]
    if repeats and length > 1:
        k = int(rng.integers(1, length))
        lab[k] = lab[k - 1]
    return lab


def _problem(rng, dtype, n_frames, n_classes, tls, ils, *, blank=0, layout="padded",
             repeats=True, unbatched=False, width=None, pad=-1, scale=2.0, int_dtype=np.int64):
    """log_softmax inputs, random targets of lengths ``tls`` (no blank), in ``layout``."""
    n = len(tls)
    shape = (n_frames, n_classes) if unbatched else (n_frames, n, n_classes)
    lp = _log_softmax(rng.normal(size=shape) * scale).astype(dtype)
    labels = [_labels(rng, n_classes, t, blank, repeats) for t in tls]
    if layout == "padded":
        width = max(tls, default=0) + 1 if width is None else width
        tg = np.full((n, width), pad, np.int64)
        for b, lab in enumerate(labels):
            tg[b, : len(lab)] = lab
    else:
        tg = np.array([v for lab in labels for v in lab], np.int64)
    il = np.array(ils, np.int64)
    tl = np.array(tls, np.int64)
    if unbatched:
        il, tl = il.reshape(()), tl.reshape(())
    return lp, tg.astype(int_dtype), il.astype(int_dtype), tl.astype(int_dtype)


def _sample(name, inputs, opts, weight=None, **tags):
    return Sample(case_id(f"ctc[{name}]", {**opts, **tags}), inputs, opts, weight)


def _samples(rng, dtype):
    # a padded batch with varying input and target lengths, repeats, every reduction
    for red in REDUCTIONS:
        for sw in (False, True):
            inputs = _problem(rng, dtype, 10, 5, [4, 2, 3], [10, 7, 9])
            w = loss_shape_weight(rng, (3,), dtype) if sw else None
            yield _sample("padded", inputs, {"reduction": red}, w, sw=sw)
    # concatenated targets (int32 labels and lengths)
    for red in ("mean", "sum", "none"):
        for sw in (False, True) if red != "sum" else (False,):
            inputs = _problem(rng, dtype, 9, 6, [3, 1, 4], [9, 6, 8], layout="concat",
                              int_dtype=np.int32)
            w = loss_shape_weight(rng, (3,), dtype) if sw else None
            yield _sample("concat", inputs, {"reduction": red}, w, sw=sw)
    # unbatched: (T, C) with targets (S,) (torch's concatenated layout, S = target length)
    for red, sw in (("mean", False), ("sum", False), ("none", True),
                    ("sum_over_batch_size", True)):
        inputs = _problem(rng, dtype, 7, 4, [3], [6], layout="concat", unbatched=True)
        w = np.asarray(1.7, dtype) if sw else None
        yield _sample("unbatched", inputs, {"reduction": red}, w, sw=sw)
    # unbatched with padded targets (1, S) and lengths of shape (1,)
    for red in ("mean", "none"):
        lp, tg, il, tl = _problem(rng, dtype, 6, 4, [2], [6], unbatched=True, width=4)
        yield _sample("unbatched-padded", (lp, tg, il.reshape(1), tl.reshape(1)),
                      {"reduction": red})
    # another blank
    for blank, red in ((4, "mean"), (2, "none")):
        inputs = _problem(rng, dtype, 8, 5, [3, 2], [8, 6], blank=blank, pad=blank)
        yield _sample("blank", inputs, {"blank": blank, "reduction": red})
    # impossible alignments: a repeat needs a blank between (3 frames for 1,1 -> il=2) and a
    # target longer than its input; inf, or 0 with zero_infinity; torch's gradient is NaN
    # on the frames of such a sequence (and 0 with zero_infinity)
    for zi in (False, True):
        for red in ("mean", "sum", "none"):
            lp, tg, il, tl = _problem(rng, dtype, 6, 4, [2, 5, 3], [2, 4, 6], repeats=False)
            tg[0, :2] = [1, 1]
            yield _sample("impossible", (lp, tg, il, tl), {"zero_infinity": zi, "reduction": red})
    for zi, red in ((False, "mean"), (True, "sum_over_batch_size")):
        lp, tg, il, tl = _problem(rng, dtype, 6, 4, [2, 5, 3], [2, 4, 6], repeats=False)
        tg[0, :2] = [3, 3]
        yield _sample("impossible", (lp, tg, il, tl), {"zero_infinity": zi, "reduction": red},
                      loss_shape_weight(rng, (3,), dtype), sw=True)
    # targets longer than T (the JAX backend bounds the states by T labels: inf)
    for zi in (False, True):
        inputs = _problem(rng, dtype, 3, 4, [5, 1, 2], [3, 3, 2], layout="concat")
        yield _sample("longer-than-T", inputs, {"zero_infinity": zi, "reduction": "none"})
    inputs = _problem(rng, dtype, 4, 4, [6, 2], [4, 3], width=6)
    yield _sample("longer-than-T,padded", inputs, {"reduction": "mean"})
    # empty targets: every target (padded S = 0) and some (concatenated)
    for red in ("mean", "none"):
        inputs = _problem(rng, dtype, 5, 3, [0, 0], [5, 3], width=0)
        yield _sample("empty-targets", inputs, {"reduction": red})
    inputs = _problem(rng, dtype, 6, 4, [0, 3, 0], [6, 5, 2], layout="concat")
    yield _sample("some-empty-targets", inputs, {"reduction": "sum"},
                  loss_shape_weight(rng, (3,), dtype), sw=True)
    # no frames at all: input length 0 (loss 0 for an empty target, inf otherwise, gradient 0)
    for zi in (False, True):
        inputs = _problem(rng, dtype, 5, 3, [0, 2, 1], [0, 0, 5])
        yield _sample("zero-input-length", inputs, {"zero_infinity": zi, "reduction": "none"})
    # a mean over nothing that counts: every sample weight 0
    for empty in ("nan", "zero"):
        inputs = _problem(rng, dtype, 6, 4, [2, 3], [6, 5])
        yield _sample(f"zero-sample-weights,empty={empty}", inputs, {"empty_reduction": empty},
                      np.zeros(2, dtype))
    # one frame
    for red in ("sum", "none"):
        inputs = _problem(rng, dtype, 1, 3, [1, 0, 1], [1, 1, 1])
        yield _sample("T=1", inputs, {"reduction": red})
    # longer sequences
    for red in ("mean", "none"):
        inputs = _problem(rng, dtype, 40, 6, [12, 9], [40, 33], scale=1.0)
        yield _sample("T=40", inputs, {"reduction": red})
    # near-one-hot log-probabilities (logits +-1e4): log-likelihoods of the paths that differ
    # by 1e4 and more
    lp, tg, il, tl = _problem(rng, dtype, 6, 4, [2, 3], [6, 6], repeats=False)
    x = np.where(rng.random(lp.shape) < 0.5, 1e4, -1e4)
    x[..., 0] = 0.0
    yield _sample("logits+-1e4", (_log_softmax(x).astype(dtype), tg, il, tl), {"reduction": "sum"})


def _random(rng, dtype):
    n_frames = int(rng.integers(1, 13))
    n_classes = int(rng.integers(2, 7))
    unbatched = rng.random() < 0.2
    n = 1 if unbatched else int(rng.integers(1, 5))
    blank = 0 if rng.random() < 0.6 else int(rng.integers(0, n_classes))
    layout = "concat" if unbatched or rng.random() < 0.4 else "padded"
    tls = [int(rng.integers(0, min(n_frames, 6) + 1)) for _ in range(n)]
    ils = [n_frames if rng.random() < 0.5 else int(rng.integers(0, n_frames + 1))
           for _ in range(n)]
    opts = {"reduction": str(rng.choice(REDUCTIONS))}
    if rng.random() < 0.5:
        opts["zero_infinity"] = True
    if blank:
        opts["blank"] = blank
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    lp, tg, il, tl = _problem(rng, dtype, n_frames, n_classes, tls, ils, blank=blank,
                              layout=layout, repeats=rng.random() < 0.5, unbatched=unbatched)
    sw = loss_shape_weight(rng, () if unbatched else (n,), dtype) if rng.random() < 0.5 else None
    return Sample(case_id("ctc[random]", {**opts, "layout": layout, "unbatched": unbatched}),
                  (lp, tg, il, tl), opts, sw)


# ---------------------------------------------------------------------------------------------
# spec

register(LossSpec(
    name="ctc",
    converts={"targets": ("bf", "int64")},  # torch converts these (tests/test_torch_dtypes.py)
    family=FAMILY,
    summary="Connectionist temporal classification: the negative log-likelihood of a target "
            "label sequence, summed over every alignment of it to the input frames.",
    aliases=("ctc_loss", "CTCLoss"),
    inputs=(
        InputSpec("log_probs", "log-probabilities (log_softmax over C), shape (T, N, C), or "
                  "(T, C) unbatched; T frames, N sequences, C classes including the blank"),
        InputSpec("targets", "integer labels in [0, C) other than blank: padded (N, S), or "
                  "concatenated (sum(target_lengths),); unbatched (S,) (concatenated: S must "
                  "equal the target length) or (1, S)", differentiable=False),
        InputSpec("input_lengths", "integer frames of each sequence, shape (N,) (unbatched: () "
                  "or (1,)), each in [0, T]; frames past it are ignored", differentiable=False),
        InputSpec("target_lengths", "integer length of each target, shape (N,) (unbatched: () "
                  "or (1,)); padded: each <= S, concatenated: they sum to len(targets)",
                  differentiable=False),
    ),
    options=(BLANK, ZERO_INFINITY),
    formula=(
        "l'_b = the target of sequence b with a blank before, between and after its labels; "
        "alpha by the log-space forward recursion over t < T_b = input_lengths[b]:\n"
        "  alpha[t, s] = logsumexp(alpha[t-1, s], alpha[t-1, s-1], alpha[t-1, s-2] if "
        "l'[s] != l'[s-2]) + log_probs[t, b, l'[s]];\n"
        "l_b = -logsumexp(alpha[T_b - 1, 2 S_b], alpha[T_b - 1, 2 S_b - 1]) (S_b = "
        "target_lengths[b]); inf where no alignment exists (0 with zero_infinity);\n"
        "  T_b = 0: 0 for an empty target, inf otherwise.\n"
        "'mean' = mean_b(l_b / max(S_b, 1)) (torch's: r = 1 / max(S_b, 1) in the contract).\n"
        "d l_b / d log_probs[t, b, c] = exp(log_probs[t, b, c]) - gamma[t, b, c] for t < T_b, "
        "0 after (gamma: the posterior of class c at frame t): torch's gradient, which assumes "
        "normalised log_probs; NaN on the frames of an infinite l_b (0 with zero_infinity)."
    ),
    reference_name="torch.nn.functional.ctc_loss (torch 2.13)",
    notes=(
        "float16/bfloat16 inputs: torch has no CPU kernel ('not implemented for Half'), so "
        "the torch backend raises torch's NotImplementedError on CPU; JAX computes in float32 "
        "and rounds to the input's dtype. "
        "Float class indices are truncated to integers, as torch does. "
        "The gradient w.r.t. log_probs is torch's, (exp(log_probs) - posterior) * g (pytorch "
        "issue 52241), on both backends (a jax.custom_jvp on JAX, linear in d log_probs: jax.jvp, "
        "jacfwd, jax.hessian and jacrev(jacrev) work, the second order being the derivative of "
        "torch's gradient; torch's ctc_loss has no double backward, so the torch backend raises "
        "torch's error there): it is the derivative of the loss only for normalised log_probs, and in "
        "ctc(log_softmax(logits)) the gradient w.r.t. the logits is the true one. optax.ctc_loss takes logits (it applies "
        "log_softmax itself) with padding masks, (B, T, K) batch-major, returns the per-sequence "
        "loss only (no reduction, no mean by target length), differentiates its forward by "
        "autodiff, and uses log(0) = -1e5, so an impossible alignment gives a large finite loss "
        "(about 1e5) instead of inf. torch reads no label past a target's length and does not "
        "check labels: an out-of-range label or a blank inside a target raises here where the "
        "values are concrete and gives NaN under a trace. targets must be integers (torch also "
        "takes floating targets and truncates them). The JAX backend bounds the states by "
        "min(S, T) labels (a longer target has no alignment and its loss is inf); with "
        "concatenated targets S is len(targets), so padded targets are cheaper there."
    ),
    check=_check,
    check_values=_check_values,
    value_args=("targets", "input_lengths", "target_lengths"),
    samples=_samples,
    random_sample=_random,
    reference=_reference,
    normalizer=_normalizer,
))
