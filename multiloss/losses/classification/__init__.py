"""Classification losses: cross_entropy, nll, binary_cross_entropy,
binary_cross_entropy_with_logits, multi_margin, multilabel_margin, soft_margin,
multilabel_soft_margin. Specs only; the implementations are in ``_jax.py`` and
``_torch.py`` beside this file."""

from __future__ import annotations

import numpy as np

from ..._registry import (
    InputSpec,
    LossSpec,
    Option,
    Sample,
    array_option,
    boolean,
    integer,
    real,
    register,
)
from .._common import (
    REDUCTIONS,
    case_id,
    check_class_indices,
    check_class_weight,
    class_shapes,
    elementwise_check,
    expect_float,
    expect_same_dtype,
    grid,
    loss_shape_weight,
    positive,
)

FAMILY = "classification"

WEIGHT_CLASS = Option(
    "weight",
    None,
    "per-class weights, shape (C,); the 'mean' divides by the summed weights of the targets "
    "that count",
    array_option(ndim=1),
    kind="array",
    allowed="None | array (C,)",
)
IGNORE_INDEX = Option(
    "ignore_index",
    -100,
    "class index whose targets contribute nothing (neither loss nor count)",
    integer,
    allowed="int",
)
LABEL_SMOOTHING = Option(
    "label_smoothing",
    0.0,
    "mass moved from the target to a uniform distribution over the C classes",
    real(0.0, 1.0),
    allowed="float in [0, 1]",
)


def _compile_flag(name, value):
    # multiloss.from_torch reads every option's name from the criterion's attributes, and a
    # torch module's ``compile`` is its method (torch.nn.Module.compile): that means "not set"
    if callable(value) and getattr(value, "__name__", "") == "compile" and hasattr(value, "__self__"):
        return False
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


COMPILE = Option(
    "compile",
    False,
    "torch backend: compute with torch.compile of F.cross_entropy (compiled once per "
    "reduction, ignore_index and label smoothing; the first call compiles, which needs a C "
    "compiler on CPU). jax backend: no effect (a JAX loss is always jit-compiled)",
    _compile_flag,
    allowed="bool",
)


SHIFT_DOC = (
    "causal-LM shift, as transformers' ForCausalLMLoss: the logits at position i predict the "
    "target at i + 1 along the sequence axis, the last axis of the target (input[..., :-1] "
    "against target[..., 1:]); the last position is dropped, so the unreduced loss is one "
    "shorter along it. Class-index targets only; pass the number of valid targets of the "
    "whole step (after the shift) as normalizer= or num_items_in_batch= "
    "(docs/language-models.md)")

SHIFT = Option("shift", False, SHIFT_DOC + ". Input (N, C, ..., T), target (N, ..., T): "
               "transformers' (B, T, V) logits are logits.transpose(1, 2) here", boolean,
               allowed="bool")


# ---------------------------------------------------------------------------------------------
# checks


def _class_check(named, opts, allow_prob: bool):
    x, t = named["input"], named["target"]
    expect_float("input", x, "floating-point scores")
    n_classes, idx_shape = class_shapes(x)
    if t.kind in "iu":
        if t.shape != idx_shape:
            raise ValueError(
                f"target: expected class indices of shape {idx_shape} for input of shape "
                f"{x.shape}, got shape {t.shape}"
            )
    elif t.kind == "f" and allow_prob:
        if t.shape != x.shape:
            if t.shape == idx_shape:
                raise TypeError(
                    f"target: got {t.describe()}, the shape of class indices but a floating "
                    f"dtype; class indices must be integers (cast with .astype(int)), class "
                    f"probabilities must have the input's shape {x.shape}"
                )
            raise ValueError(
                f"target: expected integer class indices of shape {idx_shape} or class "
                f"probabilities of shape {x.shape}, got {t.describe()}"
            )
        if opts["ignore_index"] != -100:
            raise ValueError(
                f"ignore_index: not supported with class-probability targets (as in torch); "
                f"expected the default -100, got {opts['ignore_index']}"
            )
    else:
        want = (
            f"integer class indices of shape {idx_shape} or floating class probabilities of "
            f"shape {x.shape}"
            if allow_prob
            else f"integer class indices of shape {idx_shape}"
        )
        raise TypeError(f"target: expected {want}, got {t.describe()}")
    check_class_weight(opts, n_classes)
    return idx_shape


def _ce_check(named, opts):
    if not opts.get("shift"):
        return _class_check(named, opts, allow_prob=True)
    x, t = named["input"], named["target"]
    if x.ndim < 3 or t.kind not in "iu":
        raise ValueError(
            f"shift: needs logits (N, C, ..., T) with the sequence last and integer targets "
            f"(N, ..., T) (transformers' (B, T, V) logits: logits.transpose(1, 2)), got input "
            f"{x.describe()} and target {t.describe()}")
    return shifted(_class_check(named, opts, allow_prob=False))


def shifted(shape):
    """The unreduced loss's shape under ``shift``: one shorter along the last axis."""
    return (*shape[:-1], max(shape[-1] - 1, 0))


def _nll_check(named, opts):
    return _class_check(named, opts, allow_prob=False)


def _check_probabilities(values, infos, opts):
    """binary_cross_entropy's inputs and targets in [0, 1], as torch's kernel checks them (a
    NaN fails too: torch's check is ``0 <= x <= 1``)."""
    for name in ("input", "target"):
        v = values.get(name)
        if v is None or v.size == 0:
            continue
        bad = ~((v >= 0) & (v <= 1))
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: expected values in [0, 1] (torch: all elements of {name} should be "
                f"between 0 and 1), got {v[bad][0]} at index {pos}")


def _probabilities_ok(v) -> bool:
    # NaN makes min/max NaN and fails the comparison: the full check then raises
    return v.size == 0 or bool(v.min() >= 0 and v.max() <= 1)


