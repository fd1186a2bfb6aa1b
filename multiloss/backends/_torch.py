"""The torch backend: the weighting contract (docs/weighting.md) and the loss module.

``reduce`` is the one implementation of every reduction, sample weighting and the
nothing-counts rule on torch. Where nothing of the contract is asked for beyond torch's own
reduction, the loss function calls torch's kernel with that reduction directly.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._registry import array_info
from . import InputChecks, Terms, num_items, signature_key

NAME = "torch"
_NATIVE = ("none", "sum", "mean", "batchmean")


def _divide(num, den, empty: str, propagate: bool = False):
    """The twin of ``_jax._divide``."""
    fill = float("nan") if empty == "nan" else 0.0
    if isinstance(den, (int, float)):
        if den == 0:
            return num * 0 + fill
        return num / den
    zero = den == 0
    out = num / torch.where(zero, torch.ones_like(den), den)
    filled = num * 0 + fill if propagate else torch.full_like(out, fill)
    return torch.where(zero, filled, out)


#: The reductions with a denominator (the ones ``normalizer`` and ``denominator`` apply to).
DIVIDING = ("mean", "sum_over_batch_size", "batchmean")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _acc_dtype(dtype):
    """The dtype sums are accumulated in: float32 for float16/bfloat16 (as torch's own
    reductions do on CPU and CUDA), else the loss's dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _weighted(terms: Terms, sample_weight):
    loss = terms.loss
    if sample_weight is not None:
        sample_weight = sample_weight.to(loss.dtype)
        loss = loss * sample_weight
    return loss, sample_weight


def _numerator(terms: Terms, loss, reduction: str, acc):
    if reduction == "mean" and terms.scale is not None:
        return (loss * terms.scale).sum(dtype=acc)
    return loss.sum(dtype=acc)


def _denominator(terms: Terms, loss, sample_weight, reduction: str, acc):
    """The denominator of a dividing reduction: a Python number where it is static."""
    if reduction == "mean":
        d = terms.weight
        if sample_weight is not None:
            d = sample_weight if d is None else d * sample_weight
            return torch.broadcast_to(d, loss.shape).sum(dtype=acc)
        return loss.numel() if d is None else d.sum(dtype=acc)
    if reduction == "sum_over_batch_size":
        if terms.count is None:
            return loss.numel()
        # a sample weight that broadcasts the loss (Keras') repeats each element's count
        return torch.broadcast_to(terms.count, loss.shape).sum(dtype=acc)
    if reduction == "batchmean":
        return loss.shape[0] if loss.ndim else 1
    raise ValueError(f"reduction: unknown {reduction!r}")  # pragma: no cover - validated


def reduce(terms: Terms, reduction: str, sample_weight=None, empty: str = "nan", *,
           normalizer=None, group=None):
    """Reduce a loss's ``Terms`` as the weighting contract says (see the JAX twin in
    ``multiloss.backends._jax.reduce``; the two implement the same formulas). Sums of
    float16/bfloat16 losses accumulate in float32; the result has the loss's dtype.

    ``normalizer``: a given denominator replacing the batch's own. ``group``: a
    torch.distributed process group the batch is split over (``_distributed``)."""
    loss, sample_weight = _weighted(terms, sample_weight)
    if reduction == "none":
        return loss
    acc = _acc_dtype(loss.dtype)
    num = _numerator(terms, loss, reduction, acc)
    if reduction == "sum" and group is None:
        return num.to(loss.dtype)
    if reduction == "sum":
        den = None
    elif normalizer is not None:
        den = normalizer.to(device=num.device, dtype=acc)
    else:
        den = _denominator(terms, loss, sample_weight, reduction, acc)
    if group is not None:
        out = _distributed(num, den, normalizer is not None, empty, group)
    else:
        out = _divide(num, den, empty, propagate=reduction == "sum_over_batch_size")
    return out.to(loss.dtype)


