"""Backend-agnostic pieces shared by the spec modules: shape/dtype checks (on ArrayInfo, so they
run on tracers too), value checks on NumPy, sample-grid helpers and reference helpers."""

from __future__ import annotations

import itertools

import numpy as np

from .._registry import ArrayInfo, per_sample_hint

# ---------------------------------------------------------------------------------------------
# checks


def expect_float(name: str, x: ArrayInfo, what: str = "a floating-point array") -> None:
    if x.kind != "f":
        raise TypeError(f"{name}: expected {what}, got {x.describe()}")


def expect_same_dtype(name: str, x: ArrayInfo, ref_name: str, ref: ArrayInfo,
                      torch_says: str) -> None:
    """Where torch's kernel refuses mixed floating dtypes (binary_cross_entropy,
    linear_cross_entropy's matmul): the same dtype as ``ref``, or a TypeError that quotes
    torch (``torch_says``, with {x} and {ref} for torch's names of the dtypes)."""
    if x.dtype != ref.dtype:
        says = torch_says.format(x=_TORCH_NAMES.get(x.dtype, x.dtype),
                                 ref=_TORCH_NAMES.get(ref.dtype, ref.dtype))
        raise TypeError(
            f"{name}: expected the dtype of {ref_name}, {ref.dtype}, got {x.describe()} "
            f"(torch refuses mixed dtypes here: {says!r}; cast one of them)"
        )


#: torch's C++ names of the dtypes, as its messages spell them
_TORCH_NAMES = {"float16": "Half", "bfloat16": "BFloat16", "float32": "Float",
                "float64": "Double"}


def expect_same_shape(name: str, x: ArrayInfo, ref_name: str, ref: ArrayInfo) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name}: expected the shape of {ref_name}, {ref.shape}, got {x.shape} "
            f"(multiloss does not broadcast {name} against {ref_name}: torch warns that this "
            f"is likely a mistake; broadcast explicitly if it is meant)"
        )


def elementwise_check(named, opts, target_kind="f"):
    """input and target of the same shape, both floating; an array ``weight`` broadcasts to it."""
    x, t = named["input"], named["target"]
    expect_float("input", x)
    expect_float("target", t, "a floating-point array (as torch requires)")
    expect_same_shape("target", t, "input", x)
    w = opts.get("weight")
    if w is not None:
        check_broadcasts("weight", tuple(w.shape), x.shape)
    return x.shape


def check_embeddings_labels(named) -> int:
    """embeddings (N, D) floating and labels (N,) integer, the inputs of the in-batch pair
    losses (contrastive, multi_similarity, ntxent, supcon); returns N."""
    e, y = named["embeddings"], named["labels"]
    expect_float("embeddings", e)
    if y.kind not in "iu":
        raise TypeError(f"labels: expected an integer array of class labels (one per "
                        f"embedding), got {y.describe()}")
    if e.ndim != 2:
        raise ValueError(f"embeddings: expected shape (N, D), got shape {e.shape}")
    if y.shape != (e.shape[0],):
        raise ValueError(f"labels: expected shape ({e.shape[0]},) (one label per embedding), "
                         f"got shape {y.shape}")
    return e.shape[0]


def check_broadcasts(name: str, shape: tuple, to: tuple) -> None:
    try:
        ok = np.broadcast_shapes(shape, to) == tuple(to)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a shape that broadcasts to {tuple(to)}, got "
                         f"{tuple(shape)}" + per_sample_hint(tuple(shape), tuple(to)))


def class_shapes(x: ArrayInfo) -> tuple[int, tuple]:
    """(number of classes, shape of class indices) for an input (C,), (N, C) or (N, C, d1..dk)."""
    if x.ndim == 0:
        raise ValueError(
            f"input: expected shape (C,), (N, C) or (N, C, d1, ..., dk), got shape {x.shape}"
        )
    if x.ndim == 1:
        return x.shape[0], ()
    return x.shape[1], (x.shape[0],) + x.shape[2:]


def check_class_weight(opts, n_classes: int) -> None:
    w = opts.get("weight")
    if w is not None and tuple(w.shape) != (n_classes,):
        raise ValueError(
            f"weight: expected one weight per class, shape ({n_classes},), got shape "
            f"{tuple(w.shape)}"
        )


def _all_below(t, n: int) -> bool:
    """Whether every integer in ``t`` is in [0, n): one reduction, the maximum of the values
    read as unsigned (two's complement puts the negative ones above every valid index). This
    check runs on every call with concrete indices: it is the hot path of a small batch."""
    if t.size == 0:
        return True
    u = _UNSIGNED.get(t.dtype)
    if u is not None:
        return bool(_MAX(t.view(u), None) < n)
    if t.dtype.kind == "i":  # a non-native byte order
        return bool(t.min() >= 0 and t.max() < n)
    return bool(t.max() < n)


_UNSIGNED = {np.dtype(f"i{k}"): np.dtype(f"u{k}") for k in (1, 2, 4, 8)}
_MAX = np.maximum.reduce  # ndarray.max without its Python layer (the small-call hot path)