_check_probabilities.quick = lambda infos, opts: {"input": _probabilities_ok,
                                                  "target": _probabilities_ok}


def _bce_logits_check(named, opts):
    shape = elementwise_check(named, opts)
    pw = opts.get("pos_weight")
    if pw is not None:
        from .._common import check_broadcasts

        check_broadcasts("pos_weight", tuple(pw.shape), shape)
    return shape


# ---------------------------------------------------------------------------------------------
# normalizers (the documented denominators, NumPy; used for the reference of the contract)


def _class_normalizer(inputs, opts):
    x, t = inputs[0], inputs[1]
    if opts.get("shift"):
        x, t = x[..., :-1], t[..., 1:]
    axis = 0 if x.ndim == 1 else 1
    if np.issubdtype(t.dtype, np.floating):
        shape = x.shape[:axis] + x.shape[axis + 1 :]
        return np.ones(shape), np.ones(shape)
    valid = t != opts["ignore_index"]
    w = opts["weight"]
    wt = np.ones(t.shape) if w is None else np.asarray(w, np.float64)[np.where(valid, t, 0)]
    return np.where(valid, wt, 0.0), valid.astype(np.float64)


def _ones_normalizer(inputs, opts):
    return np.ones(inputs[0].shape), np.ones(inputs[0].shape)


# ---------------------------------------------------------------------------------------------
# samples


def _class_problem(rng, dtype, shape, target_kind, ignore):
    x = (rng.normal(size=shape) * 3).astype(dtype)
    n_classes, idx_shape = (shape[0], ()) if len(shape) == 1 else (shape[1], (shape[0],) + shape[2:])
    if target_kind == "prob":
        t = rng.dirichlet(np.ones(n_classes), size=idx_shape or None)
        t = np.moveaxis(np.asarray(t), -1, 0 if len(shape) == 1 else 1).astype(dtype)
        return x, t
    t = rng.integers(0, n_classes, size=idx_shape).astype(np.int64)
    if ignore == "some" and t.size > 1:
        t.flat[:: max(2, t.size // 3)] = -100
    return x, t


def _ce_samples(rng, dtype, nll=False):
    name = "nll" if nll else "cross_entropy"
    shapes = {"2d": (6, 5), "kdim": (3, 4, 2, 3), "unbatched": (5,)}
    kinds = ("index",) if nll else ("index", "prob")
    for shape_name, shape in shapes.items():
        full = shape_name == "2d"
        for kind in kinds:
            # targets without ignored entries are covered by the unbatched and probability
            # cases; "some": a few targets at the default -100; "class": ignore_index=1
            ignores = (("some", "class") if full else ("some",)) if kind == "index" else ("none",)
            if shape_name == "unbatched":
                ignores = ("none",)
            axes = dict(
                weight=(False, True),
                label_smoothing=(0.0,) if nll else (0.0, 0.2),
                ignore=ignores,
                reduction=REDUCTIONS if full else ("mean", "none"),
                sw=(False, True),
            )
            for g in grid(**axes):
                x, t = _class_problem(rng, dtype, shape, kind, g["ignore"])
                if nll:
                    x = _log_softmax(x, 0 if len(shape) == 1 else 1).astype(dtype)
                n_classes = shape[0] if len(shape) == 1 else shape[1]
                opts = {"reduction": g["reduction"]}
                if g["weight"]:
                    opts["weight"] = positive(rng, (n_classes,), dtype, 0.2, 2.0)
                if g["label_smoothing"]:
                    opts["label_smoothing"] = g["label_smoothing"]
                if g["ignore"] == "class":
                    opts["ignore_index"] = 1
                sw = _index_shape_weight(rng, x, dtype) if g["sw"] else None
                yield Sample(
                    case_id(f"{name}[{shape_name},{kind}]", {**opts, "sw": g["sw"]}),
                    (x, t),
                    opts,
                    sw,
                )
    if not nll:
        yield from _shift_cases(rng, dtype, name)
    yield from _class_edge_cases(rng, dtype, name, nll)


def _shift_cases(rng, dtype, name):
    """shift=True: logits (N, C, T), targets (N, T); the unreduced loss is (N, T - 1)."""
    x, t = _class_problem(rng, dtype, (3, 5, 4), "index", "some")
    w = positive(rng, (5,), dtype, 0.2, 2.0)
    yield Sample(f"{name}[shift]", (x, t), {"shift": True})
    opts = {"shift": True, "weight": w, "label_smoothing": 0.1, "reduction": "none"}
    yield Sample(case_id(f"{name}[shift]", opts), (x, t), opts,
                 loss_shape_weight(rng, (3, 3), dtype))
    # only the first position has a valid target: after the shift nothing counts
    t = np.full((3, 4), -100, np.int64)
    t[:, 0] = 1
    for empty in ("nan", "zero"):
        yield Sample(f"{name}[shift,ignored-after-shift,empty={empty}]", (x, t),
                     {"shift": True, "empty_reduction": empty})


def _index_shape_weight(rng, x, dtype):
    shape = () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]
    return loss_shape_weight(rng, shape, dtype)


def _log_softmax(x, axis):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _class_edge_cases(rng, dtype, name, nll):
    x = (rng.normal(size=(4, 3)) * 2).astype(dtype)
    if nll:
        x = _log_softmax(x, 1).astype(dtype)
    all_ignored = np.full(4, -100, np.int64)
    w = np.array([0.0, 1.5, 0.5], dtype)
    for red in ("mean", "sum", "none", "sum_over_batch_size"):
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[all-ignored,{red},empty={empty}]", (x, all_ignored),
                         {"reduction": red, "empty_reduction": empty})
    zero_w_targets = np.zeros(4, np.int64)  # every target has class weight 0
    for empty in ("nan", "zero"):
        # torch's gradient here is NaN (0/0 in its backward), unlike its zero gradient when
        # every target is ignored; the contract gives zero for both
        yield Sample(f"{name}[zero-class-weights,empty={empty}]", (x, zero_w_targets),
                     {"weight": w, "empty_reduction": empty}, contract_reference=True)
        yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (x, np.array([0, 1, 2, 1])),
                     {"empty_reduction": empty}, np.zeros(4, dtype))
    for red in ("mean", "sum"):
        yield Sample(f"{name}[empty-batch,{red}]", (np.zeros((0, 3), dtype), np.zeros(0, np.int64)),
                     {"reduction": red})
    big = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype)
    if nll:
        big = _log_softmax(big, 1).astype(dtype)
    t = np.array([1, 2, 2, 0])
    for ls in (0.0,) if nll else (0.0, 0.1):
        yield Sample(f"{name}[logits+-1e4,ls={ls}]", (big, t),
                     {"label_smoothing": ls} if ls else {})
    if not nll:
        onehot = np.eye(3, dtype=dtype)[[0, 2, 1, 1]]
        for ls in (0.0, 0.3):
            yield Sample(f"{name}[prob-onehot,ls={ls}]", (x, onehot),
                         {"label_smoothing": ls, "weight": w})
        # a probability target at exactly 0 where the logit is -1e4
        yield Sample(f"{name}[prob-zero-at-extreme]", (big, np.eye(3, dtype=dtype)[[0, 1, 0, 2]]), {})
        yield Sample(f"{name}[ls=1]", (x, np.array([0, 1, 2, -100])), {"label_smoothing": 1.0})