def _distributed(num, den, fixed_den: bool, empty: str, group):
    """The reduction over a process group, shaped for DDP (docs/distributed.md §2).

    Value: the whole batch's, N / D with N and D the all-reduced numerator and denominator,
    the same on every rank. Gradient: world_size times this rank's share of the whole batch's
    gradient, world_size * d(num - (N / D) * den) / D (the second term only where ``den``
    has a gradient, a differentiated sample weight), so that DDP's average over the ranks
    is the whole batch's gradient. "sum": value N, gradient world_size * d num.
    """
    import torch.distributed as dist

    world = dist.get_world_size(group)
    if den is None:  # "sum"
        stats = num.detach().reshape(1).clone()
    else:
        den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
        stats = torch.stack([num.detach(), den.detach()])
        if fixed_den:  # a normalizer is already the global denominator
            stats = stats[:1].clone()
    dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
    total = stats[0]
    if den is None:
        share = world * num
        value = total
    else:
        big = den.detach() if fixed_den else stats[1]
        zero = big == 0
        safe = torch.where(zero, torch.ones_like(big), big)
        mean = torch.where(zero, torch.zeros_like(total), total / safe)
        share = world * num / safe if fixed_den else world * (num - mean * den) / safe
        share = torch.where(zero, torch.zeros_like(share), share)
        fill = torch.full_like(total, float("nan") if empty == "nan" else 0.0)
        value = torch.where(zero, fill, mean)
    # the value of ``share - share.detach()`` is exactly 0; its gradient is share's
    return value + (share - share.detach())


def denominator(terms: Terms, reduction: str, sample_weight=None, group=None):
    """The denominator ``reduce`` divides by (all-reduced over ``group``), without gradient,
    in the accumulation dtype (float32 for float16/bfloat16 losses)."""
    with torch.no_grad():
        loss, sample_weight = _weighted(terms, sample_weight)
        acc = _acc_dtype(loss.dtype)
        den = torch.as_tensor(_denominator(terms, loss, sample_weight, reduction, acc),
                              dtype=acc, device=loss.device)
        if group is not None:
            import torch.distributed as dist

            den = den.clone()
            dist.all_reduce(den, op=dist.ReduceOp.SUM, group=group)
        return den


def batch_sum(x, group=None):
    """The sum of ``x`` over the whole batch: all-reduced over ``group`` (None, "world" or a
    ProcessGroup, resolved at call time), else ``x``; without gradient. The twin of
    ``batch_sum`` in backends/_jax.py: a loss function that sets ``wants_batch_sum = True``
    gets it as its keyword ``batch_sum`` (a count of the whole batch: linear_cpo's and
    linear_orpo's chosen tokens), so that every rank normalises as the whole batch does."""
    group = _resolve_group(group)
    if group is None:
        return x.detach()
    import torch.distributed as dist

    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def promote(*tensors):
    """Cast floating tensors to their common dtype (JAX's and NumPy's promotion), so that
    mixed float32/float64 inputs give the same dtype on both backends (torch's kernels differ:
    huber_loss keeps the input's dtype, binary_cross_entropy raises)."""
    first = tensors[0].dtype
    if all(t.dtype == first for t in tensors):  # the common case: nothing to do
        return tensors
    dtype = tensors[0].dtype
    for t in tensors[1:]:  # torch.result_type takes two arguments
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


def one_hot(t, n_classes: int, dtype=torch.int64):
    """F.one_hot's values (indices in [0, n_classes) only) as a comparison with arange: without
    F.one_hot's check of the indices' range, which reads them (.item()), so that torch.func's
    vmap and torch.compile's fullgraph trace it."""
    return (t[..., None] == torch.arange(n_classes, device=t.device)).to(dtype)


def _promote_floats(inputs):
    """Floating inputs of different dtypes (float32 logits with float64 probabilities) cast to
    their common dtype, as on JAX: the loss is then computed in that dtype, not partly in the
    narrower one (torch's kernels would run log_softmax in float32 and promote after)."""
    first = None
    for x in inputs:
        if x.is_floating_point():
            if first is None:
                first = x.dtype
            elif x.dtype != first:
                return promote(*inputs)
    return inputs


