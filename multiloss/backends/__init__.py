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


def signature_key(n: int, last: str, least: int | None = None) -> Callable:
    """The hot-path key of a call with ``n`` array inputs: each input's shape, dtype and its
    ``last`` attribute ("type": its type; "device": a torch tensor's device). A call with
    another number of inputs (fewer than ``least`` where a loss has optional inputs) raises
    ValueError (and takes the checked path)."""
    least = n if least is None else least
    if least != n:
        def part(x):
            return (x.shape, x.dtype, type(x)) if last == "type" else (
                x.shape, x.dtype, x.device, type(x))

        def key(inputs):
            if not least <= len(inputs) <= n:
                raise ValueError
            return tuple([part(x) for x in inputs])
        return key
    if last == "type":
        def part(x):
            return (x.shape, x.dtype, type(x))
    else:
        def part(x):
            return (x.shape, x.dtype, x.device, type(x))
    if n == 1:
        def key(inputs):
            (a,) = inputs
            return part(a)
    elif n == 2 and last == "type":  # the common case, unrolled: the small-call hot path
        def key(inputs):
            a, b = inputs
            return (a.shape, a.dtype, type(a), b.shape, b.dtype, type(b))
    elif n == 2:
        def key(inputs):
            a, b = inputs
            return (a.shape, a.dtype, a.device, type(a), b.shape, b.dtype, b.device, type(b))
    else:
        def key(inputs):
            if len(inputs) != n:
                raise ValueError
            return tuple([part(x) for x in inputs])
    return key


_UNSET = object()


def num_items(named: dict, normalizer):
    """``num_items_in_batch=`` (transformers' name, popped from a call's keywords) as the
    ``normalizer``: the sum is divided by it. None (transformers' value without gradient
    accumulation) leaves the reduction's own denominator."""
    n = named.pop("num_items_in_batch", None)
    if n is None:
        return normalizer
    if normalizer is not None:
        raise TypeError("num_items_in_batch: transformers' name for normalizer; give one of "
                        "them, got both")
    return n