def _ce_random(rng, dtype, nll=False):
    name = "nll" if nll else "cross_entropy"
    n_classes = int(rng.integers(1, 7))
    kdims = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(0, 3))))
    batched = rng.random() < 0.85
    shape = ((int(rng.integers(0, 7)), n_classes) + kdims) if batched else (n_classes,)
    kind = "index" if nll or rng.random() < 0.6 else "prob"
    x, t = _class_problem(rng, dtype, shape, kind, "some" if rng.random() < 0.5 else "none")
    if nll:
        x = _log_softmax(x, 0 if len(shape) == 1 else 1).astype(dtype)
    opts = {"reduction": str(rng.choice(REDUCTIONS))}
    if rng.random() < 0.5:
        opts["weight"] = positive(rng, (n_classes,), dtype, 0.0, 2.0)
    if not nll and rng.random() < 0.5:
        opts["label_smoothing"] = float(rng.choice([0.05, 0.5, 1.0]))
    if kind == "index" and rng.random() < 0.3:
        opts["ignore_index"] = int(rng.integers(0, n_classes))
        t = np.where(t == -100, opts["ignore_index"], t)
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    sw = _index_shape_weight(rng, x, dtype) if rng.random() < 0.5 else None
    return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)


def _nll_samples(rng, dtype):
    return _ce_samples(rng, dtype, nll=True)


def _nll_random(rng, dtype):
    return _ce_random(rng, dtype, nll=True)


def _prob_input(rng, shape, dtype):
    p = rng.uniform(0.0, 1.0, size=shape)
    flat = p.reshape(-1)
    edge = [0.0, 1.0, 1e-7, 1 - 1e-7, 0.5]
    flat[: min(len(edge), flat.size)] = edge[: flat.size]
    return p.astype(dtype)


def _bce_check(named, opts):
    """elementwise_check, and input and target of one floating dtype: torch's
    binary_cross_entropy refuses mixed dtypes (binary_cross_entropy_with_logits promotes)."""
    shape = elementwise_check(named, opts)
    expect_same_dtype("target", named["target"], "input", named["input"],
                      "Found dtype {x} but expected {ref}")
    return shape


def _binary_samples(rng, dtype, logits):
    name = "binary_cross_entropy_with_logits" if logits else "binary_cross_entropy"
    shapes = {"1d": (7,), "2d": (5, 4), "3d": (2, 3, 4)}
    for shape_name, shape in shapes.items():
        full = shape_name == "2d"
        axes = dict(
            weight=("none", "full", "bcast") if full else ("none", "full"),
            pos_weight=(False, True) if logits else (False,),
            reduction=REDUCTIONS if full else ("mean", "none"),
            sw=(False, True),
        )
        for g in grid(**axes):
            g["soft"] = shape_name == "3d"  # soft targets in [0, 1]; hard 0/1 elsewhere
            x = (rng.normal(size=shape) * 3).astype(dtype) if logits else _prob_input(rng, shape, dtype)
            if g["soft"]:
                t = rng.uniform(0, 1, size=shape).astype(dtype)
            else:
                t = rng.integers(0, 2, size=shape).astype(dtype)
            opts = {"reduction": g["reduction"]}
            if g["weight"] == "full":
                opts["weight"] = positive(rng, shape, dtype)
            elif g["weight"] == "bcast":
                opts["weight"] = positive(rng, shape[-1:], dtype)
            if g["pos_weight"]:
                opts["pos_weight"] = positive(rng, shape[-1:], dtype, 0.5, 3.0)
            sw = loss_shape_weight(rng, shape, dtype) if g["sw"] else None
            yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}),
                         (x, t), opts, sw)
    # edges: exact 0 / 1 probabilities against both targets, extreme logits, empty, zero weights
    if logits:
        x = np.array([1e4, -1e4, 0.0, 50.0, -50.0, 1e4, -1e4], dtype)
    else:
        x = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7, 0.5], dtype)
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.25], dtype)
    yield Sample(f"{name}[edges,sum]", (x, t), {"reduction": "sum"})
    yield Sample(f"{name}[edges,none]", (x, t), {"reduction": "none"})
    if logits:
        yield Sample(f"{name}[edges,pos_weight]", (x, t),
                     {"pos_weight": np.full((7,), 2.5, dtype), "reduction": "sum"})
    for empty in ("nan", "zero"):
        yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (x, t),
                     {"empty_reduction": empty}, np.zeros(7, dtype))
    yield Sample(f"{name}[empty-batch]", (np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)), {})


