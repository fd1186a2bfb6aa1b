"""The parity harness: run a loss's sample inputs through both backends and compare values and
gradients with the independent reference (``torch.nn.functional`` for torch.nn's losses).

    >>> from multiloss import testing
    >>> results = testing.check_loss("cross_entropy", "float64")
    >>> assert all(r.ok for r in results)

Every differentiable input (floating targets included) and the sample weight are
differentiated. A ``"none"`` reduction is differentiated along a fixed random cotangent.

The reference of the contract's own reductions (``sample_weight``, ``"sum_over_batch_size"``,
``empty_reduction="zero"``) is built here from torch's ``reduction="none"`` output and the
spec's documented normaliser, with the formulas of docs/weighting.md, independently of the
backends' ``reduce``.

Errors are relative to the scale of the reference: ``max |ours - ref| / max(max |ref|, floor)``
with ``floor`` 0 in float64 and 1 in float32 (see ``SCALE_FLOOR``); non-finite reference
entries must be matched exactly (NaN by NaN, inf by the same inf).
"""

from __future__ import annotations

import time
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np

from ._registry import LossSpec, Sample, resolve, specs

#: Largest accepted error per dtype, relative to the reference's scale (see the module doc).
#: float64: torch and XLA order floating-point operations differently, so bit equality is not
#: expected; 1e-12 holds for every case. float32: 64 ulps (float32 eps is 1.19e-7), a bound
#: on the accumulated rounding of the sums and log-sum-exps in these losses.
TOLERANCE = {"float64": 1e-12, "float32": 64 * float(np.finfo(np.float32).eps)}

#: The smallest scale an error is taken relative to. float64: none (purely relative).
#: float32: 1, the magnitude of the sample inputs (logits, probabilities, regression values
#: are O(1)), because in float32 a small result computed from O(1) terms carries their
#: rounding: cross-entropy's gradient at the target is p - 1, and with p = 0.9985 both torch
#: and XLA get it to about 6e-8 absolute, i.e. 4e-5 relative (torch's own float32 tests use
#: an absolute tolerance of 1e-5 for the same reason).
SCALE_FLOOR = {"float64": 0.0, "float32": 1.0}


@dataclass
class CaseResult:
    loss: str
    case: str
    dtype: str
    value_error: float
    grad_error: float
    jax_seconds: float
    torch_seconds: float
    errors: dict = field(default_factory=dict)  # "<backend>/<what>" -> error
    message: str = ""
    #: why the backends' results were not compared: the reference library is not installed
    #: (e.g. "keras"); the backends still ran, and ``message`` holds their errors
    missing: str = ""

    @property
    def ok(self) -> bool:
        tol = TOLERANCE[self.dtype]
        return not self.message and self.value_error <= tol and self.grad_error <= tol


def enable_x64() -> None:
    """float64 parity needs JAX's 64-bit mode (a global JAX setting)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def rel_error(ours, ref, floor: float = 0.0) -> float:
    """Error of ``ours`` against ``ref``, relative to the reference's scale, ``max |ref|``, or
    to ``floor`` where that is larger (see the module doc)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb):
        return float("inf")
    an, bn = a[~fb], b[~fb]
    nan = np.isnan(bn)
    if not (np.array_equal(np.isnan(an), nan) and np.array_equal(an[~nan], bn[~nan])):
        return float("inf")
    if not fb.any():
        return 0.0
    diff = np.max(np.abs(a[fb] - b[fb]))
    scale = max(np.max(np.abs(b[fb])), floor)
    return float(diff / scale) if scale > 0 else float(diff)


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def _diff_positions(spec: LossSpec, sample: Sample) -> list[int]:
    return [
        i
        for i, (inp, x) in enumerate(zip(spec.inputs, sample.inputs))
        if inp.differentiable and np.issubdtype(np.asarray(x).dtype, np.floating)
    ]


def _cotangent(sample: Sample, shape, dtype):
    if shape == ():
        return np.ones((), dtype)
    rng = np.random.default_rng(_seed(sample.id))
    return rng.uniform(0.5, 1.5, size=shape).astype(dtype)


def _sw_differentiable(spec: LossSpec, sample: Sample) -> bool:
    """Whether the sample weight's gradient is compared. Not where it is zero by construction
    and only rounding is left, which a relative error cannot judge: in a "mean" over one
    element that counts, its weight cancels (value = s l / (s d))."""
    sw = sample.sample_weight
    if sw is None or not np.issubdtype(np.asarray(sw).dtype, np.floating):
        return False
    opts = {**{o.name: o.default for o in spec.all_options}, **sample.options}
    if opts["reduction"] == "mean":
        d = spec.normalizer(sample.inputs, opts)[0]
        d = np.asarray(d, np.float64)
        w = np.asarray(sw, np.float64).reshape((1,) * (d.ndim - np.ndim(sw)) + np.shape(sw))
        # the denominator mass each weight entry carries (summed over its broadcast axes)
        axes = tuple(i for i in range(d.ndim) if w.shape[i] == 1 and d.shape[i] != 1)
        return np.count_nonzero(w * d.sum(axis=axes, keepdims=True)) > 1
    return True


