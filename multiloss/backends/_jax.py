"""The JAX backend: the weighting contract (docs/weighting.md) and the jitted loss object.

``reduce`` is the one implementation of every reduction, sample weighting and the
nothing-counts rule on JAX; every loss goes through it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._registry import array_info, dtype_kind
from . import InputChecks, Terms, num_items, signature_key

NAME = "jax"


def _divide(num, den, empty: str, propagate: bool = False):
    """num / den, and where den == 0: NaN (empty="nan") or 0 (empty="zero"), with a zero
    gradient either way (torch's gradient of a mean over nothing). ``propagate``
    ("sum_over_batch_size"): there, ``num * 0`` is added to the fill, so a NaN or an infinity
    among the elements that do not count still gives NaN (Keras, whose divisor is the element
    count and whose masked elements enter as loss * 0)."""
    fill = jnp.nan if empty == "nan" else 0.0
    if isinstance(den, (int, float)):  # a static count
        if den == 0:
            return num * 0 + jnp.asarray(fill, num.dtype)
        return num / den
    zero = den == 0
    out = num / jnp.where(zero, jnp.ones_like(den), den)
    fill = jnp.asarray(fill, out.dtype)
    return jnp.where(zero, num * 0 + fill if propagate else fill, out)


#: Floating dtypes computed in float32 and rounded to their own dtype once, at the end (torch
#: accumulates their sums and log-sum-exps in float32 on CPU and CUDA; docs/distributed.md §4).
LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))

#: The reductions with a denominator (the ones ``normalizer`` and ``denominator`` apply to).
DIVIDING = ("mean", "sum_over_batch_size", "batchmean")


def _weighted(terms: Terms, sample_weight):
    loss = terms.loss
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight).astype(loss.dtype)
        loss = loss * sample_weight
    return loss, sample_weight


def _numerator(terms: Terms, loss, reduction: str):
    if reduction == "mean" and terms.scale is not None:
        return jnp.sum(loss * terms.scale)
    return jnp.sum(loss)


def _denominator(terms: Terms, loss, sample_weight, reduction: str):
    """The denominator of a dividing reduction: a Python number where it is static."""
    if reduction == "mean":
        d = terms.weight
        if sample_weight is not None:
            d = sample_weight if d is None else d * sample_weight
            return jnp.sum(jnp.broadcast_to(d, loss.shape))
        return loss.size if d is None else jnp.sum(d)
    if reduction == "sum_over_batch_size":
        if terms.count is None:
            return loss.size
        # a sample weight that broadcasts the loss (Keras') repeats each element's count
        return jnp.sum(jnp.broadcast_to(terms.count, loss.shape).astype(loss.dtype))
    if reduction == "batchmean":
        return loss.shape[0] if loss.ndim else 1
    raise ValueError(f"reduction: unknown {reduction!r}")  # pragma: no cover - validated


def _psum(x, axis_name, dtype):
    return jax.lax.psum(jnp.asarray(x, dtype), axis_name)


def reduce(terms: Terms, reduction: str, sample_weight=None, empty: str = "nan", *,
           normalizer=None, axis_name=None):
    """Reduce a loss's ``Terms`` as the weighting contract says.

    none: s * l;  sum: sum(s * l);  mean: sum(s * l * r) / sum(s * d);
    sum_over_batch_size: sum(s * l) / sum(count);  batchmean: sum(s * l) / l.shape[0];
    with s the sample weight (1 if None), d the loss's denominator weights (1 if None) and
    r the loss's mean scale (``Terms.scale``, 1 if None; ctc's 1 / target length).

    ``normalizer``: a given denominator replacing the batch's own (gradient accumulation,
    docs/distributed.md). ``axis_name``: inside shard_map or pmap, the numerator and
    denominator are psum-ed over that axis, so the value is the whole batch's on every device.
    """
    loss, sample_weight = _weighted(terms, sample_weight)
    if reduction == "none":
        return loss
    num = _numerator(terms, loss, reduction)
    if axis_name is not None:
        num = jax.lax.psum(num, axis_name)
    if reduction == "sum":
        return num
    if normalizer is not None:
        den = jnp.asarray(normalizer).astype(num.dtype)
    else:
        den = _denominator(terms, loss, sample_weight, reduction)
        if axis_name is not None:
            den = _psum(den, axis_name, num.dtype)
    return _divide(num, den, empty, propagate=reduction == "sum_over_batch_size")


def denominator(terms: Terms, reduction: str, sample_weight=None, *, axis_name=None):
    """The denominator ``reduce`` divides by (psum-ed over ``axis_name``), without gradient."""
    loss, sample_weight = _weighted(terms, sample_weight)
    den = jnp.asarray(_denominator(terms, loss, sample_weight, reduction), loss.dtype)
    if axis_name is not None:
        den = jax.lax.psum(den, axis_name)
    return jax.lax.stop_gradient(den)


def batch_sum(x, axis_name=None):
    """The sum of ``x`` over the whole batch: psum-ed over ``axis_name`` inside shard_map or
    pmap, else ``x``; without gradient. For a loss whose terms are normalised by a count of
    the batch (linear_cpo's and linear_orpo's NLL term: N / the chosen tokens): such a
    function sets ``wants_batch_sum = True`` and gets this as its keyword ``batch_sum``, so
    that its count is the whole batch's on every device, as ``reduce``'s denominator is."""
    x = jax.lax.stop_gradient(x)
    if axis_name is None:
        return x
    # the psum is the same on every device; cast back to varying where x varied, so that it
    # meets the shard's arrays in a custom VJP or a cond (shard_map's check_vma)
    axes = tuple(sorted(_varying(x)))
    out = jax.lax.psum(x, axis_name)
    return jax.lax.pcast(out, axes, to="varying") if axes and hasattr(jax.lax, "pcast") else out


def _upcast(inputs):
    """Floating inputs cast to their common dtype (float32 logits with float64 probabilities:
    computed in float64, as on torch), and float16/bfloat16 computed in float32:
    (inputs, the result's dtype where it differs from the computation's, else None)."""
    floats = [x.dtype for x in inputs if jnp.issubdtype(x.dtype, jnp.floating)]
    if not floats:
        return inputs, None
    common = jnp.result_type(*floats)
    compute = jnp.dtype(jnp.float32) if common in LOW_PRECISION else common
    if all(d == compute for d in floats):
        return inputs, None
    return tuple(
        x.astype(compute) if jnp.issubdtype(x.dtype, jnp.floating) else x for x in inputs
    ), (common if compute != common else None)


def _convert(spec, inputs, opts):
    """torch's implicit conversions of the spec's inputs (``LossSpec.converts``), inside the
    jitted function (static on dtypes); the twin of ``_convert`` in backends/_torch.py.
    int64 is JAX's canonical integer (int32 without x64)."""
    if not spec.converts:
        return inputs
    conv = spec.conversions([array_info(x) for x in inputs], opts)
    if conv is None:
        return inputs
    return tuple(
        x if d is None else x.astype(jax.dtypes.canonicalize_dtype(jnp.dtype(d)))
        for x, d in zip(inputs, conv)
    )