def _binary_random(rng, dtype, logits):
    name = "binary_cross_entropy_with_logits" if logits else "binary_cross_entropy"
    shape = tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(0, 4))))
    x = (rng.normal(size=shape) * 5).astype(dtype) if logits else _prob_input(rng, shape, dtype)
    t = rng.uniform(0, 1, size=shape).astype(dtype)
    if rng.random() < 0.5:
        t = np.round(t).astype(dtype)
    opts = {"reduction": str(rng.choice(REDUCTIONS))}
    if shape and rng.random() < 0.5:
        opts["weight"] = positive(rng, shape[int(rng.integers(0, len(shape))):], dtype, 0.0, 2.0)
    if logits and shape and rng.random() < 0.5:
        opts["pos_weight"] = positive(rng, shape[-1:], dtype, 0.1, 4.0)
    sw = loss_shape_weight(rng, shape, dtype) if rng.random() < 0.5 else None
    return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)


# ---------------------------------------------------------------------------------------------
# references (torch.nn.functional)


def _ref_ce(torch, inputs, opts, reduction):
    x, t = inputs
    if opts["shift"]:  # transformers' shift (tests/test_language_models.py: ForCausalLMLoss)
        x, t = x[..., :-1], t[..., 1:]
    return torch.nn.functional.cross_entropy(
        x, t, weight=opts["weight"], ignore_index=opts["ignore_index"],
        reduction=reduction, label_smoothing=opts["label_smoothing"],
    )


def _ref_nll(torch, inputs, opts, reduction):
    x, t = inputs
    return torch.nn.functional.nll_loss(
        x, t, weight=opts["weight"], ignore_index=opts["ignore_index"], reduction=reduction
    )


def _ref_bce(torch, inputs, opts, reduction):
    x, t = inputs
    w = opts["weight"]
    return torch.nn.functional.binary_cross_entropy(
        x, t, weight=None if w is None else w.expand_as(x), reduction=reduction
    )


def _ref_bce_logits(torch, inputs, opts, reduction):
    x, t = inputs
    return torch.nn.functional.binary_cross_entropy_with_logits(
        x, t, weight=opts["weight"], pos_weight=opts["pos_weight"], reduction=reduction
    )


# ---------------------------------------------------------------------------------------------
# specs

CLASS_INPUTS = (
    InputSpec("input", "unnormalised scores (logits), shape (C,), (N, C) or (N, C, d1, ..., dk)"),
    InputSpec(
        "target",
        "class indices (integer, shape of input without the class axis) or class "
        "probabilities (floating, input's shape); differentiable when probabilities",
    ),
)

register(
    LossSpec(
        name="cross_entropy",
        family=FAMILY,
        summary="Cross-entropy between logits and class indices or class probabilities.",
        aliases=("CrossEntropyLoss", "ce"),
        inputs=CLASS_INPUTS,
        options=(WEIGHT_CLASS, IGNORE_INDEX, LABEL_SMOOTHING, COMPILE, SHIFT),
        formula=(
            "shift=True: input[..., :-1] and target[..., 1:] below (transformers' causal-LM "
            "shift).\n"
            "logp = log_softmax(input, class axis); ls = label_smoothing; C classes.\n"
            "class indices: l_n = (1 - ls) * w[t_n] * (-logp[n, t_n]) + (ls / C) * "
            "sum_c w_c * (-logp[n, c]), and 0 where t_n == ignore_index;\n"
            "  'mean' = sum_n l_n / sum_n w[t_n] over targets not ignored.\n"
            "probabilities: t' = (1 - ls) * t + ls / C; l_n = -sum_c w_c * t'_c * logp[n, c];\n"
            "  'mean' = sum_n l_n / N (the number of samples, not the summed weights)."
        ),
        reference_name="torch.nn.functional.cross_entropy (torch 2.13)",
        notes=(
            "Class indices may be int32 (JAX's default integer) on both backends, where torch "
            "wants int64 ('expected target dtype to be Long or Byte'). "
            "optax.softmax_cross_entropy(_with_integer_labels) has no class weights, "
            "ignore_index, label smoothing or reduction; Keras' class_weight under its default "
            "'sum_over_batch_size' divides by the number of samples, not by the summed weights. "
            "An out-of-range class index raises where target values are concrete and gives NaN "
            "under a trace (torch raises; optax returns a silent number). "
            "shift=True is transformers' ForCausalLMLoss (with num_items_in_batch= at the "
            "call as its normalizer), which takes (B, T, V) logits: here the class axis is "
            "torch's, (B, V, T) (logits.transpose(1, 2)); transformers computes in float32 "
            "even for float64 logits, multiloss keeps float64. The target's first position "
            "is still checked as a class index though the shift never reads it."
        ),
        check=_ce_check,
        check_values=check_class_indices,
        value_args=("target",),
        samples=_ce_samples,
        random_sample=_ce_random,
        reference=_ref_ce,
        normalizer=_class_normalizer,
    )
)