# ---------------------------------------------------------------------------------------------
# runners: each returns (value, [grad per differentiable input (+ sample weight)], seconds)


#: run_jax's compiled functions by what they close over (``_jit_key``): a sample that differs
#: from an earlier one only in the values of its differentiated inputs (the non-finite sweep
#: puts a NaN into one input at a time) reuses the compilation; bounded, oldest dropped
_JITTED: dict = {}
_JITTED_MAX = 16


def _array_key(a):
    a = np.asarray(a)
    return (a.shape, a.dtype.str, a.tobytes())


def _jit_key(spec, sample, pos, sw_diff):
    """Everything the compiled function depends on besides the differentiated inputs' values
    (their shapes and dtypes), or None where an option cannot be keyed by value."""
    import jax

    opts = []
    for k, v in sorted(sample.options.items()):
        if isinstance(v, (np.ndarray, np.generic)):
            opts.append((k, _array_key(v)))
        elif v is None or isinstance(v, (bool, int, float, str)):
            opts.append((k, type(v).__name__, v))
        elif isinstance(v, (tuple, list)) and all(
                isinstance(e, (bool, int, float, str)) for e in v):
            opts.append((k, type(v).__name__, tuple(v)))
        else:  # a callable, an array of another library, ...: not cached
            return None
    inputs = tuple((np.asarray(x).shape, np.asarray(x).dtype.str) if i in pos else _array_key(x)
                   for i, x in enumerate(sample.inputs))
    sw = sample.sample_weight
    sw = None if sw is None else (
        (np.asarray(sw).shape, np.asarray(sw).dtype.str) if sw_diff else _array_key(sw))
    return (spec.name, sample.id, tuple(opts), tuple(pos), inputs, sw_diff, sw,
            bool(jax.config.jax_enable_x64))


#: (value, gradients, dtype) of samples computed ahead by ``prepare_jax``, by ``_result_key``;
#: each taken (removed) by the ``run_jax`` of its sample
_PREPARED: dict = {}


def _primals(spec, sample):
    pos = _diff_positions(spec, sample)
    sw_diff = _sw_differentiable(spec, sample)
    sw = sample.sample_weight
    return pos, sw_diff, [sample.inputs[i] for i in pos] + ([sw] if sw_diff else [])


def _result_key(spec, sample):
    """``_jit_key`` and the differentiated inputs' values: what the result depends on (None
    where the options cannot be keyed)."""
    pos, sw_diff, primals = _primals(spec, sample)
    key = _jit_key(spec, sample, pos, sw_diff)
    return None if key is None else (key, tuple(_array_key(p) for p in primals))


def prepare_jax(spec: LossSpec, samples, batch: int = 16) -> int:
    """Compute the JAX (value, gradients) of many samples of one loss ahead, ``batch`` samples
    to one XLA program (each sample's own jitted loss, its own vjp and cotangent, side by side:
    the same computations as ``run_jax``'s, one compilation instead of ``batch``, which on CPU
    is most of the cost of a small sample: measured 2x faster on 64 samples). ``run_jax`` then
    takes a prepared sample's result instead of compiling it. A batch that fails to trace or
    compile is left to ``run_jax``, sample by sample (which reports the error of the one
    that fails). Returns the number of samples prepared."""

    todo = []
    for sample in samples:
        key = _result_key(spec, sample)
        if key is not None and key not in _PREPARED:
            todo.append((sample, key))
    done = 0
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        fns, primals = [], []
        for sample, _ in part:
            pos, _, prim = _primals(spec, sample)
            fns.append(_value_and_grads(spec, sample, pos))
            primals.append(prim)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                outs = jit_together(fns, primals)
        except Exception:  # noqa: BLE001 - run_jax runs each alone and reports its error
            continue
        for (_, key), (value, grads) in zip(part, outs):
            _PREPARED[key] = (np.asarray(value), [np.asarray(g) for g in grads],
                              str(value.dtype))
        done += len(part)
    return done


def run_jax(spec: LossSpec, sample: Sample):
    import jax

    if _PREPARED:
        ready = _PREPARED.pop(_result_key(spec, sample), None)
        if ready is not None:  # computed by prepare_jax (no time of its own)
            return ready[0], ready[1], float("nan"), ready[2]
    pos, sw_diff, primals = _primals(spec, sample)
    key = _jit_key(spec, sample, pos, sw_diff)
    value_and_grads = _JITTED.get(key) if key is not None else None
    if value_and_grads is None:
        value_and_grads = _compile_jax(spec, sample, pos)
        if key is not None:
            if len(_JITTED) >= _JITTED_MAX:
                _JITTED.pop(next(iter(_JITTED)))
            _JITTED[key] = value_and_grads
    value, grads = value_and_grads(primals)
    t0 = time.perf_counter()
    jax.block_until_ready(value_and_grads(primals))
    seconds = time.perf_counter() - t0
    return np.asarray(value), [np.asarray(g) for g in grads], seconds, str(value.dtype)