def _convert(spec, inputs, opts):
    """torch's implicit conversions of the spec's inputs (``LossSpec.converts``: integer
    targets of mse_loss to the predictions' floating dtype, float class indices of
    multi_margin_loss to int64), done before the loss so that the functions see one dtype
    rule on both backends (the twin of ``_convert`` in backends/_jax.py)."""
    conv = spec.conversions([array_info(x) for x in inputs], opts)
    if conv is None:
        return inputs
    return tuple(x if d is None else x.to(getattr(torch, d)) for x, d in zip(inputs, conv))


def _concrete(x):
    """x's values as NumPy where they are in host memory (a CPU tensor); None elsewhere: a
    meta tensor has none (like a JAX tracer, only its shape and dtype are checked), and reading
    a tensor on an accelerator would wait for the device and copy on every call (torch's own
    losses do not either: an index out of range there meets torch's device-side check)."""
    if x.device.type != "cpu":
        return None
    return _read_cpu(x)


def _numpy(x):
    x = x.detach()
    if x.dtype == torch.bfloat16:  # NumPy has no bfloat16
        x = x.float()
    return x.numpy()


def _read_cpu(x):
    try:
        return _numpy(x)
    except RuntimeError:  # inside a torch.func transform (the hot path pays nothing for this)
        x = _unwrapped(x)
        if x is None:
            return None
        with torch._C._DisableFuncTorch():  # else .numpy() wraps its tensor again
            return _numpy(x)


_functorch = torch._C._functorch


def _unwrapped(x):
    """The plain tensor under torch.func.grad's (or jacrev's, jvp's, functionalize's)
    wrappers, whose values are the call's: those are checked. None under vmap (a batched
    tensor holds every sample's values, not the call's: like a JAX tracer, only its shape and
    dtype are checked) and for a fake or meta tensor (torch.compile's, torch.export's)."""
    try:
        while _functorch.is_functorch_wrapped_tensor(x):
            if _functorch.is_batchedtensor(x):
                return None
            x = _functorch.get_unwrapped(x)
    except RuntimeError:  # pragma: no cover - a wrapper torch does not let us unwrap
        return None
    if type(x) is not torch.Tensor or x.device.type != "cpu":
        return None  # a FakeTensor or another subclass without host values
    return x


def _reader(x):
    """How the hot path reads the values of tensors of x's device (see InputChecks.hot)."""
    return _read_cpu if x.device.type == "cpu" else None


_GLOBAL_HOOKS = tuple(getattr(torch.nn.modules.module, f"_global_{k}_hooks") for k in (
    "forward", "forward_pre", "backward", "backward_pre"))  # dicts, updated in place
_tracing = torch._C._get_tracing_state


def _hooked(m) -> bool:
    """Whether torch.nn.Module.__call__ has more to do than call ``forward``: hooks (the
    module's or global ones), tracing, ``module.compile()``."""
    return bool(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        or any(_GLOBAL_HOOKS) or m._compiled_call_impl is not None or _tracing()
    )


def _check_group(group):
    if group is None or group == "world":
        return group
    import torch.distributed as dist

    if not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise TypeError(
            f"process_group: expected None, 'world' or a torch.distributed ProcessGroup, got "
            f"{type(group).__name__}"
        )
    return group


def _resolve_group(group):
    """The process group to reduce over (None: this process alone)."""
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "process_group: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first, or leave process_group=None"
        )
    return dist.group.WORLD if group == "world" else group


def _align(spec, sample_weight, terms):
    """The sample weight reshaped as the spec's ``align_sample_weight`` says (Keras' rank
    rule), else as given."""
    if sample_weight is None or spec.align_sample_weight is None:
        return sample_weight
    return sample_weight.reshape(
        spec.align_sample_weight(tuple(sample_weight.shape), tuple(terms.loss.shape)))