register(
    LossSpec(
        name="nll",
        family=FAMILY,
        summary="Negative log-likelihood of class indices under log-probabilities.",
        aliases=("nll_loss", "NLLLoss", "NLLLoss2d", "negative_log_likelihood"),
        inputs=(
            InputSpec("input", "log-probabilities, shape (C,), (N, C) or (N, C, d1, ..., dk)"),
            InputSpec("target", "integer class indices, the input's shape without the class axis",
                      differentiable=False),
        ),
        options=(WEIGHT_CLASS, IGNORE_INDEX),
        formula=(
            "l_n = -w[t_n] * input[n, t_n], 0 where t_n == ignore_index;\n"
            "'mean' = sum_n l_n / sum_n w[t_n] over targets not ignored."
        ),
        reference_name="torch.nn.functional.nll_loss (torch 2.13)",
        notes=(
            "Class indices may be int32 (JAX's default integer) on both backends, where torch "
            "wants int64 ('expected target dtype to be Long or Byte'). "
            "The input is not normalised: nll(log_softmax(x), t) == cross_entropy(x, t)."),
        check=_nll_check,
        check_values=check_class_indices,
        value_args=("target",),
        samples=_nll_samples,
        random_sample=_nll_random,
        reference=_ref_nll,
        normalizer=_class_normalizer,
    )
)

register(
    LossSpec(
        name="binary_cross_entropy",
        family=FAMILY,
        summary="Binary cross-entropy between probabilities and targets in [0, 1].",
        aliases=("BCELoss", "bce"),
        inputs=(
            InputSpec("input", "probabilities in [0, 1], any shape"),
            InputSpec("target", "targets in [0, 1], the input's shape"),
        ),
        options=(
            Option("weight", None, "element weights broadcast to the input (not normalised)",
                   array_option(), kind="array", allowed="None | array broadcasting to input"),
        ),
        formula=(
            "l = -w * (t * max(log x, -100) + (1 - t) * max(log(1 - x), -100));\n"
            "'mean' = mean(l) (the weight is not normalised).\n"
            "d l / d x = w * (x - t) / max(x * (1 - x), 1e-12) (torch's, not the derivative of "
            "the clamped forward); d l / d t = -w * logit(x)."
        ),
        reference_name="torch.nn.functional.binary_cross_entropy (torch 2.13)",
        notes=(
            "Keras clips probabilities to [1e-7, 1 - 1e-7]; torch (and multiloss) clamp the logs "
            "at -100 instead. An input or target outside [0, 1] (NaN included) raises, as in "
            "torch, where the values are concrete; under a JAX trace it is not checked (the "
            "input gives NaN). Input and target must have one floating dtype, as in torch (a "
            "TypeError, where the other losses promote mixed float dtypes)."
        ),
        check=_bce_check,
        check_values=_check_probabilities,
        value_args=("input", "target"),
        value_kinds="f",
        samples=lambda rng, dtype: _binary_samples(rng, dtype, logits=False),
        random_sample=lambda rng, dtype: _binary_random(rng, dtype, logits=False),
        reference=_ref_bce,
        normalizer=_ones_normalizer,
    )
)

register(
    LossSpec(
        name="binary_cross_entropy_with_logits",
        family=FAMILY,
        summary="Binary cross-entropy on logits (a sigmoid folded in, numerically stable).",
        aliases=("BCEWithLogitsLoss", "bce_with_logits", "sigmoid_binary_cross_entropy"),
        inputs=(
            InputSpec("input", "logits, any shape"),
            InputSpec("target", "targets in [0, 1], the input's shape"),
        ),
        options=(
            Option("weight", None, "element weights broadcast to the input (not normalised)",
                   array_option(), kind="array", allowed="None | array broadcasting to input"),
            Option("pos_weight", None,
                   "weight of the positive term, broadcast along the trailing (class) dimension",
                   array_option(), kind="array", allowed="None | array broadcasting to input"),
        ),
        formula=(
            "l = w * ((1 - t) * x - (1 + (pos_weight - 1) * t) * log_sigmoid(x));\n"
            "'mean' = mean(l) (weights are not normalised)."
        ),
        reference_name="torch.nn.functional.binary_cross_entropy_with_logits (torch 2.13)",
        notes=(
            "optax.sigmoid_binary_cross_entropy has no weight, pos_weight or reduction; Keras "
            "binary_crossentropy(from_logits=True) averages over the last axis first."
        ),
        check=_bce_logits_check,
        samples=lambda rng, dtype: _binary_samples(rng, dtype, logits=True),
        random_sample=lambda rng, dtype: _binary_random(rng, dtype, logits=True),
        reference=_ref_bce_logits,
        normalizer=_ones_normalizer,
    )
)


# ---------------------------------------------------------------------------------------------
# margin losses: multi_margin, multilabel_margin, soft_margin, multilabel_soft_margin


def _margin_scores(x):
    expect_float("input", x, "floating-point scores")
    if x.ndim > 2:
        raise ValueError(f"input: expected shape (), (C,) or (N, C), got shape {x.shape}")
    return 1 if x.ndim == 0 else x.shape[-1]


def _multi_margin_check(named, opts):
    x, t = named["input"], named["target"]
    n_classes = _margin_scores(x)
    if t.kind not in "iu":
        raise TypeError(f"target: expected integer class indices, got {t.describe()}")
    allowed = [(x.shape[0],)] if x.ndim == 2 else [(), (1,)]
    if t.shape not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise ValueError(
            f"target: expected class indices of shape {want} for input of shape {x.shape}, "
            f"got shape {t.shape}"
        )
    check_class_weight(opts, n_classes)
    return t.shape


def _margin_index_values(lo):
    def check(values, infos, opts):
        t = values.get("target")
        if t is None or t.size == 0:
            return
        n_classes = 1 if infos["input"].ndim == 0 else infos["input"].shape[-1]
        bad = (t < lo) | (t >= n_classes)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            where = f" at index {pos}" if pos else ""
            what = "class indices" if lo == 0 else "class indices or -1 (end of the targets)"
            raise ValueError(
                f"target: expected {what} in [{lo}, {n_classes}), got {t[bad][0]}{where}"
            )

    return check


def _multilabel_margin_check(named, opts):
    x, t = named["input"], named["target"]
    _margin_scores(x)
    if t.kind not in "iu":
        raise TypeError(
            f"target: expected integer class indices padded with -1, got {t.describe()}"
        )
    allowed = [x.shape] if x.ndim else [(), (1,)]
    if t.shape not in allowed:
        raise ValueError(
            f"target: expected class indices padded with -1 of the input's shape {x.shape}, "
            f"got shape {t.shape}"
        )
    return x.shape[:1] if x.ndim == 2 else ()