def _compile_jax(spec: LossSpec, sample: Sample, pos):
    """The jitted (value, gradients) of ``sample``'s loss as a function of its differentiated
    inputs (and sample weight); the rest of the sample closed over."""
    import jax

    return jax.jit(_value_and_grads(spec, sample, pos))


def jit_together(fns, primals):
    """``[f(p) for f, p in zip(fns, primals)]`` as one jitted XLA program: many small cases
    for the price of one compilation (``prepare_jax``, tests/test_from_torch.py)."""
    import jax

    return jax.jit(lambda ps: [f(p) for f, p in zip(fns, ps)])(primals)


def _value_and_grads(spec: LossSpec, sample: Sample, pos, loss=None):
    """``_compile_jax``'s function, not jitted; ``loss``: the JAX loss to differentiate
    (default: the sample's ``multiloss.get``)."""
    import jax

    import multiloss

    if loss is None:
        loss = multiloss.get(spec.name, backend="jax", **sample.options)
    sw = sample.sample_weight

    def f(*diff):
        inputs = list(sample.inputs)
        for i, v in zip(pos, diff):
            inputs[i] = v
        w = diff[len(pos)] if len(diff) > len(pos) else sw
        return loss(*inputs, sample_weight=w)

    # value and gradients in one compiled function (one trace and one compilation per case;
    # the cotangent, a function of the output's shape, is made while tracing)
    def value_and_grads(primals):
        out, vjp = jax.vjp(f, *primals)
        ct = _cotangent(sample, out.shape, out.dtype)
        return out, (vjp(ct) if primals else ())

    return value_and_grads


def _torch_inputs(torch, spec, sample):
    pos = _diff_positions(spec, sample)
    tensors = []
    for i, x in enumerate(sample.inputs):
        t = torch.from_numpy(np.array(x))
        if i in pos:
            t.requires_grad_(True)
        tensors.append(t)
    sw = None
    if sample.sample_weight is not None:
        sw = torch.from_numpy(np.array(sample.sample_weight))
        if _sw_differentiable(spec, sample):
            sw.requires_grad_(True)
    wrt = [tensors[i] for i in pos] + ([sw] if _sw_differentiable(spec, sample) else [])
    return tensors, sw, wrt


def _torch_grads(torch, out, wrt, sample):
    if not wrt:
        return []
    ct = torch.from_numpy(_cotangent(sample, tuple(out.shape), np.dtype(str(out.dtype)[6:])))
    grads = torch.autograd.grad(out, wrt, grad_outputs=ct, allow_unused=True)
    return [
        np.zeros(w.shape) if g is None else g.detach().numpy() for g, w in zip(grads, wrt)
    ]


def run_torch(spec: LossSpec, sample: Sample):
    import torch

    import multiloss

    loss = multiloss.get(spec.name, backend="torch", **sample.options)
    tensors, sw, wrt = _torch_inputs(torch, spec, sample)
    out = loss(*tensors, sample_weight=sw)
    grads = _torch_grads(torch, out, wrt, sample)
    t0 = time.perf_counter()
    _torch_grads(torch, loss(*tensors, sample_weight=sw), wrt, sample)
    seconds = time.perf_counter() - t0
    return out.detach().numpy(), grads, seconds, str(out.dtype).replace("torch.", "")


def _reference_options(torch, spec, sample, dtype):
    bound = spec.bind(sample.options)
    for o in spec.options:
        if o.kind == "array" and bound[o.name] is not None:
            bound[o.name] = torch.from_numpy(np.array(bound[o.name])).to(dtype)
    return bound


