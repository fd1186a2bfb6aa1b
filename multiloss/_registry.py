"""The registry of loss specs: the one place that defines a loss's name, aliases, inputs,
options (with their validation), documentation, input checks and sample inputs.

Nothing here imports torch or jax. A backend turns a :class:`LossSpec` plus bound options into
a callable; the spec finds its implementation for a backend by convention, as the function
named ``spec.name`` in ``multiloss.losses.<family>._<backend>``.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ArrayInfo",
    "InputSpec",
    "LossSpec",
    "Option",
    "Sample",
    "available",
    "info",
    "register",
    "resolve",
]

# --------------------------------------------------------------------------------------------
# Reductions: defined once here, implemented once per backend (multiloss/backends/).

#: Reductions every loss accepts. "batchmean" is added by losses that opt in (kl_div).
REDUCTIONS = ("mean", "sum", "none", "sum_over_batch_size")
EMPTY_REDUCTIONS = ("nan", "zero")


class ArrayInfo(NamedTuple):
    """What the checks may know about an argument without reading its values (works on tracers).

    ``kind`` is NumPy's dtype kind: "f" floating, "i"/"u" integer, "b" bool, "c" complex.
    """

    shape: tuple
    kind: str
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        return f"{self.dtype} array of shape {self.shape}"


class Sample(NamedTuple):
    """One case of a spec's sample grid: NumPy inputs in the spec's positional order (the
    order of ``LossSpec.inputs``: torch's, Keras' ``(y_true, y_pred)`` for ``keras.*``).

    ``contract_reference``: the reference is the weighting contract's formula applied to the
    reference library's unreduced loss, because the library's own reduction differs from the
    contract on this case (a documented difference, e.g. torch's NaN gradient of a mean whose
    weights sum to 0).
    """

    id: str
    inputs: tuple
    options: dict
    sample_weight: np.ndarray | None = None
    contract_reference: bool = False


# --------------------------------------------------------------------------------------------
# Options


def _check_reduction_value(allowed, aliases=None):
    aliases = aliases or {}

    def check(name, value):
        if isinstance(value, str) and value in aliases:
            return aliases[value]
        if value not in allowed:
            raise ValueError(
                f"{name}: expected one of {list(allowed) + list(aliases)}, got {value!r}"
            )
        return value

    return check


def one_of(allowed):
    """An option's check: the value is one of ``allowed`` (a loss type, a mode)."""
    return _check_reduction_value(tuple(allowed))


def _no_check(name, value):
    return value


@dataclass(frozen=True)
class Option:
    """A constructor option of a loss, with torch's keyword name and torch's default.

    ``kind`` is "scalar" (a hashable Python value, static under jit) or "array" (NumPy or a
    backend array; a buffer on torch, a jit argument on JAX).
    """

    name: str
    default: Any
    doc: str
    check: Callable[[str, Any], Any] = _no_check
    kind: str = "scalar"
    allowed: str = ""

    def bind(self, value):
        if self.kind == "array":
            return None if value is None else self.check(self.name, value)
        return self.check(self.name, value)


# Reusable option validators. Each returns the (normalised) value or raises ValueError naming
# the option, what is allowed and what came.


