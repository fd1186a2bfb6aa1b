"""The spec of linear_cross_entropy: cross-entropy of ``input @ linear_weight.T (+ bias)``
without materialising the logits (torch 2.13's ``F.linear_cross_entropy``), plus multiloss's
``softcap`` and ``z_loss``. Implementations: ``_linear_jax.py`` and ``_linear_torch.py``."""

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
    check_class_weight,
    expect_float,
    expect_same_dtype,
    grid,
    loss_shape_weight,
    positive,
)

#: Default bytes for the temporaries of a tile (its logits, softmax and gradient); shared by
#: the JAX and torch functions (a framework-free module, so neither imports the other).
DEFAULT_MEMORY_BUDGET = 128 * 2**20

FAMILY = "classification"


def _optional_int(name, value):
    return None if value is None else integer(name, value)


def _softcap(name, value):
    return None if value is None else real(0.0, lo_open=True)(name, value)


def _positive_int_or_none(name, value):
    if value is None:
        return None
    value = integer(name, value)
    if value < 1:
        raise ValueError(f"{name}: expected None or an int >= 1, got {value}")
    return value


OPTIONS = (
    Option("linear_bias", None, "bias added to the logits, shape (C,) or (C, d1, ..., dK) as "
           "linear_weight's leading dims (torch's keyword). It is an option, not an input: on "
           "torch a buffer (assign a Parameter to module.linear_bias to train it), on JAX a jit "
           "argument", array_option(), kind="array", allowed="None | array (C, d1, ...)"),
    Option("weight", None, "per-class weights, shape (C,); the 'mean' divides by the summed "
           "weights of the targets that count", array_option(ndim=1), kind="array",
           allowed="None | array (C,)"),
    Option("ignore_index", None, "class index whose targets contribute nothing; None: -100 for "
           "class indices (torch's default); must be None with class probabilities",
           _optional_int, allowed="None | int"),
    Option("label_smoothing", 0.0, "mass moved from the target to a uniform distribution over "
           "the C classes", real(0.0, 1.0), allowed="float in [0, 1]"),
    Option("softcap", None, "multiloss: cap the logits smoothly, z = softcap * tanh(z / softcap), "
           "before the softmax (Gemma 2's logit soft-capping)", _softcap,
           allowed="None | float > 0"),
    Option("z_loss", 0.0, "multiloss: add z_loss * lse^2 per target (lse: the log-sum-exp of "
           "its logits), weighted like the target (w[t], 0 where ignored): PaLM's auxiliary "
           "loss that keeps the log-normaliser near 0", real(0.0), allowed="float >= 0"),
    Option("chunk_size", None, "rows per chunk (None: chosen from memory_budget)",
           _positive_int_or_none, allowed="None | int >= 1"),
    Option("memory_budget", None, "bytes for a chunk's temporaries (its logits, softmax and "
           "gradient); None: 128 MiB", _positive_int_or_none, allowed="None | int bytes"),
    Option("shift", False, "causal-LM shift, as transformers' ForCausalLMLoss: hidden states "
           "(N, T, in_features), targets (N, T); the features at position i predict the "
           "target at i + 1 (input[:, :-1] against target[:, 1:]), the last position is "
           "dropped: the unreduced loss is (N, T - 1). Class-index targets and a 2-D "
           "linear_weight only; pass the number of valid targets of the whole step (after "
           "the shift) as normalizer= or num_items_in_batch= (docs/language-models.md)",
           boolean, allowed="bool"),
)


# ---------------------------------------------------------------------------------------------
# checks


def _shapes(x, wl):
    """(C, out_features, batch shape) of input and linear_weight."""
    n_classes, out = wl.shape[0], tuple(wl.shape[1:-1])
    return n_classes, out, tuple(x.shape[:-1])


def _check(named, opts):
    if opts.get("shift"):
        return _shift_check(named, opts)
    return _plain_check(named, opts)


def _shift_check(named, opts):
    """shift=True: hidden states (N, T, D), linear_weight (C, D), class indices (N, T); the
    checks of the flattened (N * (T - 1), D) call; the loss is (N, T - 1)."""
    x, wl, t = named["input"], named["linear_weight"], named["target"]
    if x.ndim != 3 or wl.ndim != 2 or t.kind not in "iu":
        raise ValueError(
            f"shift: needs hidden states (N, T, in_features), a linear_weight (C, "
            f"in_features) and integer targets (N, T), got input {x.describe()}, "
            f"linear_weight {wl.describe()} and target {t.describe()}")
    if t.shape != x.shape[:2]:
        raise ValueError(f"target: expected class indices of shape {x.shape[:2]} (input's "
                         f"(N, T)), got shape {t.shape}")
    n, steps = x.shape[0], max(x.shape[1] - 1, 0)
    flat = dict(named, input=x._replace(shape=(n * steps, x.shape[2])),
                target=t._replace(shape=(n * steps,)))
    _plain_check(flat, opts)
    return (n, steps)