def reference_value(torch, spec: LossSpec, sample: Sample, tensors, sw):
    """The reference: the defining library's function, reduced natively where it has the
    reduction, else by the documented contract formulas from its ``"none"`` output."""
    opts = _reference_options(torch, spec, sample, tensors[0].dtype)
    red, empty = opts["reduction"], opts["empty_reduction"]
    native = ("none", "sum", "mean") + (("batchmean",) if "batchmean" in spec.reductions else ())
    if sw is None and empty == "nan" and red in native and not sample.contract_reference:
        return spec.reference(torch, tensors, opts, red)
    loss = spec.reference(torch, tensors, opts, "none")
    d_np, c_np, *r_np = spec.normalizer(sample.inputs, opts | {
        o.name: sample.options.get(o.name) for o in spec.options if o.kind == "array"
    })
    d = torch.from_numpy(np.array(d_np, dtype=np.float64)).to(loss.dtype)
    c = torch.from_numpy(np.array(c_np, dtype=np.float64)).to(loss.dtype)
    s = torch.ones((), dtype=loss.dtype) if sw is None else sw.to(loss.dtype)
    if red == "none":
        return loss * s
    num = (loss * s).sum()
    if red == "sum":
        return num
    if red == "mean" and r_np:  # the mean's per-element scale (ctc: 1 / target length)
        num = (loss * s * torch.from_numpy(np.array(r_np[0], np.float64)).to(loss.dtype)).sum()
    den = {
        "mean": lambda: (d * s).sum(),
        # a sample weight that broadcasts the loss (keras.*) repeats each element's count
        "sum_over_batch_size": lambda: torch.broadcast_to(c, (loss * s).shape).sum(),
        "batchmean": lambda: torch.tensor(float(loss.shape[0] if loss.ndim else 1), dtype=loss.dtype),
    }[red]()
    safe = torch.where(den == 0, torch.ones_like(den), den)
    fill = torch.full_like(num, float("nan") if empty == "nan" else 0.0)
    if red == "sum_over_batch_size":  # NaN or inf among what does not count propagates
        fill = fill + num * 0
    return torch.where(den == 0, fill, num / safe)


def run_reference(spec: LossSpec, sample: Sample):
    import torch

    tensors, sw, wrt = _torch_inputs(torch, spec, sample)
    out = reference_value(torch, spec, sample, tensors, sw)
    return out.detach().numpy(), _torch_grads(torch, out, wrt, sample)


# ---------------------------------------------------------------------------------------------


#: The backends ``compare`` runs, and the function that runs each.
RUNNERS = {"jax": run_jax, "torch": run_torch}


def missing_module(error: ImportError) -> str:
    """The top-level package an ImportError says is missing (its ``name``), else the text."""
    name = getattr(error, "name", None)
    return name.split(".")[0] if name else str(error)