def _multilabel_soft_margin_check(named, opts):
    x = named["input"]
    if x.ndim == 0:
        raise ValueError(f"input: expected shape (C,) or (N, C), got shape {x.shape}")
    elementwise_check(named, opts)
    return x.shape[:-1]


def _margin_samples(name, multilabel):
    def samples(rng, dtype):
        shapes = {"2d": (6, 5), "unbatched": (5,)}
        axes_opts = (
            [{}] if multilabel
            else [{}, {"p": 2}, {"margin": 0.5, "weight": True}, {"p": 2, "margin": 2.0, "weight": True}]
        )
        for shape_name, shape in shapes.items():
            full = shape_name == "2d"
            for g in grid(extra=axes_opts, reduction=REDUCTIONS if full else ("mean", "none"),
                          sw=(False, True)):
                x = (rng.normal(size=shape) * 1.5).astype(dtype)
                c = shape[-1]
                opts = {"reduction": g["reduction"], **g["extra"]}
                if opts.get("weight") is True:
                    opts["weight"] = positive(rng, (c,), dtype)
                t = _margin_targets(rng, shape, multilabel)
                loss_shape = (shape[0],) if full else ()
                sw = loss_shape_weight(rng, loss_shape, dtype) if g["sw"] else None
                yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}),
                             (x, t), opts, sw)
        # exact ties at the hinge (margin - x_t + x_i == 0): no gradient (torch tests z > 0)
        x = np.array([[1.0, 0.0, 2.0, 1.0], [0.5, -0.5, 1.5, 0.5], [3.0, 2.0, 2.0, 2.5]], dtype)
        t = (np.array([[2, -1, 0, 0], [2, 0, -1, 0], [0, 3, -1, 0]]) if multilabel
             else np.array([2, 2, 0]))
        for opts in ([{}] if multilabel else [{}, {"p": 2}]):
            yield Sample(case_id(f"{name}[ties]", opts), (x, t), opts)
        if multilabel:
            # targets after the first -1 are ignored; repeated targets count twice
            t = np.array([[3, 3, -1, 1], [-1, 0, 1, 2], [0, 1, 2, 3]])
            yield Sample(f"{name}[prefix-and-repeats,none]", (x, t), {"reduction": "none"})
        xi = np.array([[np.inf, 0.0, 1.0, 2.0], [1.0, -np.inf, 0.5, 0.0]], dtype)
        ti = np.array([[1, -1, 0, 0], [2, -1, 0, 0]]) if multilabel else np.array([1, 2])
        yield Sample(f"{name}[inf,none]", (xi, ti), {"reduction": "none"})
        xs = (rng.normal(size=(3, 4))).astype(dtype)
        ts = _margin_targets(rng, (3, 4), multilabel)
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (xs, ts),
                         {"empty_reduction": empty}, np.zeros(3, dtype))
        t0 = np.zeros((0, 4), np.int64) if multilabel else np.zeros(0, np.int64)
        for red in ("mean", "sum"):
            # on an empty batch torch's kernels return uninitialised memory for "sum" (and
            # multilabel_margin's "mean"; multi_margin's "mean" is 0): the contract's mean is
            # NaN, its sum 0
            yield Sample(f"{name}[empty-batch,{red}]", (np.zeros((0, 4), dtype), t0),
                         {"reduction": red}, contract_reference=True)

    return samples


def _margin_targets(rng, shape, multilabel):
    c = shape[-1]
    lead = shape[:-1]
    if not multilabel:
        return rng.integers(0, c, size=lead).astype(np.int64)
    t = np.full(shape, -1, np.int64)
    for idx in np.ndindex(*lead):
        k = int(rng.integers(0, c + 1))
        t[idx][:k] = rng.permutation(c)[:k]
    return t


def _margin_random(name, multilabel):
    def random_sample(rng, dtype):
        c = int(rng.integers(1, 6))
        batched = rng.random() < 0.8
        shape = (int(rng.integers(0, 5)), c) if batched else (c,)
        x = (rng.normal(size=shape) * 2).astype(dtype)
        if x.size > 1 and rng.random() < 0.5:
            x = np.round(x * 2) / 2  # halves: ties at the hinge happen
        t = _margin_targets(rng, shape, multilabel)
        opts = {"reduction": str(rng.choice(REDUCTIONS))}
        if not multilabel:
            opts["p"] = int(rng.choice([1, 2]))
            opts["margin"] = float(rng.choice([0.0, 1.0, 1.5, -0.5]))
            if rng.random() < 0.5:
                opts["weight"] = positive(rng, (c,), dtype, 0.0, 2.0)
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        sw = loss_shape_weight(rng, shape[:1] if batched else (), dtype) if rng.random() < 0.5 else None
        empty = batched and shape[0] == 0 and opts["reduction"] != "none"
        return Sample(case_id(f"{name}[random]", opts), (x.astype(dtype), t), opts, sw,
                      contract_reference=empty)

    return random_sample


