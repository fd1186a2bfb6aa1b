"""Backends: one module per backend holds the weighting contract (reductions, sample weights,
the nothing-counts rule) and the wrapper that turns a spec into a callable.

A backend module is imported only when first asked for (``multiloss.get(..., backend=...)``),
so ``import multiloss`` imports neither torch nor jax.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

BACKENDS = {
    # backend: (module that implements it, the framework it needs, the extra that installs it)
    "jax": ("multiloss.backends._jax", "jax", "jax"),
    "torch": ("multiloss.backends._torch", "torch", "torch"),
}


class Terms(NamedTuple):
    """What a backend loss function returns, before the contract reduces it.

    loss:    the unreduced loss, torch's ``reduction="none"`` output (class weights included).
    weight:  the denominator weight of each element in torch's ``"mean"`` (``None``: 1 each).
             For cross-entropy it is ``weight[target]`` (0 where ignored), for mse/l1 with a
             ``weight`` it is that weight, and so on: torch's mean is sum(loss) / sum(weight).
    count:   1 where an element counts, 0 where it does not (ignored targets); ``None``: all
             count. "sum_over_batch_size" divides by its sum.
    invalid: True where an input value is invalid (a class index out of range); those elements
             are NaN in ``loss`` so that a traced call never returns a plausible number.
    """

    loss: Any
    weight: Any = None
    count: Any = None
    invalid: Any = None


def load(name: str):
    """The backend module for ``name``, importing its framework now."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {name!r}")
    module, framework, extra = BACKENDS[name]
    try:
        importlib.import_module(framework)
    except ImportError as e:
        raise ImportError(
            f"multiloss backend {name!r} needs {framework}, which is not installed "
            f"({e}). Install it with: pip install 'multiloss[{extra}]'"
        ) from e
    return importlib.import_module(module)