def real(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
        v = float(value)
        ok = not math.isnan(v)
        if lo is not None:
            ok = ok and (v > lo if lo_open else v >= lo)
        if hi is not None:
            ok = ok and (v < hi if hi_open else v <= hi)
        if not ok:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
            raise ValueError(f"{name}: expected a value in {rng}, got {value!r}")
        return v

    return check


def integer(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def boolean(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_axis_name(name, value):
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (tuple, list)) and value and all(
        isinstance(a, str) and a for a in value
    ):
        return tuple(value)
    raise TypeError(
        f"{name}: expected None, the name of a mapped axis of shard_map or pmap (a str) or a "
        f"tuple of names, got {type(value).__name__} {value!r}"
    )


def _check_process_group(name, value):
    if value is None:
        return None
    if isinstance(value, str):
        if value == "world":
            return value
        raise ValueError(
            f"{name}: expected None, 'world' or a torch.distributed ProcessGroup, got {value!r}"
        )
    if isinstance(value, (bool, int, float, tuple, list, dict, np.ndarray)):
        raise TypeError(
            f"{name}: expected None, 'world' or a torch.distributed ProcessGroup, got "
            f"{type(value).__name__} {value!r}"
        )
    return value  # the torch backend checks that it is a ProcessGroup


#: The contract's data-parallel options (docs/distributed.md): every loss accepts them, on the
#: backend they belong to (the other backend raises if one is set). They are not among a
#: loss's ``all_options`` (torch's options and the contract's reductions), so ``info()`` lists
#: them apart, under "distributed_options".
DISTRIBUTED_OPTIONS = (
    Option(
        "axis_name",
        None,
        "jax only: inside shard_map or pmap, the mapped axis (or tuple of axes) the batch is "
        "split over. Reductions then use the global numerator and denominator (a psum of "
        "each), so every device returns the loss of the whole batch; 'none' stays local "
        "(docs/distributed.md)",
        _check_axis_name,
        allowed="None | str | tuple of str",
    ),
    Option(
        "process_group",
        None,
        "torch only: with torch.distributed initialised, the group the batch is split over "
        "('world': the default group). Reductions then use the all-reduced numerator and "
        "denominator: every rank returns the loss of the whole batch, and its gradient is "
        "world_size times the rank's share, so that DDP's averaged gradient is the full "
        "batch's; 'none' stays local (docs/distributed.md)",
        _check_process_group,
        allowed="None | 'world' | ProcessGroup",
    ),
)


def array_option(ndim=None):
    """Validate an array option (NumPy, JAX or torch array): floating or integer, given rank."""

    def check(name, value):
        shape = tuple(getattr(value, "shape", ()))
        if not hasattr(value, "shape"):
            try:
                value = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{name}: expected an array (NumPy, JAX or torch), got {type(value).__name__}"
                ) from None
            shape = value.shape
        kind = dtype_kind(value)
        if kind not in "fiu":
            raise TypeError(f"{name}: expected a real-valued array, got dtype {value.dtype}")
        if ndim is not None and len(shape) != ndim:
            raise ValueError(f"{name}: expected a {ndim}-D array, got shape {shape}")
        return value

    return check


def dtype_kind(x) -> str:
    """NumPy dtype kind of a NumPy, JAX or torch array (or tracer) without reading values."""
    dt = x.dtype
    if not hasattr(dt, "is_floating_point"):  # NumPy and JAX dtypes (a torch dtype has it)
        kind = np.dtype(dt).kind
        # ml_dtypes' bfloat16 and float8 types (JAX's) have NumPy kind "V"
        return "f" if kind == "V" and "float" in str(dt) else kind
    # torch dtypes, read without NumPy (torch.compile traces this: its NumPy is torch's)
    if dt.is_floating_point:
        return "f"
    if dt.is_complex:
        return "c"
    name = str(dt)
    if name.endswith("bool"):
        return "b"
    if "uint" in name:
        return "u"
    return "i"


def array_info(x) -> ArrayInfo:
    dt = str(x.dtype).replace("torch.", "")
    return ArrayInfo(tuple(x.shape), dtype_kind(x), dt)


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class InputSpec:
    """A positional input (also accepted as a keyword of its name at call time).
    ``differentiable`` is whether torch differentiates it (for targets, only when floating).
    ``aliases``: other keyword names a call accepts for it, where the reference library's own
    argument name differs from ``name`` (torch's PoissonNLLLoss calls its input
    ``log_input``).
    ``optional``: the input may be left out of a call (or given as None); only trailing inputs
    are optional. A call without it passes the loss function fewer arguments (the function
    gives the input a default of None), and the checks see no entry of its name (GRPO's
    ``ref_logps``, needed only where ``beta != 0``; the distillation losses' ``labels``)."""

    name: str
    doc: str
    differentiable: bool = True
    aliases: tuple = ()
    optional: bool = False


@dataclass(frozen=True)
class LossSpec:
    """Everything multiloss knows about one loss, shared by both backends.

    check(infos: dict[name, ArrayInfo], opts) -> loss shape
        shape/dtype checks (no values read, so they also run on tracers); returns the shape of
        the unreduced loss, which ``sample_weight`` must broadcast to.
    check_values(arrays: dict[name, np.ndarray], infos, opts)
        checks that read values (class indices in range, sequence lengths, a non-negative
        variance), run only where the arguments named in ``value_args`` are concrete and of a
        dtype kind in ``value_kinds`` ("iu": integers, the default).
    samples(rng, dtype) -> iterator of Sample
        the option grid and edge cases used by tests, ``multiloss parity`` and benchmarks.
    random_sample(rng, dtype) -> Sample
        one case with random shapes, values and options (driven by hypothesis in the tests).
    reference(torch, inputs, opts, reduction)
        the independent reference: the defining library's own function (for torch.nn losses,
        ``torch.nn.functional``) on torch tensors, with torch's reduction ("none", "sum",
        "mean", and "batchmean" where torch has it).
    normalizer(inputs, opts) -> (weight, count) or (weight, count, scale)
        the documented denominator weights, count mask (and, where a loss has one, the mean's
        per-element scale, ``Terms.scale``) of the unreduced loss, in NumPy, from
        which ``multiloss.testing`` builds the reference of the contract's reductions
        (``sample_weight``, "sum_over_batch_size", ``empty_reduction="zero"``).
    default_reduction, default_empty_reduction
        the defaults of ``reduction`` and ``empty_reduction`` ("mean" and "nan", torch's, for
        every loss but those that follow a library with other defaults: Keras' losses default
        to "sum_over_batch_size" and give 0 for nothing that counts).
    reduction_aliases
        other names of the reductions, as the reference library spells them (Keras'
        "mean_with_sample_weight" is the contract's "mean"); bound to the contract's name.
    align_sample_weight(sample_weight shape, loss shape) -> shape
        where a loss follows a library whose ``sample_weight`` is not plain broadcasting: the
        shape the weight is reshaped to before it broadcasts to the unreduced loss (Keras
        squeezes or adds one trailing axis of size 1, ``keras.*``). None: used as given.
    order
        the positional order of ``inputs`` in words, for the docstring and ``info()``: torch's
        for every loss but those that follow a library with another order (``keras.*``:
        Keras' ``loss(y_true, y_pred)``). ``inputs`` itself is the order: samples, references
        and implementations take their arrays in it; every input is also a keyword.
    exact_aliases
        aliases (a subset of ``aliases``) matched only as spelled, not case- and
        underscore-insensitively, because their loose spelling already names another loss
        (Keras' ``binary_crossentropy`` is ``keras.binary_crossentropy``; ``binarycrossentropy``
        stays torch's ``binary_cross_entropy``).
    sample_weight_broadcasts_loss
        ``sample_weight`` may also broadcast the unreduced loss to a larger shape, as in a
        library that weights by ``loss * sample_weight`` (Keras, ``keras.*``): a per-sample
        weight on the one-number loss of ``keras.dice``. The reductions then run over the
        broadcast shape ("sum_over_batch_size": loss · mean(w) there). False: the weight must
        broadcast to the loss's shape.
    converts
        torch's implicit conversions of an input, ``{input name: (kinds, to)}``: an input of a
        dtype kind in ``kinds`` ("i", "u", "b", "f") is accepted and converted before the loss
        is computed, to ``to``: "float", the common floating dtype of the loss's floating
        inputs (torch's type promotion: mse_loss of float32 predictions and int64 targets is
        a float32 loss), or a dtype name ("int64": class indices given as floats, which
        torch truncates). Both backends convert, and the checks see the converted dtype
        (``converted``). Built by asking torch (tests/test_torch_dtypes.py). A mapping, or a
        function of the bound options giving one where the reference's conversion depends on
        an option (dpo: TRL's ipo and sigmoid_norm divide by a float32 token count, so their
        float16/bfloat16 loss is float32); ``conversion_rules(opts)`` reads either.
    batch_coupled
        the loss of a row depends on the other rows of the batch (in-batch pairs: ntxent,
        supcon, contrastive; dice's counts summed over the batch): the batch cannot be split
        into micro-batches or shards whose losses add up to the whole batch's
        (``multiloss.testing.batch_layout`` gives None), and ``axis_name`` /
        ``process_group`` raise. A bool, or a predicate of the bound options where only some
        options couple the rows (lovasz without ``per_image``, keras.dice over every axis).

    A reference written on JAX (optax, Keras 3 on its JAX backend) is adapted to the torch
    protocol by ``multiloss.losses._common.jax_reference``.
    """

    name: str
    family: str
    summary: str
    inputs: tuple
    options: tuple
    formula: str
    reference_name: str
    check: Callable
    samples: Callable
    random_sample: Callable
    reference: Callable
    normalizer: Callable
    aliases: tuple = ()
    reductions: tuple = REDUCTIONS
    default_reduction: str = "mean"
    default_empty_reduction: str = "nan"
    reduction_aliases: Mapping = field(default_factory=dict)
    align_sample_weight: Callable | None = None
    check_values: Callable | None = None
    value_args: tuple = ()
    value_kinds: str = "iu"
    notes: str = ""
    warn: Callable | None = None
    batch_coupled: bool | Callable = False
    order: str = "torch's order"
    exact_aliases: tuple = ()
    sample_weight_broadcasts_loss: bool = False
    converts: Mapping | Callable = field(default_factory=dict)
    _option_map: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self._option_map.update({o.name: o for o in self.all_options})
        self._option_map.update({o.name: o for o in DISTRIBUTED_OPTIONS})

    @property
    def all_options(self) -> tuple:
        return (
            Option(
                "reduction",
                self.default_reduction,
                "how the unreduced loss is reduced (see docs/weighting.md)"
                + "".join(f"; {a!r} is {r!r}" for a, r in self.reduction_aliases.items()),
                _check_reduction_value(self.reductions, self.reduction_aliases),
                allowed=" | ".join(repr(r) for r in (*self.reductions, *self.reduction_aliases)),
            ),
            *self.options,
            Option(
                "empty_reduction",
                self.default_empty_reduction,
                'what a reduction with a zero denominator gives: a "mean" over nothing that '
                'counts (all targets ignored, all weights 0, an empty batch), a '
                '"sum_over_batch_size" with no element counting, a "batchmean" of an empty '
                'batch. "nan": torch\'s NaN value with a zero gradient; "zero": 0 with a zero '
                'gradient',
                _check_reduction_value(EMPTY_REDUCTIONS),
                allowed="'nan' | 'zero'",
            ),
            Option(
                "validate",
                True,
                "check the values of concrete (not traced) arguments in host memory where a "
                "loss restricts them: class indices in range, sequence lengths, a "
                "non-negative variance (shape and dtype checks always run; arrays on an "
                "accelerator are not read, which would wait for the device on every call)",
                boolean,
            ),
        )

    def bind(self, options: Mapping[str, Any]) -> dict:
        """Validate user options and fill in defaults; returns a new dict."""
        unknown = [k for k in options if k not in self._option_map]
        if unknown:
            valid = ", ".join(self._option_map)
            raise TypeError(
                f"{self.name}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid options are: {valid}"
            )
        bound = {}
        for opt in (*self.all_options, *DISTRIBUTED_OPTIONS):
            bound[opt.name] = opt.bind(options.get(opt.name, opt.default))
        if self.coupled(bound):
            for name in ("axis_name", "process_group"):
                if bound[name] is not None:
                    raise ValueError(
                        f"{name}: {self.name} couples the rows of its batch (in-batch pairs, "
                        f"or counts summed over the batch), so shards' losses do not combine "
                        f"into the whole batch's; gather the inputs over the devices first "
                        f"(jax.lax.all_gather, torch.distributed.all_gather) and call the "
                        f"loss without {name}"
                    )
        if self.warn is not None:
            self.warn(bound)
        return bound

    def __reduce__(self):
        # pickled by name: a spec holds closures (checks, sample generators, references) and
        # is registered once per process; unpickling looks the same spec up again
        return (resolve, (self.name,))

    def coupled(self, bound: Mapping[str, Any]) -> bool:
        """Whether, with these bound options, a row's loss depends on the batch's other rows
        (``batch_coupled``)."""
        c = self.batch_coupled
        return bool(c(bound) if callable(c) else c)

    def doc(self) -> str:
        """The loss's docstring: summary, inputs, options with defaults, formula, reference
        and the differences from other libraries (set on every loss object)."""
        lines = [f"{self.name}: {self.summary}", "",
                 f"Inputs, in {self.order} (positional, or as keywords of their names):"]
        lines += [f"    {i.name}{' (optional)' if i.optional else ''}: {i.doc}"
                  for i in self.inputs]
        lines += ["", "Options (torch's names and defaults):"]
        for o in self.all_options:
            allowed = f" [{o.allowed}]" if o.allowed else ""
            lines.append(f"    {o.name}={o.default!r}{allowed}: {o.doc}")
        lines += ["", "Data-parallel options (every loss):"]
        for o in DISTRIBUTED_OPTIONS:
            lines.append(f"    {o.name}={o.default!r} [{o.allowed}]: {o.doc}")
        lines += ["", "Formula:"] + [f"    {ln}" for ln in self.formula.splitlines()]
        lines += ["", f"Reference: {self.reference_name}"]
        if self.notes:
            lines += ["", f"Differences from other libraries: {self.notes}"]
        lines += ["", "Weighting and reductions: docs/weighting.md"]
        return "\n".join(lines)

    def implementation(self, backend: str) -> Callable:
        # a namespaced name ("keras.huber") is the function "huber" of its family's module
        mod = importlib.import_module(f"multiloss.losses.{self.family}._{backend}")
        return getattr(mod, self.name.rpartition(".")[2])

    def conversion_rules(self, opts: Mapping) -> Mapping:
        """``converts`` for the bound options ``opts`` (the one place both backends, the
        checks and the fused forms read it)."""
        return self.converts(opts) if callable(self.converts) else self.converts

    def conversions(self, infos: Sequence[ArrayInfo], opts: Mapping) -> tuple | None:
        """The dtype (a name) each input is converted to under ``converts`` with the bound
        options ``opts`` (None: kept as it is), or None where no input is converted."""
        rules = self.conversion_rules(opts)
        if not rules:
            return None
        floats = [x.dtype for x in infos if x.kind == "f"]
        out, any_ = [], False
        for inp, x in zip(self.inputs, infos):
            rule = rules.get(inp.name)
            to = None
            if rule is not None and x.kind in rule[0]:
                if rule[1] == "float":
                    to = common_float(floats)
                elif rule[1] == "float32+":  # torchvision's _upcast_non_float
                    to = None if x.dtype in ("float32", "float64") else "float32"
                else:
                    to = rule[1]
                any_ = any_ or (to is not None and to != x.dtype)
            out.append(to if to != x.dtype else None)
        return tuple(out) if any_ else None

    def converted(self, infos: Sequence[ArrayInfo], opts: Mapping) -> list:
        """The inputs' ArrayInfo after ``converts`` with the bound options ``opts`` (what
        the checks see)."""
        conv = self.conversions(infos, opts)
        if conv is None:
            return list(infos)
        return [x if d is None else ArrayInfo(x.shape, "f" if "float" in d else "i", d)
                for x, d in zip(infos, conv)]

    def call_check(self, infos: Sequence[ArrayInfo], sw: ArrayInfo | None, opts) -> tuple:
        """Run the shape/dtype checks for one call signature; returns the loss shape."""
        infos = self.converted(infos, opts)
        named = dict(zip((i.name for i in self.inputs), infos))
        loss_shape = tuple(self.check(named, opts))
        if sw is not None:
            if self.align_sample_weight is not None:
                sw = sw._replace(shape=tuple(self.align_sample_weight(sw.shape, loss_shape)))
            check_sample_weight(sw, loss_shape, self.sample_weight_broadcasts_loss)
        return loss_shape


def common_float(dtypes) -> str | None:
    """The common floating dtype (a name) of floating dtype names, as torch, JAX and NumPy
    promote them (float16 with bfloat16: float32); None for none."""
    dtypes = set(dtypes)
    if not dtypes:
        return None
    if len(dtypes) == 1:
        return dtypes.pop()
    return "float64" if "float64" in dtypes else "float32"


def check_sample_weight(sw: ArrayInfo, loss_shape: tuple, both_ways: bool = False) -> None:
    """``sample_weight`` broadcasts to the unreduced loss's shape (``both_ways``: or with it,
    to a larger shape: ``LossSpec.sample_weight_broadcasts_loss``)."""
    if sw.kind not in "fiub":
        raise TypeError(f"sample_weight: expected a real-valued array, got {sw.describe()}")
    try:
        out = np.broadcast_shapes(sw.shape, loss_shape)
    except ValueError:
        out = None
    if out == tuple(loss_shape) or (both_ways and out is not None):
        return
    raise ValueError(
        f"sample_weight: expected an array that broadcasts "
        f"{'with' if both_ways else 'to'} the unreduced loss of shape "
        f"{tuple(loss_shape)}, got shape {sw.shape}" + per_sample_hint(sw.shape, loss_shape))


def per_sample_hint(shape: tuple, to: tuple) -> str:
    """The hint of a weight of shape (N,) against (N, ...): broadcasting aligns trailing
    dimensions, so one weight per sample is ``w[:, None, ...]``. Empty where it does not apply."""
    if len(shape) == 1 and len(to) > 1 and shape[0] == to[0]:
        extra = ", ".join(["None"] * (len(to) - 1))
        return (f". Broadcasting aligns trailing dimensions; for one weight per sample use "
                f"w[:, {extra}] (shape {(shape[0],) + (1,) * (len(to) - 1)})")
    return ""


# --------------------------------------------------------------------------------------------
# The registry

_SPECS: dict[str, LossSpec] = {}
_NAMES: dict[str, str] = {}  # alias (and canonical name) -> canonical name
_LOADED = False


def _norm(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name).lower()


def register(spec: LossSpec) -> LossSpec:
    if spec.name in _SPECS:
        raise ValueError(f"loss {spec.name!r} is registered twice")
    if not set(spec.exact_aliases) <= set(spec.aliases):
        raise ValueError(f"{spec.name}: exact_aliases must be among its aliases")
    for n in (spec.name, *spec.aliases):
        for key in {n} if n in spec.exact_aliases else {n, _norm(n)}:
            if _NAMES.get(key, spec.name) != spec.name:
                raise ValueError(f"name {n!r} of {spec.name!r} is taken by {_NAMES[key]!r}")
            _NAMES[key] = spec.name
    _SPECS[spec.name] = spec
    return spec


def _load():
    global _LOADED
    if not _LOADED:
        importlib.import_module("multiloss.losses")
        _LOADED = True


def resolve(name: str) -> LossSpec:
    """The spec of a loss, by canonical name, alias or torch class name (case-insensitive)."""
    _load()
    if not isinstance(name, str):
        raise TypeError(f"name: expected a loss name (str), got {type(name).__name__}")
    key = name if name in _NAMES else _norm(name)
    if key in _NAMES:
        return _SPECS[_NAMES[key]]
    for torch_name, (ours, where) in MODULE_LOSSES.items():
        if _norm(name) in (_norm(torch_name), _norm(ours)):
            raise ValueError(
                f"name: {name!r} is a module with parameters (torch's {torch_name}), not a "
                f"function of its inputs: use {where}, or multiloss.from_torch of a live "
                f"torch.nn.{torch_name}")
    every = sorted({n for s in _SPECS.values() for n in (s.name, *s.aliases)})
    close = difflib.get_close_matches(name, every, n=5, cutoff=0.5)
    if not close:
        close = [n for n in every if _norm(n).startswith(_norm(name)[:3])][:5]
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ValueError(f"name: unknown loss {name!r}{hint}. `multiloss list` (in Python: "
                     f"multiloss.available()) lists every loss")


#: torch.nn's loss classes that are modules with parameters, not functions of their inputs:
#: each is a module pair in ``multiloss.nn`` (and ``multiloss.from_torch`` converts a live one)
#: rather than a registry loss. torch name -> (multiloss name, where it is).
MODULE_LOSSES = {
    "AdaptiveLogSoftmaxWithLoss": (
        "adaptive_log_softmax",
        "multiloss.nn.AdaptiveLogSoftmaxWithLoss (flax.nnx) and "
        "multiloss.nn.TorchAdaptiveLogSoftmaxWithLoss (torch)"),
}


def available(family: str | None = None, modules: bool = False) -> list[str]:
    """The canonical names of the registered losses (optionally of one task family).

    ``modules=True`` adds the losses that are modules with parameters (torch's
    ``AdaptiveLogSoftmaxWithLoss``: ``"adaptive_log_softmax"``, the module pair of
    ``multiloss.nn``; ``MODULE_LOSSES``), which ``multiloss.get`` does not build."""
    _load()
    names = [n for n, s in _SPECS.items() if family is None or s.family == family]
    if modules and family in (None, "modules"):
        names += [n for n, _ in MODULE_LOSSES.values()]
    return sorted(names)


def specs() -> Iterator[LossSpec]:
    _load()
    return iter([_SPECS[n] for n in sorted(_SPECS)])


def info(name: str) -> dict:
    """A loss's aliases, family, inputs, options (default, allowed values, meaning), formula,
    reference and notes on where it differs from other libraries."""
    spec = resolve(name)
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "family": spec.family,
        "summary": spec.summary,
        "order": spec.order,
        "inputs": [
            {"name": i.name, "doc": i.doc, "differentiable": i.differentiable,
             "optional": i.optional} for i in spec.inputs
        ],
        "options": [
            {
                "name": o.name,
                "default": o.default,
                "allowed": o.allowed,
                "doc": o.doc,
            }
            for o in spec.all_options
        ],
        "distributed_options": [
            {"name": o.name, "default": o.default, "allowed": o.allowed, "doc": o.doc}
            for o in DISTRIBUTED_OPTIONS
        ],
        "reductions": list(spec.reductions),
        "formula": spec.formula,
        "reference": spec.reference_name,
        "notes": spec.notes,
    }