def _plain_check(named, opts):
    x, wl, t = named["input"], named["linear_weight"], named["target"]
    expect_float("input", x, "floating-point features")
    expect_float("linear_weight", wl, "a floating-point weight")
    expect_same_dtype("linear_weight", wl, "input", x,
                      "expected m1 and m2 to have the same dtype, but got: {ref} != {x}")
    if x.ndim not in (1, 2):
        raise ValueError(f"input: expected shape (in_features,) or (N, in_features), got {x.shape}")
    if wl.ndim < 2:
        raise ValueError(
            f"linear_weight: expected shape (C, in_features) or (C, d1, ..., dK, in_features), "
            f"got {wl.shape}")
    if wl.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"linear_weight: expected in_features {x.shape[-1]} (input's last dimension) as its "
            f"last dimension, got shape {wl.shape}")
    n_classes, out, batch = _shapes(x, wl)
    if out and x.ndim != 2:
        raise ValueError(
            f"input: a K-dimensional loss (linear_weight of shape {wl.shape}) needs a batched "
            f"input (N, {x.shape[-1]}), got shape {x.shape}")
    idx_shape = batch + out
    prob_shape = batch + (n_classes,) + out
    if t.kind in "iu":
        if t.shape != idx_shape:
            raise ValueError(f"target: expected class indices of shape {idx_shape}, got shape "
                             f"{t.shape}")
    elif t.kind == "f":
        if t.shape != prob_shape:
            if t.shape == idx_shape:
                raise TypeError(
                    f"target: got {t.describe()}, the shape of class indices but a floating "
                    f"dtype; class indices must be integers, class probabilities must have "
                    f"shape {prob_shape}")
            raise ValueError(f"target: expected integer class indices of shape {idx_shape} or "
                             f"class probabilities of shape {prob_shape}, got {t.describe()}")
        if opts["ignore_index"] is not None:
            raise ValueError("ignore_index: must be None with class-probability targets (as in "
                             f"torch), got {opts['ignore_index']}")
    else:
        raise TypeError(f"target: expected integer class indices of shape {idx_shape} or "
                        f"floating class probabilities of shape {prob_shape}, got {t.describe()}")
    check_class_weight(opts, n_classes)
    b = opts.get("linear_bias")
    if b is not None and tuple(b.shape) != (n_classes,) + out:
        raise ValueError(f"linear_bias: expected shape {(n_classes,) + out}, got "
                         f"{tuple(b.shape)}")
    return idx_shape


def _check_values(values, infos, opts):
    t = values.get("target")
    if t is None or t.size == 0:
        return
    n_classes = infos["linear_weight"].shape[0]
    ignore = -100 if opts["ignore_index"] is None else opts["ignore_index"]
    bad = ((t < 0) | (t >= n_classes)) & (t != ignore)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {pos}" if pos else ""
        raise ValueError(f"target: expected class indices in [0, {n_classes}) or equal "
                         f"ignore_index={ignore}, got {t[bad][0]}{where}")


def _normalizer(inputs, opts):
    x, wl, t = inputs
    if opts.get("shift"):
        x, t = x[:, :-1].reshape(-1, x.shape[-1]), t[:, 1:]
    if np.issubdtype(np.asarray(t).dtype, np.floating):
        n_classes, out, batch = _shapes(x, wl)
        shape = batch + out
        return np.ones(shape), np.ones(shape)
    ignore = -100 if opts["ignore_index"] is None else opts["ignore_index"]
    valid = t != ignore
    w = opts["weight"]
    wt = np.ones(t.shape) if w is None else np.asarray(w, np.float64)[np.where(valid, t, 0)]
    return np.where(valid, wt, 0.0), valid.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# reference