def _as_array(x, name):
    if isinstance(x, np.ndarray) and not x.dtype.isnative:  # big-endian: jit refuses it
        return x.astype(x.dtype.newbyteorder("="))
    if isinstance(x, (jax.Array, np.ndarray, jax.core.Tracer)):
        return x
    if type(x).__module__.startswith("torch"):
        raise TypeError(
            f"{name}: expected a NumPy or JAX array, got a torch.Tensor; use the torch backend "
            f"or convert with .numpy()"
        )
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e


_MISS = object()

#: The input types whose calls take the hot path once their signature has been checked:
#: JAX arrays, tracers and NumPy arrays (anything else goes through the conversions).
_FAST_TYPES = (jax.Array, jax.core.Tracer, np.ndarray)


def _concrete(x):
    """x's values as a NumPy array where they are on the host (NumPy, JAX arrays on CPU);
    None for a tracer, and for an array on an accelerator: reading that would wait for the
    device and copy on every call (an index out of range there gives NaN, as under a trace)."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, jax.core.Tracer) or _platform(x) != "cpu":
        return None
    return np.asarray(x)


def _platform(x) -> str:
    platform = getattr(x, "platform", None)  # jaxlib's ArrayImpl: one C++ call
    if callable(platform):
        return platform()
    return next(iter(x.devices())).platform  # pragma: no cover - other jax.Array types


def _read_array(x):
    return np.asarray(x) if _platform(x) == "cpu" else None


def _read_array_impl(x):
    return np.asarray(x) if x.platform() == "cpu" else None


def _same(x):
    return x


def _reader(x):
    """How the hot path reads the values of inputs of x's type (see InputChecks.hot)."""
    if isinstance(x, np.ndarray):
        return _same
    if isinstance(x, jax.core.Tracer):
        return None
    return _read_array_impl if callable(getattr(x, "platform", None)) else _read_array