def _check_normalizer(normalizer, reduction, device):
    if reduction not in DIVIDING:
        raise ValueError(
            f"normalizer: replaces the denominator of reduction 'mean', "
            f"'sum_over_batch_size' or 'batchmean'; reduction={reduction!r} has none"
        )
    if not isinstance(normalizer, torch.Tensor):
        if type(normalizer).__module__.startswith("jax"):
            raise TypeError("normalizer: expected a torch tensor or a number, got a JAX array")
        try:
            normalizer = torch.as_tensor(np.asarray(normalizer), device=device)
        except Exception as e:  # noqa: BLE001
            raise TypeError(
                f"normalizer: expected a number, got {type(normalizer).__name__}"
            ) from e
    if normalizer.dim() != 0:
        raise ValueError(f"normalizer: expected a scalar, got shape {tuple(normalizer.shape)}")
    if normalizer.is_complex() or normalizer.dtype == torch.bool:
        raise TypeError(f"normalizer: expected a real number, got dtype {normalizer.dtype}")
    return normalizer.detach()


def _option_tensor(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    # a copy: a buffer must not share memory with the caller's array (load_state_dict writes it)
    return torch.tensor(np.array(value))


_compiling = torch.compiler.is_compiling

#: InputChecks by key (``_checks_key``), for the value-check op of compiled graphs: a graph
#: names its checks by this key, so a graph cached by inductor in another process finds them
#: (made again from the key) as well as the process that traced it.
_GRAPH_CHECKS: dict = {}


def _checks_key(checks) -> str:
    scalars = tuple(sorted((k, v) for k, v in checks.options.items()
                           if k in {o.name for o in checks.spec.all_options}
                           and not hasattr(v, "shape")))
    return repr((checks.spec.name, scalars))


def _graph_checks(key: str):
    checks = _GRAPH_CHECKS.get(key)
    if checks is None:
        import ast

        from .._registry import resolve

        name, scalars = ast.literal_eval(key)
        spec = resolve(name)
        checks = _GRAPH_CHECKS[key] = InputChecks(spec, spec.bind(dict(scalars)))
    return checks


@torch.library.custom_op("multiloss::check_values", mutates_args=())
def _check_values_op(inputs: list[torch.Tensor], key: str,
                     reads: list[int]) -> list[torch.Tensor]:
    """A loss's value checks as an op of a torch.compile graph: it runs them on the call's
    tensors (raising multiloss' message: the eager call's) and returns copies of the checked
    inputs, which the loss then uses, so that the kernels that index with them run after the
    check (an in-graph assertion would race the kernel's own bounds check)."""
    checks = _graph_checks(key)
    infos, _ = checks.signature(inputs, None)
    checks.values(inputs, infos, tuple((i, checks.names[i]) for i in reads), _concrete)
    return [inputs[i].clone() for i in reads]


@_check_values_op.register_fake
def _check_values_fake(inputs, key, reads):
    return [torch.empty_like(inputs[i]) for i in reads]


def _check_values_setup(ctx, inputs, output):
    ctx.n, ctx.reads = len(inputs[0]), inputs[2]


def _check_values_backward(ctx, grads):
    out = [None] * ctx.n
    for i, g in zip(ctx.reads, grads):
        out[i] = g
    return out, None, None


_check_values_op.register_autograd(_check_values_backward, setup_context=_check_values_setup)


def _checked_in_graph(checks, inputs, reads):
    """The inputs with those of ``reads`` replaced by the value-check op's copies (under
    torch.compile, on CPU: values on an accelerator are not read, as in an eager call)."""
    if inputs[0].device.type != "cpu":
        return inputs
    key = _checks_key(checks)
    _GRAPH_CHECKS.setdefault(key, checks)
    idx = [i for i, _ in reads]
    copies = _check_values_op(list(inputs), key, idx)
    out = list(inputs)
    for i, c in zip(idx, copies):
        out[i] = c
    return tuple(out)


def _autocast_free(spec) -> bool:
    """Whether autocast leaves the loss as it is: a loss defined by a library written on JAX
    (optax, Keras 3: ``reference.jax_reference``), which no torch autocast reaches, computes
    inside torch.autocast what it computes outside (its matmuls are not lowered, its sums not
    raised). The others follow the autocast policy of the torch ops they are made of, which
    are their reference's (tests/test_works_with_torch.py asks torch for it)."""
    return getattr(spec.reference, "jax_reference", None) is not None


def _autocast_off(call):
    """``call`` with autocast disabled where it is enabled for the inputs' device."""

    def run(inputs):
        device = inputs[0].device.type if inputs else "cpu"
        if torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return call(inputs)
        return call(inputs)

    return run


class Loss(torch.nn.Module):
    """A multiloss loss on torch: a ``torch.nn.Module`` whose array options (``weight``,
    ``pos_weight``) are buffers, so ``.to(device)`` and ``state_dict`` carry them.

    ``loss(*inputs, sample_weight=None)`` takes torch tensors (or NumPy arrays) in the spec's
    positional order (torch's; Keras' ``(y_true, y_pred)`` for ``keras.*``), or as keywords of
    the inputs' names, and returns a tensor, differentiable by autograd.
    """

    backend = NAME

    def __init__(self, spec, options: dict):
        super().__init__()
        self.spec = spec
        self.options = dict(options)
        self.__doc__ = spec.doc()
        self._fn = spec.implementation(NAME)
        self._array_names = tuple(o.name for o in spec.options if o.kind == "array")
        self._static = {o.name: options[o.name] for o in spec.options if o.kind != "array"}
        if getattr(self._fn, "wants_batch_sum", False):  # a count of the whole batch
            self._static["batch_sum"] = functools.partial(
                batch_sum, group=options.get("process_group"))
        for name in self._array_names:
            v = options[name]
            self.register_buffer(name, None if v is None else _option_tensor(v))
        self._reduction = options["reduction"]
        if options.get("axis_name") is not None:
            raise ValueError(
                "axis_name: a JAX option (shard_map, pmap), for the jax backend; on torch use "
                "process_group=... with torch.distributed (docs/distributed.md)"
            )
        self._group = _check_group(options.get("process_group"))
        self._native = (options["empty_reduction"] == "nan" and self._reduction in _NATIVE
                        and self._group is None)
        self._empty = options["empty_reduction"]
        self._checks = InputChecks(spec, self.options)
        self._plans: dict = {}  # (shape, dtype, device, type) of each input -> _plan
        self._key = signature_key(len(spec.inputs), "device", self._checks.required)

    def _device(self, inputs):
        for x in inputs:
            if isinstance(x, torch.Tensor):
                return x.device
        for name in self._array_names:
            b = getattr(self, name)
            if b is not None:
                return b.device
        return None

    def _as_tensor(self, x, name, device):
        if isinstance(x, torch.Tensor):
            return x
        if type(x).__module__.startswith("jax"):
            raise TypeError(
                f"{name}: expected a torch tensor or NumPy array, got a JAX array; use the jax "
                f"backend or convert with numpy.asarray"
            )
        try:
            a = np.asarray(x)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}") from e
        if a.dtype == object:
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if not a.dtype.isnative:  # a big-endian array: torch has no such dtype
            a = a.astype(a.dtype.newbyteorder("="))
        if not a.flags.writeable or any(st < 0 for st in a.strides):
            # torch.as_tensor refuses negative strides (x[::-1]) and warns on read-only
            # arrays (np.broadcast_to): copy those
            a = np.array(a)
        try:
            return torch.as_tensor(a, device=device)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}") from e

    def _check_devices(self, inputs, sample_weight):
        device = inputs[0].device
        if all(x.device == device for x in inputs) and (
            sample_weight is None or sample_weight.device == device
        ):
            return
        names = self._checks.names
        for x, name in (*zip(inputs, names), (sample_weight, "sample_weight")):
            if x is not None and x.device != device:
                raise ValueError(
                    f"{name}: expected a tensor on {device} (the device of {names[0]}), got "
                    f"one on {x.device}; move it with .to({str(device)!r})"
                )

    def _prepare(self, inputs, sample_weight, traced=False):
        checks = self._checks
        inputs = checks.trim(inputs)
        checks.count(inputs)
        if not all(isinstance(x, torch.Tensor) for x in inputs) or (
            sample_weight is not None and not isinstance(sample_weight, torch.Tensor)
        ):
            device = self._device(inputs)
            inputs = tuple(self._as_tensor(x, n, device) for x, n in zip(inputs, checks.names))
            if sample_weight is not None:
                sample_weight = self._as_tensor(sample_weight, "sample_weight", device)
        if inputs:
            self._check_devices(inputs, sample_weight)
        if traced:  # torch.compile traces this: the shape checks run at trace time
            infos, reads = checks.check_shapes(inputs, sample_weight)
            if reads:
                inputs = _checked_in_graph(checks, inputs, reads)
        else:
            checks(inputs, sample_weight, _concrete)
        if self.spec.converts:
            inputs = _convert(self.spec, inputs, self.options)
        return _promote_floats(inputs), sample_weight

    def __call__(self, *inputs, **kwargs):
        # the hot path: tensors of a signature seen before (shape, dtype, device, type), no
        # sample weight or normalizer, nothing to promote, no hooks: the value checks where
        # the kernel does not make them itself, the function; nothing else (see _plan).
        # torch.nn.Module.__call__ otherwise (hooks, tracing, module.compile()).
        if not kwargs and not _compiling() and not _hooked(self):
            try:
                plan = self._plans.get(self._key(inputs))
            except (AttributeError, TypeError, ValueError):  # not tensors, or a wrong number
                plan = None
            if plan is not None:
                return plan(inputs)
        return super().__call__(*inputs, **kwargs)

    def forward(self, *inputs, sample_weight=None, normalizer=None, **named):
        if named:  # inputs by keyword: loss(input=x, target=t), loss(y_true=..., y_pred=...)
            normalizer = num_items(named, normalizer)  # transformers' num_items_in_batch
            if named:
                inputs = self._checks.positional(inputs, named)
        if _compiling():  # torch.compile traces the checked path: no plan is made or read
            return self._forward(inputs, sample_weight, normalizer, traced=True)
        if sample_weight is None and normalizer is None:
            try:
                plan = self._plans.get(self._key(inputs))
            except (AttributeError, TypeError, ValueError):
                plan = None
            if plan is not None:
                return plan(inputs)
        return self._forward(inputs, sample_weight, normalizer)

    def _plan(self, inputs):
        """The hot path of one signature, cached after its first (checked) call; None where
        the call needs more than the function: promotion of mixed float dtypes, a process
        group. On CPU a loss whose torch function checks the values itself (its kernel
        rejects a class index out of range: ``kernel_checks_values``) skips multiloss' own
        pass over them; if the kernel raises, multiloss' value check runs then, to raise its
        own message in place of the kernel's."""
        if self._group is not None or any(x.device != inputs[0].device for x in inputs):
            return None
        checks = self._checks
        infos, reads = checks.signature(inputs, None)
        kernel_checks = getattr(self._fn, "kernel_checks_values", False)
        if callable(kernel_checks):
            kernel_checks = kernel_checks(self._static)
        kernel = reads if reads and kernel_checks and inputs[0].device.type == "cpu" else ()
        check = None if kernel else checks.hot(inputs, _reader, _concrete)
        fn, static, buffers, names = self._fn, self._static, self._buffers, self._array_names
        reduction, empty = self._reduction, self._empty
        native = reduction if self._native else None

        def general(inputs):
            out = fn(*inputs, reduction=native, **static, **{n: buffers[n] for n in names})
            if isinstance(out, Terms):  # not reduced natively (a class-weighted "mean")
                return reduce(out, reduction, None, empty)
            return out

        # a function may call its op directly for this signature (``direct``: see
        # losses/classification/_torch.py), with ``general`` for what it does not cover
        direct = getattr(fn, "direct", None)
        call = general if direct is None else (
            direct(inputs, native, static, buffers, general) or general)
        if _autocast_free(self.spec):
            call = _autocast_off(call)

        def plan(inputs):
            if check is not None:
                check(inputs)
            try:
                return call(inputs)
            except (IndexError, RuntimeError):
                if kernel:
                    checks.values(inputs, infos, kernel, _concrete)
                raise

        return plan

    def _apply(self, *args, **kwargs):
        # .to(device) / .double() move the buffers and change the inputs' signature: no plan
        # made before holds
        self._plans.clear()
        return super()._apply(*args, **kwargs)

    def _forward(self, inputs, sample_weight, normalizer, traced=False):
        fresh = (not traced and sample_weight is None and normalizer is None
                 and len(self._plans) < 64 and all(isinstance(x, torch.Tensor) for x in inputs))
        raw = inputs
        inputs, sample_weight = self._prepare(inputs, sample_weight, traced)
        if fresh and raw and inputs is raw:  # checked, and nothing was converted or promoted
            plan = self._plan(raw)
            if plan is not None:
                self._plans[self._key(raw)] = plan
        if normalizer is not None:
            normalizer = _check_normalizer(normalizer, self._reduction, inputs[0].device)
        arrays = {name: getattr(self, name) for name in self._array_names}
        native = self._native and sample_weight is None and normalizer is None

        def call(inputs):
            return self._fn(*inputs, reduction=self._reduction if native else None,
                            **self._static, **arrays)

        out = (_autocast_off(call) if _autocast_free(self.spec) else call)(inputs)
        if isinstance(out, Terms):
            sample_weight = _align(self.spec, sample_weight, out)
            return reduce(out, self._reduction, sample_weight, self._empty,
                          normalizer=normalizer, group=_resolve_group(self._group))
        return out

    def denominator(self, *inputs, sample_weight=None, **named):
        """What this loss's reduction divides by on these inputs, without gradient: the
        summed ``sample_weight * d`` for "mean", the number of elements that count for
        "sum_over_batch_size", the batch size for "batchmean"; all-reduced over
        ``process_group`` when it is set (one all-reduce). float32 for float16/bfloat16
        inputs (so counts stay exact).

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
        arrays = {name: getattr(self, name) for name in self._array_names}
        with torch.no_grad():
            terms = self._fn(*inputs, reduction=None, **self._static, **arrays)
        sample_weight = _align(self.spec, sample_weight, terms)
        return denominator(terms, self._reduction, sample_weight, _resolve_group(self._group))

    # pickle (multiprocessing, DataLoader workers, torch.save of the module): the
    # per-signature caches (plans closing over this module's buffers, the checks, the key
    # function) and the loss function are left out and made again when unpickled, so a copy
    # (copy.deepcopy too) computes with its own buffers
    _UNPICKLED = ("_plans", "_key", "_fn", "_checks")

    def __getstate__(self):
        return {k: v for k, v in super().__getstate__().items() if k not in self._UNPICKLED}

    def __setstate__(self, state):
        super().__setstate__(state)
        self._fn = self.spec.implementation(NAME)
        self._checks = InputChecks(self.spec, self.options)
        self._plans = {}
        self._key = signature_key(len(self.spec.inputs), "device", self._checks.required)

    def extra_repr(self):
        return ", ".join(
            f"{k}={'<array>' if hasattr(v, 'shape') else repr(v)}"
            for k, v in self.options.items()
            if k not in self._array_names
            and not (k in ("axis_name", "process_group") and v is None)
        )


def make(spec, options):
    return Loss(spec, options)
