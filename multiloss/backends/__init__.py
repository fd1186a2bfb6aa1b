"""Backends: one module per backend holds the weighting contract (reductions, sample weights,
the nothing-counts rule) and the wrapper that turns a spec into a callable.

A backend module is imported only when first asked for (``multiloss.get(..., backend=...)``),
so ``import multiloss`` imports neither torch nor jax.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from .._registry import array_info

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
    scale:   a factor on each element in the numerator of ``"mean"`` only (``None``: 1 each).
             torch's ctc "mean" is mean_b(l_b / max(S_b, 1)): scale = 1 / max(S_b, 1).

    An element whose input is invalid in a way only values show (a class index out of range
    under a trace, where it cannot be checked) is NaN in ``loss``, with a NaN gradient, so
    that a traced call never returns a plausible number.
    """

    loss: Any
    weight: Any = None
    count: Any = None
    scale: Any = None


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


class InputChecks:
    """The checks of a loss's call, shared by the backends: the number of inputs, shape and
    dtype checks once per call signature (they read no values, so they also run on tracers),
    and the value checks of the spec where those arguments are concrete integer arrays."""

    _MAX_SIGNATURES = 256

    def __init__(self, spec, options: dict):
        self.spec = spec
        self.options = options
        self.names = tuple(i.name for i in spec.inputs)
        self._value_idx = (
            tuple(self.names.index(n) for n in spec.value_args)
            if options["validate"] and spec.check_values is not None
            else ()
        )
        self._signatures: dict = {}  # call signature -> ArrayInfo of each input (checked)

    def count(self, inputs) -> None:
        if len(inputs) != len(self.names):
            raise TypeError(
                f"{self.spec.name}: expected {len(self.names)} inputs "
                f"({', '.join(self.names)}), got {len(inputs)}"
            )

    def signature(self, inputs, sample_weight) -> tuple:
        """(infos, reads): the shape/dtype checks of this call signature, run once per
        signature (cached), and the (index, name) of the inputs whose values are checked."""
        key = tuple([(x.shape, x.dtype) for x in inputs]) + (
            None if sample_weight is None else (sample_weight.shape, sample_weight.dtype),
        )
        entry = self._signatures.get(key)
        if entry is None:
            infos = [array_info(x) for x in inputs]
            self.spec.call_check(
                infos,
                None if sample_weight is None else array_info(sample_weight),
                self.options,
            )
            if len(self._signatures) >= self._MAX_SIGNATURES:
                self._signatures.clear()
            infos = dict(zip(self.names, infos))
            # only the spec's value_args of a dtype kind in its value_kinds are read (class
            # indices: integers; gaussian_nll's variance: floating)
            reads = tuple((i, self.names[i]) for i in self._value_idx
                          if infos[self.names[i]].kind in self.spec.value_kinds)
            entry = self._signatures[key] = (infos, reads)
        return entry

    def values(self, inputs, infos, reads, concrete: Callable) -> None:
        """The spec's value checks on the inputs of ``reads`` that are concrete."""
        values = {}
        for i, name in reads:
            v = concrete(inputs[i])
            if v is not None:
                values[name] = v
        if values:
            self.spec.check_values(values, infos, self.options)

    def __call__(self, inputs, sample_weight, concrete: Callable) -> None:
        """``concrete(x)``: x's values as a NumPy array if x is concrete, None for a tracer."""
        infos, reads = self.signature(inputs, sample_weight)
        if reads:
            self.values(inputs, infos, reads, concrete)