def _option_array(value):
    if isinstance(value, jax.Array):
        return value
    if hasattr(value, "detach"):  # a torch tensor given as an option
        value = value.detach().cpu().numpy()
    return jnp.asarray(np.asarray(value))


def _varying(x) -> set:
    """The mapped axes (shard_map) that x varies over; empty outside shard_map."""
    typeof = getattr(jax, "typeof", None)
    if typeof is None:  # pragma: no cover - JAX before typeof
        return set()
    t = typeof(x)
    m = getattr(t, "manual_axis_type", None)  # JAX 0.10
    return set(m.varying) if m is not None else set(getattr(t, "vma", ()) or ())


def _vary(arrays, inputs):
    """Inside ``shard_map`` (with its default ``check_vma``), every array made varying over
    the mapped axes any input varies over. A custom VJP (ctc's, the fused cross-entropy's)
    must return cotangents of its arguments' types, and a class weight replicated over the
    shards gets a cotangent that varies: made varying first, its cotangent is psum-ed back
    by JAX (the transpose of the cast). Outside shard_map nothing varies: no-op."""
    if getattr(jax, "typeof", None) is None:
        return arrays, inputs
    axes = set()
    for x in (*inputs, *arrays.values()):
        axes |= _varying(x)
    if not axes:
        return arrays, inputs

    def vary(x):
        missing = tuple(sorted(axes - _varying(x)))
        if not missing:
            return x
        if hasattr(jax.lax, "pcast"):
            return jax.lax.pcast(x, missing, to="varying")
        return jax.lax.pvary(x, missing)  # pragma: no cover - JAX before 0.8.2

    return {k: vary(v) for k, v in arrays.items()}, tuple(vary(x) for x in inputs)


def _explicit_mesh(args):
    """The mesh with Explicit axes this call runs under, else None: the context mesh
    (``jax.set_mesh``), or, without one, the mesh in the types of the arguments placed with a
    ``NamedSharding`` over Explicit axes (``jax.make_mesh``'s default in recent JAX)."""
    get = getattr(jax.sharding, "get_abstract_mesh", None)
    if get is None:  # pragma: no cover - a JAX without explicit sharding
        return None
    mesh = get()
    if not mesh.empty:
        return mesh if mesh.explicit_axes else None
    for x in jax.tree_util.tree_leaves(args):
        m = getattr(jax.typeof(x).sharding, "mesh", None)
        if m is not None and not m.empty and m.explicit_axes:
            return m
    return None


def _auto_sharding(body, args, loss_shape):
    """``body`` as it is, or, where the arguments are sharded over a mesh with Explicit axes
    (with or without ``jax.set_mesh``), run with those axes Auto: the partitioner then
    places the gathers of the losses (class weights by target, ctc's states) as under
    ``jax.jit`` without explicit sharding, and the numbers are the single-device ones. A
    reduced result comes out replicated; an unreduced one (``loss_shape``) is split over its
    first axis as the first input is over its first axis where the two have the same length,
    else replicated."""
    mesh = _explicit_mesh(args)
    if mesh is None:
        return body
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    spec = P()
    x = args[1][0]  # the first input
    if loss_shape and x.ndim and x.shape[0] == loss_shape[0]:
        first = tuple(jax.typeof(x).sharding.spec)[:1]
        if first and first[0] is not None:
            spec = P(first[0], *([None] * (len(loss_shape) - 1)))
    return jax.sharding.auto_axes(body, out_sharding=NamedSharding(mesh, spec))


def _align(spec, sample_weight, terms):
    """The sample weight reshaped as the spec's ``align_sample_weight`` says (Keras' rank
    rule), else as given."""
    if sample_weight is None or spec.align_sample_weight is None:
        return sample_weight
    return jnp.reshape(sample_weight,
                       spec.align_sample_weight(sample_weight.shape, terms.loss.shape))