def _soft_samples(name, multilabel):
    def samples(rng, dtype):
        shapes = {"2d": (5, 4), "1d": (6,)} if multilabel else {"2d": (5, 4), "1d": (7,), "3d": (2, 3, 4)}
        for shape_name, shape in shapes.items():
            full = shape_name == "2d"
            weights = ("none", "full", "bcast") if multilabel and full else ("none",)
            for g in grid(weight=weights, reduction=REDUCTIONS if full else ("mean", "none"),
                          sw=(False, True)):
                x = (rng.normal(size=shape) * 2).astype(dtype)
                if multilabel:
                    t = rng.uniform(0, 1, size=shape).astype(dtype)
                    t[..., 0] = np.round(t[..., 0])
                else:
                    t = rng.choice([-1.0, 1.0], size=shape).astype(dtype)
                opts = {"reduction": g["reduction"]}
                if g["weight"] == "full":
                    opts["weight"] = positive(rng, shape, dtype)
                elif g["weight"] == "bcast":
                    opts["weight"] = positive(rng, shape[-1:], dtype)
                loss_shape = shape[:-1] if multilabel else shape
                sw = loss_shape_weight(rng, loss_shape, dtype) if g["sw"] else None
                yield Sample(case_id(f"{name}[{shape_name}]", {**opts, "sw": g["sw"]}),
                             (x, t), opts, sw)
        # extreme logits, targets outside {-1, 1} (torch computes the formula as is), inf, NaN
        x = np.array([[-1e3, 1e3, 0.0, 2.0, 50.0, -50.0, np.inf, np.nan]], dtype)
        t = np.array([[1.0, 1.0, 0.5, -3.0, -1.0, 1.0, 1.0, -1.0]], dtype)
        if multilabel:
            t = np.clip(t, 0.0, 1.0).astype(dtype)
        yield Sample(f"{name}[extremes,none]", (x, t), {"reduction": "none"})
        for empty in ("nan", "zero"):
            xs, ts = x[:, :4], t[:, :4]
            sw_shape = (1,) if multilabel else (1, 4)
            yield Sample(f"{name}[zero-sample-weights,empty={empty}]", (xs, ts),
                         {"empty_reduction": empty}, np.zeros(sw_shape, dtype))
        yield Sample(f"{name}[empty-batch]", (np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)), {})

    return samples


def _soft_random(name, multilabel):
    def random_sample(rng, dtype):
        ndim = int(rng.integers(1, 4)) if multilabel else int(rng.integers(0, 4))
        shape = tuple(int(d) for d in rng.integers(0, 5, size=ndim))
        if multilabel:
            shape = shape[:-1] + (max(shape[-1], 1),)
        x = (rng.normal(size=shape) * 4).astype(dtype)
        if multilabel:
            t = rng.uniform(0, 1, size=shape).astype(dtype)
        else:
            t = rng.choice([-1.0, 1.0, 0.5, 2.0], size=shape).astype(dtype)
        opts = {"reduction": str(rng.choice(REDUCTIONS))}
        if multilabel and rng.random() < 0.5:
            opts["weight"] = positive(rng, shape[int(rng.integers(0, len(shape))):], dtype, 0.0, 2.0)
        if rng.random() < 0.3:
            opts["empty_reduction"] = "zero"
        loss_shape = shape[:-1] if multilabel else shape
        sw = loss_shape_weight(rng, loss_shape, dtype) if rng.random() < 0.5 else None
        return Sample(case_id(f"{name}[random]", opts), (x, t), opts, sw)

    return random_sample


def _ref_multi_margin(torch, inputs, opts, reduction):
    x, t = inputs
    return torch.nn.functional.multi_margin_loss(
        x, t.long(), p=opts["p"], margin=opts["margin"], weight=opts["weight"], reduction=reduction
    )


def _ref_multilabel_margin(torch, inputs, opts, reduction):
    x, t = inputs
    return torch.nn.functional.multilabel_margin_loss(x, t.long(), reduction=reduction)


def _ref_soft_margin(torch, inputs, opts, reduction):
    return torch.nn.functional.soft_margin_loss(*inputs, reduction=reduction)


def _ref_multilabel_soft_margin(torch, inputs, opts, reduction):
    x, t = inputs
    return torch.nn.functional.multilabel_soft_margin_loss(x, t, weight=opts["weight"],
                                                           reduction=reduction)


def _shape_normalizer(loss_shape):
    def normalizer(inputs, opts):
        shape = loss_shape(inputs)
        return np.ones(shape), np.ones(shape)

    return normalizer


def _target_shape(inputs):
    return inputs[1].shape


def _rows(inputs):
    x = inputs[0]
    return x.shape[:1] if x.ndim == 2 else ()


def _p_option(name, value):
    value = integer(name, value)
    if value not in (1, 2):
        raise ValueError(f"{name}: expected 1 or 2 (as torch), got {value}")
    return value


MARGIN_SCORES = InputSpec("input", "scores, shape (C,) or (N, C)")

register(
    LossSpec(
        name="multi_margin",
        family=FAMILY,
        summary="Multi-class hinge loss (a margin between the target's score and each other's).",
        aliases=("multi_margin_loss", "MultiMarginLoss"),
        inputs=(
            MARGIN_SCORES,
            InputSpec("target", "integer class indices, shape (N,) (() or (1,) for a (C,) input)",
                      differentiable=False),
        ),
        options=(
            Option("p", 1, "the hinge's power", _p_option, allowed="1 | 2"),
            Option("margin", 1.0, "the margin", real(), allowed="float"),
            Option("weight", None, "per-class weights, shape (C,): the target's weight scales "
                   "its sample's loss (not normalised)", array_option(ndim=1), kind="array",
                   allowed="None | array (C,)"),
        ),
        formula=(
            "l_n = sum_{i != y_n} w[y_n] * max(0, margin - x[n, y_n] + x[n, i])^p / C;\n"
            "'mean' = mean over n (the weights are not normalised). The gradient at a tie "
            "(margin - x_y + x_i == 0) is 0 (torch tests > 0)."
        ),
        reference_name="torch.nn.functional.multi_margin_loss (torch 2.13)",
        notes=(
            "Class indices of any integer dtype (int32: JAX's default), where torch wants int64 "
            "('expected scalar type Long'). "
            "float16/bfloat16 inputs: torch has no CPU kernel ('not implemented for Half'), so "
            "the torch backend raises torch's NotImplementedError on CPU; JAX computes in float32 "
            "and rounds to the input's dtype. "
            "On an empty batch torch's 'mean' is 0 and its 'sum' uninitialised memory; the "
            "contract gives NaN (or 0 with empty_reduction='zero') and 0. Keras' categorical_hinge is a different loss (one margin "
            "against the largest other score)."
        ),
        check=_multi_margin_check,
        check_values=_margin_index_values(0),
        value_args=("target",),
        samples=_margin_samples("multi_margin", multilabel=False),
        random_sample=_margin_random("multi_margin", multilabel=False),
        reference=_ref_multi_margin,
        normalizer=_shape_normalizer(_target_shape),
    )
)