class InputChecks:
    """The checks of a loss's call, shared by the backends: the number of inputs, shape and
    dtype checks once per call signature (they read no values, so they also run on tracers),
    and the value checks of the spec where those arguments are concrete integer arrays."""

    _MAX_SIGNATURES = 256

    def __init__(self, spec, options: dict):
        self.spec = spec
        self.options = options
        self.names = tuple(i.name for i in spec.inputs)
        #: the number of inputs a call must give (the trailing optional ones may be left out)
        self.required = len(self.names)
        while self.required and spec.inputs[self.required - 1].optional:
            self.required -= 1
        self._value_idx = (
            tuple(self.names.index(n) for n in spec.value_args)
            if options["validate"] and spec.check_values is not None
            else ()
        )
        self._signatures: dict = {}  # call signature -> ArrayInfo of each input (checked)
        # keyword -> position of the input it names (``positional``)
        self._keywords = {n: i for i, n in enumerate(self.names)}
        for i, inp in enumerate(spec.inputs):
            self._keywords.update(dict.fromkeys(inp.aliases, i))

    def positional(self, inputs: tuple, named: dict) -> tuple:
        """The inputs of a call that names some or all of them by keyword (the spec's input
        names, ``loss(input=x, target=t)`` or ``loss(y_true=..., y_pred=...)``, and their
        aliases: the reference library's names where they differ) in the spec's positional
        order. TypeError for an unknown keyword, an
        input given twice and an input missing, naming it."""
        spec, names, keys = self.spec, self.names, self._keywords
        if len(inputs) > len(names):
            self.count(inputs)
        slots = list(inputs) + [_UNSET] * (len(names) - len(inputs))
        for key, value in named.items():
            i = keys.get(key)
            if i is None:
                valid = ", ".join(keys) + ", sample_weight, normalizer, num_items_in_batch"
                hint = (f"; {key!r} is an option of the loss, given when it is made: "
                        f"multiloss.get({spec.name!r}, {key}=...)"
                        if key in spec._option_map else "")
                raise TypeError(f"{spec.name}: unexpected keyword argument {key!r}; the call "
                                f"takes {valid}{hint}")
            if slots[i] is not _UNSET:
                how = "by position and by keyword" if i < len(inputs) else "twice"
                raise TypeError(f"{spec.name}: input {names[i]!r} given {how} "
                                f"(as {key!r})")
            slots[i] = value
        while len(slots) > self.required and slots[-1] is _UNSET:
            slots.pop()  # an optional input left out
        missing = [n for n, v in zip(names, slots) if v is _UNSET]
        if missing:
            raise TypeError(f"{spec.name}: missing input(s) {', '.join(map(repr, missing))} "
                            f"(the inputs, in order: {', '.join(names)})")
        return tuple(slots)

    def count(self, inputs) -> None:
        if not self.required <= len(inputs) <= len(self.names):
            many = (f"{len(self.names)}" if self.required == len(self.names)
                    else f"{self.required} to {len(self.names)}")
            raise TypeError(
                f"{self.spec.name}: expected {many} inputs "
                f"({', '.join(self.names)}), got {len(inputs)}"
            )

    def trim(self, inputs: tuple) -> tuple:
        """The inputs without the trailing optional ones given as None (left out)."""
        n = len(inputs)
        while n > self.required and inputs[n - 1] is None:
            n -= 1
        return inputs if n == len(inputs) else tuple(inputs[:n])

    def signature(self, inputs, sample_weight) -> tuple:
        """(infos, reads): the shape/dtype checks of this call signature, run once per
        signature (cached), and the (index, name) of the inputs whose values are checked."""
        key = tuple([(x.shape, x.dtype) for x in inputs]) + (
            None if sample_weight is None else (sample_weight.shape, sample_weight.dtype),
        )
        entry = self._signatures.get(key)
        if entry is None:
            if len(self._signatures) >= self._MAX_SIGNATURES:
                self._signatures.clear()
            entry = self._signatures[key] = self.check_shapes(inputs, sample_weight)
        return entry

    def check_shapes(self, inputs, sample_weight) -> tuple:
        """``signature`` without its cache: (infos, reads) of this call, its shape and dtype
        checks run (what a tracer of Python code, torch.compile's, runs at trace time)."""
        infos = self.spec.converted([array_info(x) for x in inputs], self.options)
        self.spec.call_check(
            infos,
            None if sample_weight is None else array_info(sample_weight),
            self.options,
        )
        infos = dict(zip(self.names, infos))
        # only the spec's value_args of a dtype kind in its value_kinds are read (class
        # indices: integers; gaussian_nll's variance: floating)
        reads = tuple((i, self.names[i]) for i in self._value_idx
                      if infos[self.names[i]].kind in self.spec.value_kinds)
        return infos, reads

    def values(self, inputs, infos, reads, concrete: Callable) -> None:
        """The spec's value checks on the inputs of ``reads`` that are concrete."""
        values = {}
        for i, name in reads:
            v = concrete(inputs[i])
            if v is not None:
                values[name] = v
        if values:
            self.spec.check_values(values, infos, self.options)

    def hot(self, inputs, reader: Callable, concrete: Callable) -> Callable | None:
        """The value checks of this call signature (no sample weight) as one function of the
        inputs, made once per signature for a backend's hot path; None where there is nothing
        to read. ``reader(x)``: a function that gives the values of an input of x's type and
        device as NumPy (or None on a call where they cannot be read), or None where such an
        input's values are never read (a tracer, a tensor on an accelerator). Where the spec's
        ``check_values`` has a ``quick`` form (a test per argument, made once per signature),
        a call runs those tests, and the full check (``concrete`` reads for it) only when one
        fails, to raise its message."""
        infos, reads = self.signature(inputs, None)
        readers = [(i, name, reader(inputs[i])) for i, name in reads]
        readers = [(i, name, r) for i, name, r in readers if r is not None]
        if not readers:
            return None
        quick = getattr(self.spec.check_values, "quick", None)
        tests = quick(infos, self.options) if quick is not None else {}
        if any(name not in tests for _, name, _ in readers):
            return lambda inputs: self.values(inputs, infos, reads, concrete)
        values = self.values
        if len(readers) == 1:
            (i, name, read), = readers
            ok = tests[name]

            def check(inputs):
                v = read(inputs[i])
                if v is not None and not ok(v):
                    values(inputs, infos, reads, concrete)
        else:
            steps = tuple((i, read, tests[name]) for i, name, read in readers)

            def check(inputs):
                for i, read, ok in steps:
                    v = read(inputs[i])
                    if v is not None and not ok(v):
                        values(inputs, infos, reads, concrete)
                        return
        return check

    def __call__(self, inputs, sample_weight, concrete: Callable) -> None:
        """``concrete(x)``: x's values as a NumPy array if x is concrete, None for a tracer."""
        infos, reads = self.signature(inputs, sample_weight)
        if reads:
            self.values(inputs, infos, reads, concrete)