def _check_normalizer(normalizer, reduction: str):
    if reduction not in DIVIDING:
        raise ValueError(
            f"normalizer: replaces the denominator of reduction 'mean', "
            f"'sum_over_batch_size' or 'batchmean'; reduction={reduction!r} has none"
        )
    normalizer = _as_array(normalizer, "normalizer")
    if normalizer.shape != ():
        raise ValueError(f"normalizer: expected a scalar, got shape {normalizer.shape}")
    if dtype_kind(normalizer) not in "fiu":
        raise TypeError(f"normalizer: expected a real number, got dtype {normalizer.dtype}")
    return normalizer


_INT32 = np.iinfo(np.int32)

#: The options that are class indices, compared with the integer targets inside the jitted
#: computation (the other integer options, sizes and axes, stay on the host).
INDEX_OPTIONS = ("ignore_index", "ignore_class", "blank")


def _check_int32(spec, options) -> None:
    """In JAX's default 32-bit mode (``jax_enable_x64`` off) integer arrays are int32 under
    jit: a class-index option beyond int32 (an ``ignore_index`` of 2**40) would overflow at
    the first call. Raised here, when the loss is made, naming the option."""
    for o in spec.options:
        v = options.get(o.name)
        if (o.name in INDEX_OPTIONS and isinstance(v, (int, np.integer))
                and not isinstance(v, bool) and not _INT32.min <= v <= _INT32.max):
            raise ValueError(
                f"{o.name}: expected an integer in the int32 range [{_INT32.min}, "
                f"{_INT32.max}] in JAX's default 32-bit mode (integer arrays are int32 there), "
                f"got {v}; enable 64-bit mode with jax.config.update('jax_enable_x64', True) "
                f"before making the loss, or use a value in range")


