"""What both backends of ``multiloss.nn`` share: argument validation and the uncertainty
weighting's per-task coefficients. Imports no framework."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._combine import check_names, finite_real

#: task kind -> (a, b) of the task's term  a * exp(-s) * L + b * s,  s = log(sigma^2)
KINDS = {
    "plain": (1.0, 1.0),           # exp(-s) L + s: the form most implementations use
    "regression": (0.5, 0.5),      # 1 / (2 sigma^2) L + log(sigma): Kendall et al., Gaussian likelihood
    "classification": (1.0, 0.5),  # 1 / sigma^2 L + log(sigma): Kendall et al., scaled softmax
}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def dtype_name(value) -> str:
    """A floating dtype given as a string, NumPy, JAX or torch dtype, as its name."""
    name = getattr(value, "__name__", None) if isinstance(value, type) else None
    if name is None:
        name = str(value).replace("torch.", "")
    try:
        if name not in FLOAT_DTYPES:
            name = np.dtype(value).name
    except TypeError:
        pass
    if name not in FLOAT_DTYPES:
        raise ValueError(f"dtype: expected one of {list(FLOAT_DTYPES)}, got {value!r}")
    return name


def uncertainty_config(tasks, init, kinds, dtype) -> tuple[tuple, tuple, tuple, str]:
    """Validate the uncertainty weighting's arguments: (tasks, kinds, initial log-variances,
    dtype name)."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks: expected a list of task names, got {type(tasks).__name__}")
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("tasks: expected at least one task name, got none")
    for t in tasks:
        if not isinstance(t, str) or not t or "." in t:
            raise TypeError(f"tasks: expected non-empty strings without '.', got {t!r}")
    dup = sorted({t for t in tasks if tasks.count(t) > 1})
    if dup:
        raise ValueError(f"tasks: expected distinct names, got {dup} more than once")
    if isinstance(kinds, str):
        kinds = dict.fromkeys(tasks, kinds)
    elif isinstance(kinds, Mapping):
        check_names(kinds, tasks, "kinds")
    else:
        raise TypeError(f"kinds: expected one of {list(KINDS)} or a dict task -> kind, got "
                        f"{type(kinds).__name__}")
    for t in tasks:
        if kinds[t] not in KINDS:
            raise ValueError(f"kinds[{t!r}]: expected one of {list(KINDS)}, got {kinds[t]!r}")
    if isinstance(init, Mapping):
        check_names(init, tasks, "init")
        values = tuple(finite_real(f"init[{t!r}]", init[t]) for t in tasks)
    else:
        v = finite_real("init", init)
        values = (v,) * len(tasks)
    return tasks, tuple(kinds[t] for t in tasks), values, dtype_name(dtype)


def ordered_losses(tasks: tuple, losses, ndim) -> list:
    """The task losses in task order, from a dict task -> scalar or a sequence in task order;
    ``ndim(x)`` is the number of dimensions of a value (None for a value that is no array)."""
    if isinstance(losses, Mapping):
        check_names(losses, tasks, "losses")
        values = [losses[t] for t in tasks]
    elif isinstance(losses, Sequence) and not isinstance(losses, (str, bytes)):
        if len(losses) != len(tasks):
            raise ValueError(f"losses: expected {len(tasks)} losses (tasks {list(tasks)}), got "
                             f"{len(losses)}")
        values = list(losses)
    else:
        raise TypeError(f"losses: expected a dict task -> scalar loss (or a list in task "
                        f"order), got {type(losses).__name__}")
    for t, v in zip(tasks, values):
        if isinstance(v, (bool, str, bytes)) or v is None:
            raise TypeError(f"losses[{t!r}]: expected a scalar loss, got {type(v).__name__}")
        n = ndim(v)
        if n != 0:
            shape = tuple(getattr(v, "shape", ()))
            raise ValueError(f"losses[{t!r}]: expected a scalar loss, got shape {shape}")
    return values


# ---------------------------------------------------------------------------------------------
# the margin losses' modules (arcface, cosface)

#: module name -> registry loss it calls
MARGIN_LOSSES = {"ArcFace": "arcface", "CosFace": "cosface"}


def margin_config(loss: str, embedding_size, num_classes, margin, scale, reduction,
                  empty_reduction, dtype) -> dict:
    """Validate a margin module's arguments: its config (the constructor arguments of a twin),
    with the loss options bound by the registry (a bad margin or scale raises its error)."""
    from .._registry import resolve

    sizes = {}
    for name, v in (("embedding_size", embedding_size), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected a positive int, got {type(v).__name__} {v!r}")
        if v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v}")
        sizes[name] = int(v)
    bound = resolve(loss).bind({"margin": margin, "scale": scale, "reduction": reduction,
                                "empty_reduction": empty_reduction})
    return {**sizes, "margin": bound["margin"], "scale": bound["scale"],
            "reduction": bound["reduction"], "empty_reduction": bound["empty_reduction"],
            "dtype": dtype_name(dtype)}


LOSS_OPTIONS = ("margin", "scale", "reduction", "empty_reduction")


# ---------------------------------------------------------------------------------------------
# the adaptive softmax (torch.nn.AdaptiveLogSoftmaxWithLoss)