def compare(spec: LossSpec, sample: Sample, dtype: str,
            backends: tuple = ("jax", "torch")) -> CaseResult:
    """The ``backends`` against the reference on one sample. Where the reference library is
    not installed (an ImportError: keras, kornia, torch itself in a JAX-only install), the
    backends still run, and the result says what is missing (``CaseResult.missing``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        missing = ""
        try:
            ref_value, ref_grads = run_reference(spec, sample)
        except ImportError as e:
            missing = missing_module(e)
        errors, message = {}, ""
        seconds = {}
        for backend in backends:
            try:
                value, grads, secs, out_dtype = RUNNERS[backend](spec, sample)
            except Exception as e:  # noqa: BLE001 - reported as a failed case
                message += f"{backend}: {type(e).__name__}: {e}; "
                seconds[backend] = float("nan")
                continue
            seconds[backend] = secs
            if missing:
                continue
            if out_dtype != str(ref_value.dtype):
                message += f"{backend}: result dtype {out_dtype}, reference {ref_value.dtype}; "
            floor = SCALE_FLOOR[dtype]
            errors[f"{backend}/value"] = rel_error(value, ref_value, floor)
            names = [spec.inputs[i].name for i in _diff_positions(spec, sample)]
            if _sw_differentiable(spec, sample):
                names.append("sample_weight")
            for name, g, rg in zip(names, grads, ref_grads, strict=True):
                errors[f"{backend}/d_{name}"] = rel_error(g, rg, floor)
    value_err = max((v for k, v in errors.items() if k.endswith("/value")), default=0.0)
    grad_err = max((v for k, v in errors.items() if "/d_" in k), default=0.0)
    return CaseResult(spec.name, sample.id, dtype, value_err, grad_err,
                      seconds.get("jax", float("nan")), seconds.get("torch", float("nan")),
                      errors, message.strip(), missing)


def samples_for(spec: LossSpec, dtype: str, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed + _seed(spec.name))
    return list(spec.samples(rng, np.dtype(dtype)))


#: Words in a sample's id that mark an edge case (empty batches, infinities, NaN, extreme
#: logits, ties, zeros, ignored targets).
EDGE_WORDS = ("empty", "inf", "nan", "1e4", "extreme", "tie", "zero", "exact", "saturat",
              "ignore")


def is_edge(sample: Sample) -> bool:
    return any(w in sample.id.lower() for w in EDGE_WORDS)


def quick_samples(samples: list[Sample]) -> list[Sample]:
    """The representative cases of a grid that ``multiloss parity`` runs by default (``--full``
    runs all): the grid's first case (the loss's defaults) and one edge case (the middle of
    the grid's edge cases; a grid without one: its middle case), each once. Two cases per loss
    and dtype keep the default report near a minute on 2 cores (each case is a compilation)."""
    if len(samples) <= 2:
        return list(samples)
    edges = [s for s in samples if is_edge(s)] or samples
    picked = [samples[0], edges[len(edges) // 2]]
    out = []
    for s in picked:
        if all(s.id != o.id for o in out):
            out.append(s)
    return out


def check_loss(name: str, dtype: str = "float64", seed: int = 0) -> list[CaseResult]:
    """Run every sample of loss ``name`` in ``dtype``; one result per sample."""
    if dtype == "float64":
        enable_x64()
    spec = resolve(name)
    return [compare(spec, s, dtype) for s in samples_for(spec, dtype, seed)]


def all_specs() -> list[LossSpec]:
    return list(specs())


# ---------------------------------------------------------------------------------------------
# Batches: split a sample into micro-batches or shards, tile it into a larger batch
# (tests of data-parallel reductions and gradient accumulation, docs/distributed.md).

#: ``batch_layout``'s marker for ctc's concatenated 1-D targets (split by target length).
CONCAT = "concat"


def _loss_shape(spec: LossSpec, sample: Sample) -> tuple:
    import warnings

    from ._registry import array_info

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        opts = spec.bind(sample.options)
    infos = [array_info(np.asarray(x)) for x in sample.inputs]
    return tuple(spec.call_check(infos, None, opts))


def batch_layout(spec: LossSpec, sample: Sample):
    """How a sample's rows (the first axis of its unreduced loss) lie in its arrays: the batch
    axis of each input (None: shared by every row, e.g. arcface's class matrix), ``CONCAT``
    for ctc's concatenated targets, and the sample weight's batch axis (None: broadcast to
    every row); or None where the unreduced loss has no batch axis (an unbatched sample), or
    where an array option spans the batch (mse's ``weight`` of the input's shape).

    The batched inputs are found with the spec's shape check: the largest set of inputs
    whose first axis has the batch's length and which, lengthened together by one row, still
    pass the check and lengthen the loss. None for a ``batch_coupled`` loss (in-batch pairs)."""
    import itertools
    import warnings

    from ._registry import ArrayInfo, array_info

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if spec.coupled(spec.bind(sample.options)):  # in-batch pairs: rows not separable
            return None
    shape = _loss_shape(spec, sample)
    if not shape:
        return None
    n = shape[0]
    x0 = np.ndim(sample.inputs[0])
    for o in spec.options:  # an array option spanning the batch (mse's weight of shape (N, D))
        w = sample.options.get(o.name)
        if o.kind == "array" and w is not None and np.ndim(w) in (len(shape), x0) and n > 1 \
                and np.shape(w)[0] == n:
            return None
    arrays = [np.asarray(x) for x in sample.inputs]
    if spec.name == "ctc":
        if arrays[0].ndim != 3:
            return None
        axes = [1, CONCAT if arrays[1].ndim == 1 else 0, 0, 0]
    else:
        infos = [array_info(x) for x in arrays]
        candidates = [i for i, x in enumerate(arrays) if x.ndim >= 1 and x.shape[0] == n]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            opts = spec.bind(sample.options)
        found = None
        for size in range(len(candidates), 0, -1):
            for subset in itertools.combinations(candidates, size):
                longer = [ArrayInfo((x.shape[0] + 1,) + x.shape[1:], x.kind, x.dtype)
                          if i in subset else x for i, x in enumerate(infos)]
                try:
                    grown = tuple(spec.call_check(longer, None, opts))
                except (TypeError, ValueError):
                    continue
                if grown[:1] == (n + 1,):
                    found = subset
                    break
            if found is not None:
                break
        if found is None:
            return None
        axes = [0 if i in found else None for i in range(len(arrays))]
    sw = sample.sample_weight
    sw_axis = None
    if sw is not None:
        sw = np.asarray(sw)
        # aligned with the loss's trailing axes: batched where it spans the loss's first axis
        if sw.ndim == len(shape) and sw.shape[0] == n:
            sw_axis = 0
    return tuple(axes), sw_axis


def take_rows(spec: LossSpec, sample: Sample, layout, rows) -> Sample:
    """The sample made of the given rows of its batch (indices, repeats allowed, in order)."""
    axes, sw_axis = layout
    rows = np.asarray(rows, dtype=np.int64)
    inputs = []
    for x, axis in zip(sample.inputs, axes):
        x = np.asarray(x)
        if axis is None:
            inputs.append(x)
        elif axis == CONCAT:
            lengths = np.asarray(sample.inputs[3]).astype(np.int64)
            start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            parts = [x[start[r]: start[r] + lengths[r]] for r in rows]
            inputs.append(np.concatenate(parts) if parts else x[:0])
        else:
            inputs.append(np.take(x, rows, axis=axis))
    sw = sample.sample_weight
    if sw is not None and sw_axis is not None:
        sw = np.take(np.asarray(sw), rows, axis=sw_axis)
    return sample._replace(id=f"{sample.id}[rows={len(rows)}]", inputs=tuple(inputs),
                           sample_weight=sw)


def batch_size(spec: LossSpec, sample: Sample) -> int:
    """The number of rows of a batched sample: the first axis of its unreduced loss."""
    return _loss_shape(spec, sample)[0]


def _pick_batched(spec: LossSpec, all_reductions: bool):
    """Batched samples of a loss's grid: one per reduction (``all_reductions``), else the
    best one, preferring "mean" (kl_div: "batchmean"), a batched sample weight and ignored
    targets. None for a ``batch_coupled`` loss (its rows cannot be split)."""
    if spec.batch_coupled is True:
        return []
    by_red = {}
    for s in samples_for(spec, "float64"):
        layout = batch_layout(spec, s)
        if layout is None or batch_size(spec, s) < 2:
            continue
        red = spec.bind(s.options)["reduction"]  # the spec's default and aliases resolved
        # a batched sample weight, ignored targets; not an all-zero weight or empty batch
        score = (layout[1] == 0) + (s.sample_weight is not None) + ("ignore" in s.id) \
            - 3 * ("zero-sample" in s.id or "empty" in s.id)
        if red not in by_red or score > by_red[red][0]:
            by_red[red] = (score, s, layout)
    if not all_reductions and by_red:
        first = next((r for r in ("batchmean", "mean", spec.default_reduction) if r in by_red),
                     next(iter(by_red)))
        by_red = {first: by_red[first]}
    return [(s, layout) for _, s, layout in by_red.values()]


def _tiled(spec: LossSpec, sample: Sample, layout, multiple: int, seed: int = 0) -> Sample:
    """The sample tiled to a multiple of ``multiple`` rows (at least 2 per part), its rows
    shuffled: parts of it then hold different rows, ignored targets and weights."""
    n = batch_size(spec, sample)
    reps = 1
    while (n * reps) % multiple or n * reps < 2 * multiple:
        reps += 1
    rows = np.random.default_rng(seed).permutation(np.tile(np.arange(n), reps))
    return take_rows(spec, sample, layout, rows)


def _heterogeneous_cases():
    """Hand-made batches of 16 rows whose parts differ on purpose (8 parts of 2 rows: one
    with every target ignored, one with every sample weight 0, different numbers of ignored
    targets), with class weights, label smoothing and token-level targets."""
    from .losses.sequence import _problem

    rng = np.random.default_rng(8)
    out = []
    n, c, length = 16, 7, 5
    x = rng.normal(size=(n, c, length)) * 2
    t = rng.integers(0, c, size=(n, length))
    t[0:2] = -100  # rows 0-1: every target ignored
    t[4:6, :3] = -100
    t[rng.random((n, length)) < 0.2] = -100
    w = rng.uniform(0.2, 2.0, size=c)
    sw = rng.uniform(0.0, 2.0, size=(n, length))
    sw[6:8] = 0.0  # rows 6-7: every sample weight 0
    weighted = {"weight": w, "label_smoothing": 0.1}
    for red in ("mean", "sum_over_batch_size", "sum", "none"):
        out.append(("cross_entropy", f"tokens-weighted-{red}", (x, t),
                    {"reduction": red, **weighted}, sw))
    out.append(("cross_entropy", "tokens-plain-mean", (x, t), {}, sw))
    out.append(("cross_entropy", "tokens-weighted-mean-nosw", (x, t), weighted, None))
    logp = x[:, :, 0] - np.log(np.exp(x[:, :, 0]).sum(1, keepdims=True))
    out.append(("nll", "weighted-ignored", (logp, t[:, 0].copy()), {"weight": w}, sw[:, 0]))
    for empty in ("nan", "zero"):  # every target of the whole batch ignored
        out.append(("cross_entropy", f"all-ignored-{empty}", (x, np.full((n, length), -100)),
                    {"empty_reduction": empty}, sw))
    # the causal-LM convention (transformers, torchtitan, MaxText): the shifted targets'
    # global count of valid tokens over micro-batches and ranks (docs/language-models.md)
    out.append(("cross_entropy", "causal-lm-shift", (x, t), {"shift": True}, None))
    h, wl = rng.normal(size=(n, length, 3)), rng.normal(size=(c, 3))
    out.append(("linear_cross_entropy", "causal-lm-shift-hidden", (h, wl, t),
                {"shift": True, "chunk_size": 8}, sw[:, 1:]))
    xr, tr = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    out.append(("mse", "weighted", (xr, tr), {"weight": rng.uniform(0.5, 2, 3)},
                rng.uniform(0, 2, size=(n, 1))))
    q = rng.normal(size=(n, 4))
    q = q - np.log(np.exp(q).sum(1, keepdims=True))
    p = rng.dirichlet(np.ones(4), size=n)
    out.append(("kl_div", "batchmean", (q, p), {"reduction": "batchmean"},
                rng.uniform(0, 2, size=(n, 1))))
    tls = [int(v) for v in rng.integers(0, 4, size=n)]
    ils = [int(v) for v in rng.integers(6, 9, size=n)]
    lp, tg, il, tl = _problem(rng, np.float64, 8, 5, tls, ils)
    out.append(("ctc", "padded-mean", (lp, tg, il, tl), {"reduction": "mean"},
                rng.uniform(0, 2, size=n)))
    # GRPO's token-level normalisation (dapo: the global count of completion tokens) over
    # shards of different token counts, one with every token masked (dr_grpo's constant and
    # grpo's sequence mean against TRL's own accumulation: tests/test_policy.py)
    from .losses.policy import heterogeneous_batch

    sw = rng.uniform(0.0, 2.0, size=n)
    sw[6:8] = 0.0
    out.append(("grpo", "dapo-tokens", heterogeneous_batch(rng, n),
                {"beta": 0.04, "epsilon_high": 0.28}, sw))
    return out


def fused_pair_cases(pairs: int = 16):
    """The data-parallel cases of the fused pair forms whose terms hold a count of the batch
    (linear_cpo's and linear_orpo's NLL term: N / the chosen tokens of the whole batch):
    ``[(case id, name, (input (2N, T, D), linear_weight (V, D), target (2N, T)), options)]``,
    float64, the chosen tokens spread unevenly over the pairs (the first pairs' chosen rows
    score one token, one pair's rejected row none). Their rows are [chosen (N); rejected (N)],
    so a shard of pairs ``p`` is the rows ``pair_rows(p, N)``."""
    rng = np.random.default_rng(17)
    t, d, v = 5, 3, 7
    x = rng.normal(size=(2 * pairs, t, d))
    w = rng.normal(size=(v, d))
    lab = rng.integers(0, v, size=(2 * pairs, t))
    lab[rng.random(lab.shape) < 0.3] = -100
    lab[:3, 1:] = -100  # pairs 0-2: one chosen token each
    lab[:3, 0] = 1
    lab[pairs + 5] = -100  # a rejected row that scores nothing (cpo hinge sums, not averages)
    bias = rng.normal(size=v)
    # two cases (each compiles the fused form under shard_map: seconds of CI)
    return [
        ("linear_cpo:hinge-bias", "linear_cpo", (x, w, lab),
         {"loss_type": "hinge", "cpo_alpha": 0.5, "linear_bias": bias}),
        ("linear_orpo:beta", "linear_orpo", (x, w, np.where(
            np.arange(2 * pairs)[:, None] == pairs + 5, 2, lab)), {"beta": 0.5}),
    ]


def pair_rows(pairs, n: int):
    """The rows of a fused pair form's input that hold the pairs ``pairs`` of ``n``: their
    chosen rows, then their rejected rows (a shard keeps the [chosen; rejected] layout)."""
    pairs = np.asarray(pairs, dtype=np.int64)
    return np.concatenate([pairs, pairs + n])


def data_parallel_cases(multiple: int = 8, all_reductions: bool = False) -> list:
    """Batches for the data-parallel and gradient-accumulation tests: ``[(case id, spec,
    sample, layout)]``, float64, a number of rows divisible by ``multiple``.

    For every registered loss, a sample of its grid (one per reduction with
    ``all_reductions``) tiled and shuffled; and the hand-made heterogeneous batches of 16
    rows (``_heterogeneous_cases``)."""
    import warnings

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for spec in all_specs():
            for sample, layout in _pick_batched(spec, all_reductions):
                big = _tiled(spec, sample, layout, multiple)
                out.append((f"{spec.name}:{sample.id}", spec, big, layout))
        for name, cid, inputs, opts, sw in _heterogeneous_cases():
            spec = resolve(name)
            sample = Sample(cid, inputs, opts, sw)
            out.append((f"{name}:{cid}", spec, sample, batch_layout(spec, sample)))
    return out


# ---------------------------------------------------------------------------------------------
# Low precision (docs/distributed.md §4): float16 and bfloat16 against float32


#: Where torch 2.13 on CPU has no float16/bfloat16 kernel (it raises NotImplementedError):
#: the torch backend raises torch's error, the JAX backend computes.
TORCH_CPU_NO_LOW_PRECISION = ("ctc", "multi_margin", "multilabel_margin")


def low_precision_eps(dtype: str) -> float:
    """The spacing of 1 in ``dtype``: bfloat16 2**-7, float16 2**-10, float32 2**-23."""
    return {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}.get(dtype) or float(
        np.finfo(dtype).eps)


@dataclass
class LowPrecisionResult:
    """One sample in float16 or bfloat16: per backend ("jax", "torch", and "reference":
    torch's own function in that dtype) the result dtype, or "raise: <error>"; its error
    against the float32 computation on the same (rounded) inputs, relative to
    ``max(max |ref|, 1)``; and whether its finite entries match the float32 result's."""

    loss: str
    case: str
    dtype: str
    dtypes: dict
    errors: dict
    finite_match: dict
    ref_max: float


def compare_low_precision(spec: LossSpec, sample: Sample, dtype: str) -> LowPrecisionResult:
    """Round a float64/float32 sample's floating inputs, array options and sample weight to
    ``dtype``; run both backends and torch's own function in ``dtype``; compare with the
    contract's float32 reference (``reference_value``) on the rounded inputs."""
    import warnings

    import jax.numpy as jnp
    import torch

    import multiloss

    tdt = getattr(torch, dtype)

    def low(a):
        t = torch.from_numpy(np.array(a))
        return t.to(tdt) if t.is_floating_point() else t

    def as_f32(t):
        return t.float() if t.is_floating_point() else t

    inputs = [low(a) for a in sample.inputs]
    sw = None if sample.sample_weight is None else low(sample.sample_weight)
    opts = dict(sample.options)
    for o in spec.options:
        if o.kind == "array" and opts.get(o.name) is not None:
            opts[o.name] = low(opts[o.name])
    # the float32 reference on the rounded values (the contract's, from torch's float32 kernels)
    ref_sample = sample._replace(
        inputs=tuple(as_f32(t).numpy() for t in inputs),
        options={k: (as_f32(v).numpy() if isinstance(v, torch.Tensor) else v)
                 for k, v in opts.items()},
        sample_weight=None if sw is None else sw.float().numpy())
    dtypes, errors, finite = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tensors = [torch.from_numpy(np.array(x)) for x in ref_sample.inputs]
        ref = reference_value(torch, spec, ref_sample, tensors,
                              None if sw is None else sw.float()).detach().numpy()

        def record(name, fn):
            try:
                out = fn()
            except Exception as e:  # noqa: BLE001 - recorded
                dtypes[name] = f"raise: {type(e).__name__}: {e}"
                return
            dtypes[name] = str(out.dtype).replace("torch.", "")
            if isinstance(out, torch.Tensor):
                out = out.detach().float().numpy()
            out = np.asarray(out, np.float64)
            finite[name] = bool(np.array_equal(np.isfinite(out), np.isfinite(ref)))
            ok = np.isfinite(out) & np.isfinite(ref)
            diff = np.abs(out - ref)[ok]
            errors[name] = float(diff.max() / max(np.abs(ref[ok]).max(), 1.0)) if diff.size \
                else 0.0

        def torch_ref():
            bound = spec.bind({k: v for k, v in opts.items()})
            red = bound["reduction"]
            if sw is not None or red not in ("none", "sum", "mean", "batchmean") \
                    or bound["empty_reduction"] != "nan" or sample.contract_reference:
                raise LookupError("no torch function for the contract's reduction")
            return spec.reference(torch, inputs, bound, red)

        record("reference", torch_ref)
        record("torch", lambda: multiloss.get(spec.name, "torch", **opts)(
            *inputs, sample_weight=sw))

        def to_jax(t):
            if not t.is_floating_point():
                return t.numpy()
            return jnp.asarray(t.float().numpy()).astype(getattr(jnp, dtype))

        jopts = {k: (to_jax(v) if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
        record("jax", lambda: multiloss.get(spec.name, "jax", **jopts)(
            *[to_jax(t) for t in inputs], sample_weight=None if sw is None else to_jax(sw)))
    finite_ref = np.abs(ref[np.isfinite(ref)])
    return LowPrecisionResult(spec.name, sample.id, dtype, dtypes, errors, finite,
                              float(finite_ref.max()) if finite_ref.size else 0.0)


def value_and_grads(backend: str, name: str, inputs, wrt=(), sample_weight=None, **options):
    """A loss's value (as NumPy) and the gradients of its summed output w.r.t. the inputs at
    positions ``wrt``, on one backend: the helper of the hand-written reference tests."""
    import multiloss

    loss = multiloss.get(name, backend=backend, **options)
    inputs = [np.asarray(x) for x in inputs]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def f(*diff):
            args = list(inputs)
            for i, v in zip(wrt, diff):
                args[i] = v
            return loss(*args, sample_weight=sample_weight)

        value = np.asarray(f(*[inputs[i] for i in wrt]))
        grads = jax.grad(lambda *d: jnp.sum(f(*d)), argnums=tuple(range(len(wrt))))(
            *[inputs[i] for i in wrt]) if wrt else ()
        return value, [np.asarray(g) for g in grads]
    import torch

    tensors = [torch.tensor(x, requires_grad=i in wrt) for i, x in enumerate(inputs)]
    sw = None if sample_weight is None else torch.as_tensor(sample_weight)
    out = loss(*tensors, sample_weight=sw)
    grads = torch.autograd.grad(out.sum(), [tensors[i] for i in wrt]) if wrt else ()
    return out.detach().numpy(), [g.numpy() for g in grads]