class Loss:
    """A multiloss loss on JAX: a pure callable, jit-compiled once per (options, shapes, dtypes).

    ``loss(*inputs, sample_weight=None, normalizer=None)`` takes NumPy or JAX arrays in the
    spec's positional order (torch's; Keras' ``(y_true, y_pred)`` for ``keras.*``), or as
    keywords of the inputs' names, and returns a JAX array. It works inside ``jax.jit``,
    ``jax.grad``, ``jax.vmap``, ``shard_map`` and ``pmap`` (option ``axis_name``).
    Shape and dtype checks run once per call signature; where the class indices are concrete
    (not traced) their values are checked too. Under a trace an invalid class index gives NaN.
    float16 and bfloat16 inputs are computed in float32 and the result is rounded to their
    dtype (docs/distributed.md).

    ``normalizer``: divide by this denominator instead of the batch's own (gradient
    accumulation: ``loss.denominator(...)`` summed over the micro-batches of a step).
    """

    backend = NAME

    def __init__(self, spec, options: dict):
        self.spec = spec
        self.options = dict(options)
        self.__doc__ = spec.doc()
        if options.get("process_group") is not None:
            raise ValueError(
                "process_group: a torch.distributed option, for the torch backend; on jax "
                "use axis_name=... inside shard_map or pmap (docs/distributed.md)"
            )
        if not jax.config.jax_enable_x64:
            _check_int32(spec, options)
        fn = spec.implementation(NAME)
        array_names = [o.name for o in spec.options if o.kind == "array"]
        static = {
            o.name: options[o.name] for o in spec.options if o.kind != "array"
        }
        self._arrays = {
            k: _option_array(options[k]) for k in array_names if options[k] is not None
        }
        reduction, empty = options["reduction"], options["empty_reduction"]
        axis_name = options.get("axis_name")
        if getattr(fn, "wants_batch_sum", False):  # a count of the whole batch (batch_sum)
            static["batch_sum"] = functools.partial(batch_sum, axis_name=axis_name)
        self._reduction = reduction
        self._checks = InputChecks(spec, self.options)

        # a function that sets ``wants_half_dtype`` (the fused-linear losses) gets the
        # float16/bfloat16 dtype of inputs computed in float32 (None otherwise) as its keyword
        # ``half_dtype``: it rounds its logits to it, as a half matrix product's are
        half = getattr(fn, "wants_half_dtype", False)

        def run(arrays, inputs, sample_weight, normalizer):
            def body(arrays, inputs, sample_weight, normalizer):
                inputs, out_dtype = _upcast(_convert(spec, inputs, options))
                arrays, inputs = _vary(arrays, inputs)
                terms = fn(*inputs, **static, **arrays,
                           **({"half_dtype": out_dtype} if half else {}))
                sample_weight = _align(spec, sample_weight, terms)
                out = reduce(terms, reduction, sample_weight, empty, normalizer=normalizer,
                             axis_name=axis_name)
                return out if out_dtype is None else out.astype(out_dtype)

            args = (arrays, inputs, sample_weight, normalizer)
            shape = ()
            if reduction == "none" and _explicit_mesh(args) is not None:
                shape = spec.call_check([array_info(x) for x in inputs], None, self.options)
            return _auto_sharding(body, args, shape)(*args)

        def den(arrays, inputs, sample_weight):
            def body(arrays, inputs, sample_weight):
                inputs, out_dtype = _upcast(_convert(spec, inputs, options))
                arrays, inputs = _vary(arrays, inputs)
                terms = fn(*inputs, **static, **arrays,
                           **({"half_dtype": out_dtype} if half else {}))
                sample_weight = _align(spec, sample_weight, terms)
                return denominator(terms, reduction, sample_weight, axis_name=axis_name)

            args = (arrays, inputs, sample_weight)
            return _auto_sharding(body, args, ())(*args)

        self._run = jax.jit(run)
        # the calls without sample weight or normalizer: every argument a flat array (a jit
        # whose arguments hold a dict or None is slower to wait on, by ~2-4 us a call here)
        names = tuple(self._arrays)
        arrays = tuple(self._arrays[k] for k in names)
        self._plain_args = arrays

        def plain(*args):
            return run(dict(zip(names, args[:len(names)])), args[len(names):], None, None)

        self._plain = jax.jit(plain)
        self._den = jax.jit(den)
        # signature (shape, dtype, type of each input) -> the value checks (None: nothing to
        # check) of the calls that may take the hot path of __call__
        self._fast: dict = {}
        self._key = signature_key(len(spec.inputs), "type", self._checks.required)

    def _prepare(self, inputs, sample_weight):
        checks = self._checks
        inputs = checks.trim(inputs)
        checks.count(inputs)
        inputs = tuple(_as_array(x, n) for x, n in zip(inputs, checks.names))
        if sample_weight is not None:
            sample_weight = _as_array(sample_weight, "sample_weight")
        checks(inputs, sample_weight, _concrete)
        return inputs, sample_weight

    def __call__(self, *inputs, sample_weight=None, normalizer=None, **named):
        if named:  # inputs by keyword: loss(input=x, target=t), torch's and the spec's names
            normalizer = num_items(named, normalizer)  # transformers' num_items_in_batch
            if named:
                inputs = self._checks.positional(inputs, named)
        # the hot path: inputs of a signature seen before, all of them arrays (JAX, NumPy or
        # tracers), no sample weight or normalizer: the cached shape/dtype checks, the value
        # checks, the compiled function; nothing else
        if sample_weight is None and normalizer is None:
            try:
                check = self._fast.get(self._key(inputs), _MISS)
            except (AttributeError, TypeError, ValueError):  # not arrays, or a wrong number
                check = _MISS
            if check is not _MISS:
                if check is not None:
                    check(inputs)
                return self._call(inputs, None, None)
        inputs, sample_weight = self._prepare(inputs, sample_weight)
        if normalizer is not None:
            normalizer = _check_normalizer(normalizer, self._reduction)
        elif sample_weight is None and len(self._fast) < 64:
            if all(isinstance(x, _FAST_TYPES) for x in inputs):
                self._fast[self._key(inputs)] = self._checks.hot(inputs, _reader, _concrete)
        return self._call(inputs, sample_weight, normalizer)

    def _call(self, inputs, sample_weight, normalizer):
        try:
            if sample_weight is None and normalizer is None:
                return self._plain(*self._plain_args, *inputs)
            return self._run(self._arrays, inputs, sample_weight, normalizer)
        except ValueError as e:
            if "incompatible devices" not in str(e):
                raise
            raise ValueError(self._device_message(inputs, sample_weight)) from e
        except NameError as e:
            raise self._unbound(e) from e
        except TypeError as e:
            if "forward-mode autodiff (jvp) to a custom_vjp" not in str(e) or not \
                    self.options.get("grad_in_forward", False):
                raise
            raise TypeError(
                f"{self.spec.name}: forward-mode autodiff (jax.jvp, jacfwd, linearize) of the "
                f"default path (grad_in_forward=True), a jax.custom_vjp that computes each "
                f"chunk's gradient in the forward pass; make the loss with "
                f"grad_in_forward=False (the chunks differentiated by JAX, rematerialised: four "
                f"matrix products per chunk instead of three, the same memory). jax.grad and "
                f"jax.hessian work on both paths. JAX said: {e}") from e

    def _unbound(self, error: NameError) -> Exception:
        """JAX's unbound-axis NameError of a loss made with ``axis_name``, called outside
        ``shard_map`` / ``pmap``: our ValueError saying where ``axis_name`` belongs."""
        axis_name = self.options.get("axis_name")
        if axis_name is None or "axis name" not in str(error):
            return error
        return ValueError(
            f"axis_name={axis_name!r}: the loss psums its numerator and denominator over the "
            f"mapped axis {axis_name!r}, which is bound only inside jax.shard_map (or jax.pmap) "
            f"over a mesh with that axis; call the loss inside the shard_map-ped function. Under "
            f"jax.jit on sharded inputs make the loss without axis_name: XLA reduces over the "
            f"devices itself (docs/distributed.md). JAX said: {error}")

    def _device_message(self, inputs, sample_weight) -> str:
        """Which argument is committed to other devices than the first input (jit's own
        message names the arguments of an internal function)."""
        names = (*self._checks.names, "sample_weight")
        arrays = (*inputs, sample_weight)
        placed = [(n, x) for n, x in zip(names, arrays)
                  if isinstance(x, jax.Array) and getattr(x, "committed", True)]

        def ids(x):
            return sorted(d.id for d in x.devices())

        ref_name, ref = placed[0] if placed else (names[0], None)
        for name, x in placed[1:]:
            if ids(x) != ids(ref):
                return (f"{name}: expected an array on the devices of {ref_name} "
                        f"(ids {ids(ref)}), got one on devices {ids(x)}; move it with "
                        f"jax.device_put")
        return "inputs: committed to incompatible devices; move them with jax.device_put"

    def denominator(self, *inputs, sample_weight=None, **named):
        """What this loss's reduction divides by on these inputs, without gradient: the
        summed ``sample_weight * d`` for "mean", the number of elements that count for
        "sum_over_batch_size", the batch size for "batchmean"; psum-ed over ``axis_name``
        when it is set. float32 for float16/bfloat16 inputs (so counts stay exact).

        Gradient accumulation: the sum of the micro-batches' denominators, passed to every
        micro-batch as ``normalizer``, makes the micro-batch losses add up to the full
        batch's loss and their gradients to its gradient (docs/distributed.md)."""
        if self._reduction not in DIVIDING:
            raise ValueError(
                f"denominator: reduction={self._reduction!r} has no denominator (only "
                f"'mean', 'sum_over_batch_size' and 'batchmean' divide)"
            )
        if named:
            inputs = self._checks.positional(inputs, named)
        inputs, sample_weight = self._prepare(inputs, sample_weight)
        try:
            return self._den(self._arrays, inputs, sample_weight)
        except NameError as e:
            raise self._unbound(e) from e

    def __repr__(self):
        opts = ", ".join(
            f"{k}={'<array>' if hasattr(v, 'shape') else repr(v)}"
            for k, v in self.options.items()
            if not (k in ("axis_name", "process_group") and v is None)
        )
        return f"multiloss.{self.spec.name}[jax]({opts})"

    # pickle (multiprocessing, DataLoader workers, checkpoints that store the loss): the spec
    # (pickled by name) and the bound options, array options as NumPy; the compiled functions
    # and the per-signature caches are made again when unpickled (copy.deepcopy too)
    def __getstate__(self):
        options = dict(self.options)
        for name, value in self._arrays.items():
            options[name] = np.asarray(value)
        return {"spec": self.spec, "options": options}

    def __setstate__(self, state):
        self.__init__(state["spec"], state["options"])

    def __eq__(self, other):
        """Equal losses compute the same function: the same spec and options (array options
        equal in dtype, shape and values)."""
        if type(other) is not type(self):
            return NotImplemented
        if other.spec is not self.spec or self.options.keys() != other.options.keys():
            return False
        for name, value in self.options.items():
            if name in self._arrays or name in other._arrays:
                a, b = self._arrays.get(name), other._arrays.get(name)
                if (a is None) != (b is None) or a is not None and not (
                        a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))):
                    return False
            elif value != other.options[name]:
                return False
        return True

    def __hash__(self):
        return hash((self.spec.name, *sorted(
            (k, v) for k, v in self.options.items() if k not in self._arrays)))


def make(spec, options):
    return Loss(spec, options)