def check_class_indices(values, infos, opts) -> None:
    """Class indices in [0, C) or equal to ignore_index (read on concrete values only)."""
    t = values.get("target")
    if t is None:
        return
    n_classes, _ = class_shapes(infos["input"])
    if _all_below(t, n_classes):
        return
    ignore = opts.get("ignore_index", None)
    bad = (t < 0) | (t >= n_classes)
    if ignore is not None:
        bad &= t != ignore
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {pos}" if pos else ""
        also = f" or equal ignore_index={ignore}" if ignore is not None else ""
        raise ValueError(
            f"target: expected class indices in [0, {n_classes}){also}, got {t[bad][0]}{where}"
        )


def _class_indices_quick(infos, opts):
    """check_class_indices as a test of the values of one call signature, for the hot path:
    True where every index is in range or ignore_index (False: the full check raises)."""
    n = class_shapes(infos["input"])[0]
    ignore = opts.get("ignore_index", None)
    if ignore is not None and 0 <= ignore < n:
        ignore = None  # an index in range anyway

    def test(t):
        return _all_below(t, n) or (
            ignore is not None and _all_below(np.where(t == ignore, 0, t), n))

    target = infos["target"]
    dt = np.dtype(target.dtype) if target.kind == "i" else None
    if dt is not None and len(target.shape) == 1 and 0 < target.shape[0] <= 128:
        # a small batch: Python's max over the values (read as unsigned) is faster than
        # NumPy's reduction, whose fixed cost dominates there (the small call's hot path)
        u, general = _UNSIGNED[dt], test

        def test(t):
            if t.dtype == dt and max(t.view(u).tolist()) < n:
                return True
            return general(t)
    return {"target": test}


#: the check's per-signature fast form (see multiloss.backends.InputChecks.hot)
check_class_indices.quick = _class_indices_quick


# ---------------------------------------------------------------------------------------------
# samples


def grid(**axes):
    """Dicts over the product of the given option axes (insertion order kept)."""
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        yield dict(zip(keys, values))


def case_id(name: str, opts: dict) -> str:
    parts = [name]
    for k, v in opts.items():
        if isinstance(v, np.ndarray):
            v = "arr"
        parts.append(f"{k}={v}")
    return ",".join(parts)


def positive(rng, shape, dtype, lo=0.1, hi=2.0):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def loss_shape_weight(rng, shape, dtype):
    """A sample weight over a loss shape: zeros, fractions and values above 1."""
    w = rng.uniform(0.0, 2.0, size=shape).astype(dtype)
    if w.size > 1:
        w.flat[0] = 0.0
    return w


REDUCTIONS = ("mean", "sum", "none", "sum_over_batch_size")


# ---------------------------------------------------------------------------------------------
# references written on JAX


def jax_reference(fn):
    """Adapt a reference written on JAX to the registry's reference protocol
    ``reference(torch, inputs, opts, reduction) -> torch tensor``.

    ``fn(*arrays, opts=opts, reduction=reduction)`` computes the reference on JAX arrays (the
    defining library itself: optax, Keras 3 on its JAX backend). The value comes from ``fn``;
    the gradients w.r.t. the inputs that require grad come from ``jax.vjp`` of ``fn``, through a
    ``torch.autograd.Function``, so that ``multiloss.testing`` builds the contract's reductions
    and gradients from it exactly as from a torch reference. Array options (torch tensors after
    ``testing._reference_options``) reach ``fn`` as JAX arrays. float64 needs JAX's x64 mode
    (``multiloss.testing.enable_x64``)."""

    def reference(torch, inputs, opts, reduction):
        import jax
        import jax.numpy as jnp

        def to_jax(t):
            return jnp.asarray(t.detach().cpu().numpy()) if isinstance(t, torch.Tensor) else t

        jopts = {k: to_jax(v) for k, v in opts.items()}
        arrays = [to_jax(t) for t in inputs]
        diff = [i for i, t in enumerate(inputs)
                if isinstance(t, torch.Tensor) and t.requires_grad]

        def f(*d):
            a = list(arrays)
            for i, v in zip(diff, d):
                a[i] = v
            return fn(*a, opts=jopts, reduction=reduction)

        if not diff:
            return torch.from_numpy(np.array(f()))
        return _bridge(torch, jax, f, [inputs[i] for i in diff])

    reference.jax_reference = fn
    return reference


def _bridge(torch, jax, f, tensors):
    """``f`` (a JAX function of len(tensors) arrays) applied to torch tensors as a
    ``torch.autograd.Function`` whose backward is ``jax.vjp`` of ``f``, itself bridged: the
    reference is differentiable to any order (torch.autograd.functional.hessian of a reference
    written on JAX is its jax.hessian)."""
    import jax.numpy as jnp

    def to_jax(t):
        return jnp.asarray(t.detach().cpu().numpy())

    class _Bridge(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *ts):
            ctx.save_for_backward(*ts)
            return torch.from_numpy(np.array(f(*(to_jax(t) for t in ts))))

        @staticmethod
        def backward(ctx, g):
            ts = ctx.saved_tensors
            n = len(ts)

            def pullback(*args):  # (primals..., cotangent) -> the vjp of each primal
                return jax.vjp(f, *args[:n])[1](args[n])

            if not torch.is_grad_enabled():  # a first-order backward (no create_graph)
                grads = pullback(*(to_jax(t) for t in (*ts, g)))
                return tuple(torch.from_numpy(np.array(x)) for x in grads)
            outs = []
            for k in range(n):  # one bridged function per gradient (one output each)
                outs.append(_bridge(torch, jax, lambda *a, k=k: pullback(*a)[k], [*ts, g]))
            return tuple(outs)

    return _Bridge.apply(*tensors)
