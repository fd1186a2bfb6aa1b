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
