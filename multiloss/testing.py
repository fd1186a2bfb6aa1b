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


def run_jax(spec: LossSpec, sample: Sample):
    import jax

    import multiloss

    loss = multiloss.get(spec.name, backend="jax", **sample.options)
    pos = _diff_positions(spec, sample)
    sw = sample.sample_weight
    primals = [sample.inputs[i] for i in pos] + ([sw] if _sw_differentiable(spec, sample) else [])

    def f(*diff):
        inputs = list(sample.inputs)
        for i, v in zip(pos, diff):
            inputs[i] = v
        w = diff[len(pos)] if len(diff) > len(pos) else sw
        return loss(*inputs, sample_weight=w)

    # value and gradients in one compiled function (one compilation per case)
    out_shape = jax.eval_shape(f, *primals)
    ct = _cotangent(sample, out_shape.shape, out_shape.dtype)

    @jax.jit
    def value_and_grads(primals, ct):
        out, vjp = jax.vjp(f, *primals)
        return out, (vjp(ct) if primals else ())

    value, grads = value_and_grads(primals, ct)
    t0 = time.perf_counter()
    jax.block_until_ready(value_and_grads(primals, ct))
    seconds = time.perf_counter() - t0
    return np.asarray(value), [np.asarray(g) for g in grads], seconds, str(value.dtype)


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
        "sum_over_batch_size": lambda: c.sum(),
        "batchmean": lambda: torch.tensor(float(loss.shape[0] if loss.ndim else 1), dtype=loss.dtype),
    }[red]()
    safe = torch.where(den == 0, torch.ones_like(den), den)
    fill = torch.full_like(num, float("nan") if empty == "nan" else 0.0)
    return torch.where(den == 0, fill, num / safe)


def run_reference(spec: LossSpec, sample: Sample):
    import torch

    tensors, sw, wrt = _torch_inputs(torch, spec, sample)
    out = reference_value(torch, spec, sample, tensors, sw)
    return out.detach().numpy(), _torch_grads(torch, out, wrt, sample)


# ---------------------------------------------------------------------------------------------


def compare(spec: LossSpec, sample: Sample, dtype: str) -> CaseResult:
    """Both backends against the reference on one sample."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref_value, ref_grads = run_reference(spec, sample)
        errors, message = {}, ""
        seconds = {}
        for backend, runner in (("jax", run_jax), ("torch", run_torch)):
            try:
                value, grads, secs, out_dtype = runner(spec, sample)
            except Exception as e:  # noqa: BLE001 - reported as a failed case
                message += f"{backend}: {type(e).__name__}: {e}; "
                seconds[backend] = float("nan")
                continue
            seconds[backend] = secs
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
                      errors, message.strip())


def samples_for(spec: LossSpec, dtype: str, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed + _seed(spec.name))
    return list(spec.samples(rng, np.dtype(dtype)))


def check_loss(name: str, dtype: str = "float64", seed: int = 0) -> list[CaseResult]:
    """Run every sample of loss ``name`` in ``dtype``; one result per sample."""
    if dtype == "float64":
        enable_x64()
    spec = resolve(name)
    return [compare(spec, s, dtype) for s in samples_for(spec, dtype, seed)]


def all_specs() -> list[LossSpec]:
    return list(specs())
