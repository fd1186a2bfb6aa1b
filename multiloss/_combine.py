"""``multiloss.combine``: a multi-task loss from named parts with fixed weights.

    >>> loss = multiloss.combine({"ce": "cross_entropy", "mse": "mse", "l1": "l1"},
    ...                          weights={"ce": 0.5, "mse": 0.3, "l1": 0.2})
    >>> total, parts = loss({"ce": (logits, labels), "mse": (pred, target),
    ...                      "l1": (pred, target)})
    >>> # total == 0.5 * parts["ce"] + 0.3 * parts["mse"] + 0.2 * parts["l1"]

The call convention is the same on both backends: one dict of positional-input tuples keyed
by part name in, a :class:`LossParts` ``(total, parts)`` out. Public as ``multiloss.combine``
and ``multiloss.LossParts``. Importing this module imports neither torch nor jax; the
backend's classes live in ``multiloss.nn``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["LossParts", "combine"]


class LossParts(NamedTuple):
    """What a combined or weighted multi-task loss returns: the ``total`` to differentiate and
    a dict ``parts`` of per-part scalars, for logging, in the order the parts were given.

    From :func:`combine`, ``parts[name]`` is the part's own (unweighted) loss, so
    ``total == sum(weights[name] * parts[name])``. From the uncertainty weighting modules
    (``multiloss.nn``), ``parts[name]`` is the task's term of the total, so
    ``total == sum(parts.values())``.

    A ``LossParts`` is a tuple of two, hence a JAX pytree that fits
    ``jax.value_and_grad(f, has_aux=True)`` as it is: the gradient is taken of ``total`` and
    ``parts`` comes back as the auxiliary output.
    """

    total: Any
    parts: dict


def _check_name(name, where: str) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise TypeError(f"{where}: expected part names that are non-empty strings without '.', "
                        f"got {name!r}")
    return name


def check_names(given, expected, where: str, *, subset: bool = False) -> None:
    """Raise ValueError naming ``where`` when the keys ``given`` are not the ``expected``
    names (or, with ``subset``, not among them)."""
    given, expected = list(given), list(expected)
    unknown = [k for k in given if k not in expected]
    missing = [] if subset else [k for k in expected if k not in given]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unknown:
            parts.append(f"unknown {unknown}")
        raise ValueError(f"{where}: expected the keys {expected}, got {given} "
                         f"({'; '.join(parts)})")


def finite_real(name: str, value) -> float:
    """``value`` as a float; TypeError for a non-real, ValueError for NaN or an infinity."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


def combine(parts: Mapping[str, Any], weights: Mapping[str, float] | None = None,
            backend: str = "jax"):
    """A multi-task loss ``total = sum_i weights[i] * parts[i](*inputs[i])`` from named parts
    with fixed weights, on ``backend`` ("jax" or "torch").

    ``parts``: a dict part name -> loss, in the order the total sums them. A loss is a
    multiloss loss name (made with its defaults, ``"cross_entropy"``), a multiloss loss
    (``multiloss.get(...)``; one made for the other backend is remade for this one with the
    same options), on "jax" a torch loss module (converted with :func:`multiloss.from_torch`;
    a subclass with its own ``forward`` is rejected there),
    or any callable returning a scalar (on "torch" a ``torch.nn.Module`` part is registered as
    a submodule, so ``.to(device)`` and ``state_dict`` carry its buffers). Part names are
    non-empty strings without ".".

    ``weights``: a dict with the same keys, each a finite real number (negative allowed);
    None gives every part the weight 1.

    The result is called as ``loss(inputs, sample_weight=None)``:

    - ``inputs``: a dict with the same keys, each a tuple (or list) of that part's positional
      inputs in that loss's order (torch's; Keras' ``(y_true, y_pred)`` for ``keras.*``),
      ``{"ce": (logits, labels), "mse": (pred, target), "dice": (masks, probs)}`` with
      ``"dice"`` a ``keras.dice``;
    - ``sample_weight``: optional, a dict from some of the part names to that part's
      ``sample_weight`` (the weighting contract, docs/weighting.md);

    and returns :class:`LossParts` ``(total, parts)`` with ``parts`` the unweighted per-part
    values. Each part must give a scalar: a multiloss loss with ``reduction="none"`` is
    rejected here, any other non-scalar when called.

    On "jax" the result is a pure function of its inputs, usable inside ``jax.jit``,
    ``jax.grad`` and ``jax.vmap`` (its parts are jitted; call it inside your jitted step); on
    "torch" it is a ``torch.nn.Module``.

    Raises TypeError for a part or weight of the wrong type and ValueError for an empty
    ``parts``, mismatched keys, a non-finite weight or a per-element part, each naming the
    argument.
    """
    from .backends import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {backend!r}")
    if not isinstance(parts, Mapping):
        raise TypeError(f"parts: expected a dict part name -> loss, got {type(parts).__name__}")
    if not parts:
        raise ValueError("parts: expected at least one part, got an empty dict")
    names = [_check_name(k, "parts") for k in parts]
    if weights is None:
        w = dict.fromkeys(names, 1.0)
    else:
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights: expected a dict part name -> number (or None), got "
                            f"{type(weights).__name__}")
        check_names(weights, names, "weights")
        w = {k: finite_real(f"weights[{k!r}]", weights[k]) for k in names}
    losses = {k: _part(k, parts[k], backend) for k in names}
    if backend == "jax":
        from .nn._jax import CombinedLoss
    else:
        from .nn._torch import CombinedLoss
    return CombinedLoss(losses, w)