def adaptive_config(in_features, n_classes, cutoffs, div_value, head_bias, dtype) -> dict:
    """Validate the adaptive softmax's arguments as torch does (plus type checks naming the
    argument): its config, the constructor arguments of a twin (``cutoffs`` without torch's
    appended ``n_classes``)."""
    sizes = {}
    for name, v, lo in (("in_features", in_features, 1), ("n_classes", n_classes, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected an int >= {lo}, got {type(v).__name__} {v!r}")
        if v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
        sizes[name] = int(v)
    if isinstance(cutoffs, (str, bytes)) or not isinstance(cutoffs, (Sequence, np.ndarray)):
        raise TypeError(f"cutoffs: expected a sequence of ints, got {type(cutoffs).__name__}")
    cut = list(cutoffs)
    n = sizes["n_classes"]
    if not cut:
        raise ValueError("cutoffs: expected a sequence of length larger than 0 (torch's rule), "
                         "got []")
    for i, c in enumerate(cut):
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)):
            raise TypeError(f"cutoffs[{i}]: expected an int, got {type(c).__name__} {c!r}")
    if (cut != sorted(cut) or min(cut) <= 0 or max(cut) > n - 1 or len(set(cut)) != len(cut)
            or any(int(c) != c for c in cut)):
        raise ValueError(f"cutoffs: expected unique positive integers sorted in increasing "
                         f"order, each between 1 and n_classes - 1 = {n - 1} (torch's rule), "
                         f"got {cut}")
    div = finite_real("div_value", div_value)
    if not div > 0:
        raise ValueError(f"div_value: expected a positive real number, got {div_value!r}")
    if not isinstance(head_bias, (bool, np.bool_)):
        raise TypeError(f"head_bias: expected a bool, got {type(head_bias).__name__} "
                        f"{head_bias!r}")
    return {**sizes, "cutoffs": tuple(int(c) for c in cut), "div_value": div,
            "head_bias": bool(head_bias), "dtype": dtype_name(dtype)}


def adaptive_shapes(cfg: Mapping) -> dict[str, tuple]:
    """The parameter tree of the adaptive softmax, torch's names and (out, in) layout:
    ``head.weight`` (shortlist + clusters, in_features), ``head.bias`` if ``head_bias``,
    ``tail.i.0.weight`` (hsz_i, in_features), ``tail.i.1.weight`` (osz_i, hsz_i) with
    torch's ``hsz_i = int(in_features // div_value ** (i + 1))`` (a float floor division)."""
    cut = [*cfg["cutoffs"], cfg["n_classes"]]
    d = cfg["in_features"]
    out = {"head.weight": (cut[0] + len(cut) - 1, d)}
    if cfg["head_bias"]:
        out["head.bias"] = (cut[0] + len(cut) - 1,)
    for i in range(len(cut) - 1):
        hsz = int(d // (cfg["div_value"] ** (i + 1)))
        out[f"tail.{i}.0.weight"] = (hsz, d)
        out[f"tail.{i}.1.weight"] = (cut[i + 1] - cut[i], hsz)
    return out


def check_adaptive_inputs(in_features: int, input_shape: tuple, input_kind: str,
                          target_shape: tuple | None, target_kind: str | None) -> None:
    """torch's shape rules of AdaptiveLogSoftmaxWithLoss.forward (a 2-D input with a 1-D
    target of the same batch size, or a 1-D input with a 0-D target), as errors naming the
    argument; ``target_shape`` None: log_prob / predict (a 2-D input)."""
    if input_kind != "f":
        raise TypeError(f"input: expected a floating array, got kind {input_kind!r}")
    if target_shape is None:
        if len(input_shape) != 2 or input_shape[1] != in_features:
            raise ValueError(f"input: expected shape (N, in_features={in_features}), got "
                             f"{input_shape}")
        return
    if target_kind not in ("i", "u"):
        raise TypeError(f"target: expected integer class indices, got kind {target_kind!r}")
    if len(target_shape) == 1:
        if len(input_shape) != 2 or input_shape[0] != target_shape[0]:
            raise ValueError(f"input: expected shape (N={target_shape[0]}, "
                             f"in_features={in_features}) with a target of shape "
                             f"{target_shape}, got {input_shape}")
    elif len(target_shape) == 0:
        if len(input_shape) != 1:
            raise ValueError(f"input: expected shape ({in_features},) with a 0-D target, got "
                             f"{input_shape}")
    else:
        raise ValueError(f"target: expected a 0-D or 1-D array of class indices (torch: "
                         f"multi-target not supported), got shape {target_shape}")
    if input_shape[-1] != in_features:
        raise ValueError(f"input: expected {in_features} features (in_features) in the last "
                         f"dimension, got shape {input_shape}")


def check_adaptive_targets(target: np.ndarray, n_classes: int) -> None:
    """Target values in [0, n_classes - 1], as torch requires (its RuntimeError there)."""
    t = np.asarray(target)
    if t.size and (t.min() < 0 or t.max() > n_classes - 1):
        raise ValueError(f"target: expected class indices in [0, {n_classes - 1}] "
                         f"(n_classes={n_classes}), got values in [{t.min()}, {t.max()}]")