register(
    LossSpec(
        name="multilabel_margin",
        family=FAMILY,
        summary="Multi-label hinge loss between each listed target class and every other class.",
        aliases=("multilabel_margin_loss", "MultiLabelMarginLoss"),
        inputs=(
            MARGIN_SCORES,
            InputSpec("target", "integer class indices, the input's shape, read up to the first "
                      "-1 (the rest is padding)", differentiable=False),
        ),
        options=(),
        formula=(
            "J_n = the targets y[n, j] before the first -1; l_n = sum_{j in J_n} "
            "sum_{i not in J_n} max(0, 1 - x[n, y[n, j]] + x[n, i]) / C;\n"
            "'mean' = mean over n. A repeated target counts twice; the gradient at a tie is 0 "
            "(torch tests > 0)."
        ),
        reference_name="torch.nn.functional.multilabel_margin_loss (torch 2.13)",
        notes=(
            "Class indices of any integer dtype (int32: JAX's default), where torch wants int64 "
            "('expected scalar type Long'). "
            "float16/bfloat16 inputs: torch has no CPU kernel ('not implemented for Half'), so "
            "the torch backend raises torch's NotImplementedError on CPU; JAX computes in float32 "
            "and rounds to the input's dtype. "
            "Every target entry, padding included, must be in [-1, C) (as torch checks). On an "
            "empty batch torch's 'mean' and 'sum' read uninitialised memory; the contract gives "
            "NaN (or 0 with empty_reduction='zero') and 0. Memory O(N C^2) on JAX (torch's kernel loops)."
        ),
        check=_multilabel_margin_check,
        check_values=_margin_index_values(-1),
        value_args=("target",),
        samples=_margin_samples("multilabel_margin", multilabel=True),
        random_sample=_margin_random("multilabel_margin", multilabel=True),
        reference=_ref_multilabel_margin,
        normalizer=_shape_normalizer(_rows),
    )
)

register(
    LossSpec(
        name="soft_margin",
        converts={"target": ("iub", "float")},  # torch converts these (tests/test_torch_dtypes.py)
        family=FAMILY,
        summary="Two-class logistic loss on targets in {-1, 1}.",
        aliases=("soft_margin_loss", "SoftMarginLoss"),
        inputs=(
            InputSpec("input", "scores, any shape"),
            InputSpec("target", "targets, usually -1 or 1, the input's shape (floating; torch "
                      "does not differentiate it)", differentiable=False),
        ),
        options=(),
        formula=(
            "l = log(1 + exp(-t * x)), computed as torch does, log1p(exp(-t x)): it overflows "
            "to inf (gradient NaN) where -t x > ~709 (float64) or ~88 (float32)."
        ),
        reference_name="torch.nn.functional.soft_margin_loss (torch 2.13)",
        notes=(
            "Mixed floating inputs are computed in their common dtype, which is the result's "
            "dtype (torch's kernel returns the input's dtype here). "
            "Not softplus: like torch, the value overflows for very negative margins. Targets "
            "other than -1 and 1 are used as they are. A target of another shape is an error "
            "(torch broadcasts)."
        ),
        check=elementwise_check,
        samples=_soft_samples("soft_margin", multilabel=False),
        random_sample=_soft_random("soft_margin", multilabel=False),
        reference=_ref_soft_margin,
        normalizer=_ones_normalizer,
    )
)

register(
    LossSpec(
        name="multilabel_soft_margin",
        converts={"target": ("iu", "float")},  # torch converts these (tests/test_torch_dtypes.py)
        family=FAMILY,
        summary="Multi-label one-versus-all logistic loss, averaged over the classes.",
        aliases=("multilabel_soft_margin_loss", "MultiLabelSoftMarginLoss"),
        inputs=(
            InputSpec("input", "logits, shape (C,) or (N, C) (or (N, ..., C): classes last)"),
            InputSpec("target", "targets in [0, 1], the input's shape"),
        ),
        options=(
            Option("weight", None, "weights broadcast to the input (usually per class, (C,)); "
                   "not normalised", array_option(), kind="array",
                   allowed="None | array broadcasting to input"),
        ),
        formula=(
            "l_n = -sum_c w_c * (t[n, c] log_sigmoid(x[n, c]) + (1 - t[n, c]) "
            "log_sigmoid(-x[n, c])) / C;\n'mean' = mean over n (the weights are not normalised)."
        ),
        reference_name="torch.nn.functional.multilabel_soft_margin_loss (torch 2.13)",
        notes=(
            "Equals binary_cross_entropy_with_logits averaged over the last axis (Keras' "
            "binary_crossentropy(from_logits=True) without its clipping). A target of another "
            "shape is an error (torch broadcasts)."
        ),
        check=_multilabel_soft_margin_check,
        samples=_soft_samples("multilabel_soft_margin", multilabel=True),
        random_sample=_soft_random("multilabel_soft_margin", multilabel=True),
        reference=_ref_multilabel_soft_margin,
        normalizer=_shape_normalizer(lambda inputs: inputs[0].shape[:-1]),
    )
)

# the specs of linear_cross_entropy and of the extras (focal, softmax_focal, poly-1, ...)
from . import _linear_spec, _more_spec  # noqa: E402,F401