def _is_multiloss_loss(obj) -> bool:
    return type(obj).__module__.startswith("multiloss.backends.") and hasattr(obj, "spec")


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")  # a torch object means torch is imported already
    return torch is not None and isinstance(obj, torch.nn.Module)


def _part(name: str, part, backend: str):
    """One part as a callable of ``backend``."""
    from . import from_torch, get

    where = f"parts[{name!r}]"
    if isinstance(part, str):
        try:
            return get(part, backend=backend)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None
    if _is_multiloss_loss(part):
        if part.options.get("reduction") == "none":
            raise ValueError(f"{where}: {part.spec.name} has reduction='none', a per-element "
                             "loss; combine needs a scalar per part (reduction 'mean', 'sum', "
                             "'sum_over_batch_size', ...)")
        if part.backend == backend:
            return part
        options = dict(part.options)
        for opt in part.spec.options:  # a torch loss's array options are its current buffers
            if opt.kind == "array" and hasattr(part, "named_buffers"):
                buf = getattr(part, opt.name)
                options[opt.name] = None if buf is None else buf.detach().cpu().numpy()
        return get(part.spec.name, backend=backend, **options)
    if backend == "jax" and _is_torch_module(part):
        try:
            loss = from_torch(part)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None
        if loss.options["reduction"] == "none":
            raise ValueError(f"{where}: the criterion has reduction='none'; combine needs a "
                             "scalar per part")
        return loss
    if not callable(part):
        raise TypeError(f"{where}: expected a loss name, a multiloss loss or a callable, got "
                        f"{type(part).__name__}")
    return part


def call_parts(losses: Mapping[str, Any], inputs, sample_weight, ndim) -> dict:
    """Call each part on its inputs (the shared checks of both backends' ``CombinedLoss``);
    ``ndim(x)`` is the number of dimensions of a result."""
    names = list(losses)
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs: expected a dict part name -> tuple of positional inputs, "
                        f"got {type(inputs).__name__}")
    check_names(inputs, names, "inputs")
    if sample_weight is None:
        sample_weight = {}
    elif not isinstance(sample_weight, Mapping):
        raise TypeError(f"sample_weight: expected a dict part name -> array (or None), got "
                        f"{type(sample_weight).__name__}")
    else:
        check_names(sample_weight, names, "sample_weight", subset=True)
    values = {}
    for k in names:
        args = inputs[k]
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"inputs[{k!r}]: expected a tuple of the part's positional inputs, "
                            f"e.g. (logits, labels), got {type(args).__name__}")
        kw = {} if sample_weight.get(k) is None else {"sample_weight": sample_weight[k]}
        v = losses[k](*args, **kw)
        if ndim(v) != 0:
            shape = tuple(getattr(v, "shape", ()))
            raise ValueError(f"parts[{k!r}]: returned an array of shape {shape}; combine needs "
                             "a scalar per part (reduction 'mean', 'sum', ...)")
        values[k] = v
    return values