def _ref(torch, inputs, opts, reduction):
    """torch's F.linear_cross_entropy (its reference path, options=None); with softcap or
    z_loss, the formula written on torch's own ops: logits = F.linear(input, W, b), capped
    z = s * tanh(logits / s), l = F.cross_entropy(z, t, 'none') + z_loss * w[t] *
    logsumexp(z)^2 (0 where ignored; unweighted for probabilities), reduced as torch's
    cross_entropy ('mean': sum(l) / sum(w[t]) over the targets that count, / N for
    probabilities)."""
    F = torch.nn.functional
    x, wl, t = inputs
    if opts["shift"]:  # transformers' shift (tests/test_language_models.py: ForCausalLMLoss)
        n, steps = x.shape[0], max(x.shape[1] - 1, 0)
        flat = (x[:, :-1].reshape(-1, x.shape[-1]), wl, t[:, 1:].reshape(-1))
        out = _ref(torch, flat, {**opts, "shift": False}, reduction)
        return out.reshape(n, steps) if reduction == "none" else out
    b, w = opts["linear_bias"], opts["weight"]
    if opts["softcap"] is None and not opts["z_loss"]:
        return F.linear_cross_entropy(x, wl, t, linear_bias=b, weight=w, reduction=reduction,
                                      ignore_index=opts["ignore_index"],
                                      label_smoothing=opts["label_smoothing"])
    n_classes, out, batch = _shapes(x, wl)
    y = F.linear(x, wl.reshape(-1, wl.shape[-1]), None if b is None else b.reshape(-1))
    y = y.reshape(batch + (n_classes,) + out)
    if opts["softcap"] is not None:
        s = opts["softcap"]
        y = s * torch.tanh(y / s)
    ignore = -100 if opts["ignore_index"] is None else opts["ignore_index"]
    loss = F.cross_entropy(y, t, weight=w, ignore_index=ignore, reduction="none",
                           label_smoothing=opts["label_smoothing"])
    axis = 0 if x.ndim == 1 else 1
    prob = t.is_floating_point()
    if prob:
        den = torch.tensor(float(loss.numel()), dtype=loss.dtype)
        wt = None
    else:
        counts = t != ignore
        safe = torch.where(counts, t, torch.zeros_like(t))
        wt = torch.ones_like(loss) if w is None else w[safe]
        wt = torch.where(counts, wt, torch.zeros_like(wt))
        den = wt.sum()
    if opts["z_loss"]:
        lse = torch.logsumexp(y, dim=axis)
        zl = opts["z_loss"] * lse * lse
        # 0 where ignored (also where the row's lse is NaN or inf, as cross_entropy's own term)
        loss = loss + (zl if prob else torch.where(counts, zl * wt, torch.zeros_like(zl)))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / den


# ---------------------------------------------------------------------------------------------
# samples


def _problem(rng, dtype, n, d, n_classes, out=(), kind="index", ignore="some"):
    batch = (n,) if n is not None else ()
    x = (rng.normal(size=batch + (d,)) * 0.8).astype(dtype)
    wl = (rng.normal(size=(n_classes,) + out + (d,)) * 0.8).astype(dtype)
    if kind == "prob":
        t = rng.dirichlet(np.ones(n_classes), size=(batch + out) or None)
        t = np.moveaxis(np.asarray(t), -1, len(batch)).astype(dtype)
        return x, wl, t
    t = rng.integers(0, n_classes, size=batch + out).astype(np.int64)
    if ignore == "some" and t.size > 1:
        t.flat[:: max(2, t.size // 3)] = -100
    return x, wl, t


def _fill(rng, dtype, opts, n_classes, out):
    """Arrays for the option flags of a case: weight=True, linear_bias=True."""
    opts = dict(opts)
    if opts.get("weight") is True:
        opts["weight"] = positive(rng, (n_classes,), dtype, 0.2, 2.0)
    if opts.get("linear_bias") is True:
        opts["linear_bias"] = (rng.normal(size=(n_classes,) + out) * 0.5).astype(dtype)
    return opts


#: Options of the 2-D grid. TILES: chunks of 4 rows (of 7: the last chunk shifted back over
#: its predecessor) and blocks of 2 (float64) or 4 (float32) of the 5 classes (the last block
#: shifted too), so that every loop runs on the small sample shapes; ROWS: chunks of rows
#: spanning every class.
TILES = {"chunk_size": 4, "memory_budget": 200}
ROWS = {"chunk_size": 4}
EVERYTHING = {"weight": True, "linear_bias": True, "label_smoothing": 0.1, "softcap": 3.0,
              "z_loss": 0.02}
_FULL = [{}, EVERYTHING, {**EVERYTHING, **TILES}]
_SOME = [
    {"weight": True}, {"linear_bias": True}, {"label_smoothing": 0.2, "weight": True},
    {"softcap": 2.0}, {"z_loss": 0.05, "weight": True}, {"ignore_index": 1}, TILES,
    {**TILES, "ignore_index": 1, "weight": True}, {**ROWS, **EVERYTHING},
]


def _samples(rng, dtype):
    name = "linear_cross_entropy"
    n, d, c = 7, 4, 5

    def case(tag, opts, red, sw, shape=(n, d, c), out=(), kind="index", ignore="some"):
        rows, feat, classes = shape
        x, wl, t = _problem(rng, dtype, rows, feat, classes, out, kind, ignore)
        if opts.get("ignore_index") is not None and kind == "index":
            t = np.where(t == -100, opts["ignore_index"], t)
        o = _fill(rng, dtype, {**opts, "reduction": red}, classes, out)
        loss_shape = ((rows,) if rows is not None else ()) + out
        w = loss_shape_weight(rng, loss_shape, dtype) if sw else None
        return Sample(case_id(f"{name}[{tag}]", {**o, "sw": sw}), (x, wl, t), o, w)

    for opts in _FULL:
        for g in grid(reduction=REDUCTIONS, sw=(False, True)):
            yield case("2d", opts, g["reduction"], g["sw"])
    for opts in _SOME:
        yield case("2d", opts, "mean", False)
        yield case("2d", opts, "none", True)
    # K extra dims (linear_weight (C, d1, ..., dK, D)), unbatched, probabilities
    for opts, red, sw in (({}, "mean", False), (EVERYTHING, "none", True),
                          ({**EVERYTHING, **TILES}, "mean", False)):
        yield case("kdim", opts, red, sw, shape=(3, 4, 5), out=(2, 3))
    for opts, red in (({}, "mean"), (EVERYTHING, "none")):
        yield case("unbatched", opts, red, False, shape=(None, 4, 5), ignore="none")
    prob = {k: v for k, v in EVERYTHING.items()}
    for opts, red, sw in (({}, "mean", False), (prob, "none", True), (prob, "sum", False),
                          ({**prob, **TILES}, "mean", True)):
        yield case("prob", opts, red, sw, kind="prob", ignore="none")
    yield case("kdim,prob", {**prob, **TILES}, "none", False, shape=(3, 4, 5), out=(2,),
               kind="prob", ignore="none")
    yield case("unbatched,prob", prob, "mean", False, shape=(None, 4, 5), kind="prob",
               ignore="none")
    # shift=True: hidden states (N, T, D), targets (N, T), the loss (N, T - 1)
    x, wl, _ = _problem(rng, dtype, 3 * 4, d, c)
    x = x.reshape(3, 4, d)
    t = rng.integers(0, c, size=(3, 4)).astype(np.int64)
    t[0, 2] = t[2, 1] = -100
    yield Sample(f"{name}[shift]", (x, wl, t), {"shift": True})
    opts = _fill(rng, dtype, {**EVERYTHING, **TILES, "shift": True, "reduction": "none"}, c, ())
    yield Sample(case_id(f"{name}[shift]", opts), (x, wl, t), opts,
                 loss_shape_weight(rng, (3, 3), dtype))
    yield from _edge_cases(rng, dtype, name)


def _edge_cases(rng, dtype, name):
    x, wl, _ = _problem(rng, dtype, 4, 3, 3)
    ignored = np.full(4, -100, np.int64)
    for red in REDUCTIONS:
        for empty in ("nan", "zero"):
            yield Sample(f"{name}[all-ignored,{red},empty={empty}]", (x, wl, ignored),
                         {"reduction": red, "empty_reduction": empty})
    w = np.array([0.0, 1.5, 0.5], dtype)
    for empty in ("nan", "zero"):
        # torch's gradient is NaN here (0/0 in its backward); the contract gives 0
        yield Sample(f"{name}[zero-class-weights,empty={empty}]", (x, wl, np.zeros(4, np.int64)),
                     {"weight": w, "empty_reduction": empty}, contract_reference=True)
    for red in ("mean", "sum"):
        yield Sample(f"{name}[empty-batch,{red}]",
                     (np.zeros((0, 3), dtype), wl, np.zeros(0, np.int64)), {"reduction": red})
    # large logits (|z| ~ 1e3): the log-sum-exp's shift, and the cap
    big = (x * 300).astype(dtype)
    t = np.array([0, 1, 2, 1])
    for opts in ({}, {"label_smoothing": 0.1, **TILES}, {"softcap": 30.0}):
        yield Sample(case_id(f"{name}[large-logits]", opts), (big, wl, t), opts)


def _random(rng, dtype):
    name = "linear_cross_entropy"
    n_classes = int(rng.integers(1, 7))
    d = int(rng.integers(1, 5))
    out = tuple(int(k) for k in rng.integers(1, 3, size=int(rng.integers(0, 2))))
    batched = bool(out) or rng.random() < 0.85
    n = int(rng.integers(0, 7)) if batched else None
    kind = "prob" if rng.random() < 0.3 else "index"
    x, wl, t = _problem(rng, dtype, n, d, n_classes, out, kind,
                        "some" if rng.random() < 0.5 else "none")
    opts = {"reduction": str(rng.choice(REDUCTIONS))}
    for key, p in (("weight", 0.4), ("linear_bias", 0.4)):
        if rng.random() < p:
            opts[key] = True
    if rng.random() < 0.4:
        opts["label_smoothing"] = float(rng.choice([0.05, 0.5, 1.0]))
    if rng.random() < 0.3:
        opts["softcap"] = float(rng.choice([1.0, 5.0]))
    if rng.random() < 0.3:
        opts["z_loss"] = float(rng.choice([1e-3, 0.1]))
    if rng.random() < 0.4:
        opts.update(chunk_size=int(rng.integers(1, 5)), memory_budget=int(rng.integers(8, 256)))
    if kind == "index" and rng.random() < 0.3:
        opts["ignore_index"] = int(rng.integers(0, n_classes))
        t = np.where(t == -100, opts["ignore_index"], t)
    if rng.random() < 0.3:
        opts["empty_reduction"] = "zero"
    opts = _fill(rng, dtype, opts, n_classes, out)
    loss_shape = ((n,) if n is not None else ()) + out
    sw = loss_shape_weight(rng, loss_shape, dtype) if rng.random() < 0.5 else None
    # the formula reference ('mean' = sum / den) has torch's NaN gradient on a mean over
    # nothing; the contract's rule is checked against the documented normaliser there
    empty = (opts.get("softcap") is not None or opts.get("z_loss")) and opts["reduction"] == "mean"
    return Sample(case_id(f"{name}[random]", opts), (x, wl, t), opts, sw,
                  contract_reference=bool(empty))


register(
    LossSpec(
        name="linear_cross_entropy",
        family=FAMILY,
        summary="Cross-entropy of a linear layer's logits, computed in chunks without "
                "materialising them (torch 2.13's F.linear_cross_entropy).",
        aliases=("LinearCrossEntropyLoss", "linear_cross_entropy_loss", "fused_linear_cross_entropy"),
        inputs=(
            InputSpec("input", "features, shape (in_features,) or (N, in_features)"),
            InputSpec("linear_weight", "the linear layer's weight, shape (C, in_features) or "
                      "(C, d1, ..., dK, in_features) for a K-dimensional loss"),
            InputSpec("target", "class indices (integer, shape (N,), () or (N, d1, ..., dK)) or "
                      "class probabilities (floating, (N, C, d1, ..., dK) or (C,)); "
                      "differentiable when probabilities"),
        ),
        options=OPTIONS,
        formula=(
            "z = input @ linear_weight.T + linear_bias, reshaped (N, C, d1, ..., dK); capped\n"
            "z = softcap * tanh(z / softcap) when softcap is set; then cross_entropy(z, target)\n"
            "with weight, ignore_index (None: -100), label_smoothing, and + z_loss * w[t] * "
            "lse(z)^2 per target\n(z_loss * lse^2, unweighted, for probabilities). 'mean' as "
            "cross_entropy: sum(l) / sum(w[t]) over the targets that count (/ N for "
            "probabilities)."
        ),
        reference_name="torch.nn.functional.linear_cross_entropy (torch 2.13, options=None); "
                       "softcap and z_loss: the formula on torch's F.linear, tanh, "
                       "F.cross_entropy and logsumexp",
        notes=(
            "Class indices may be int32 (JAX's default integer) on both backends, where torch "
            "wants int64 ('expected target dtype to be Long or Byte'). "
            "torch.nn.LinearCrossEntropyLoss owns its linear layer (in_features, num_classes); "
            "the multiloss loss takes the weight as an input, like the functional, and "
            "linear_bias as an option. The (N, C) logits are never materialised: on JAX a "
            "custom JVP over tiles of rows x classes (forward mode, reverse mode and second "
            "order: jax.jvp, jax.hessian, jacrev(jacrev)); on torch a chunked autograd "
            "function with double backward (torch's chunked op with LinearCrossEntropyOptions "
            "is not used: its Hessian is silently zero). Under torch.autocast, torch's policy "
            "for F.linear_cross_entropy: the product in the autocast dtype, the loss in "
            "float32. "
            "softcap and z_loss are multiloss's (not in torch). shift=True is transformers' "
            "ForCausalLMLoss on the logits hidden @ linear_weight.T (num_items_in_batch= at "
            "the call is its normalizer), computed in float64 for float64 inputs "
            "(transformers upcasts to float32 only)."
        ),
        check=_check,
        check_values=_check_values,
        value_args=("target",),
        samples=_samples,
        random_sample=_random,
        reference=_ref,
        normalizer=_normalizer,
    )
)

