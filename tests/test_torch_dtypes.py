"""torch's dtype acceptance, asked of torch itself (issue 14, item 1).

For every loss whose reference is ``torch.nn.functional``, each input of one sample is cast to
each of int64, int32, uint8, bool, float16, bfloat16, float32 and float64 (the other inputs
kept as they are: float32 predictions, int64 class indices, so a float cast makes mixed float
dtypes), and torch's own function is called. The table (accepts or raises, the result's dtype
and value) is built here, at test time, so that it follows the installed torch; it is cached
per process. Then on both backends:

- where torch accepts, multiloss accepts and gives torch's number, in torch's dtype, except
  where multiloss promotes mixed floating inputs (``promoted``, docs/weighting.md §6);
- where torch raises, multiloss raises its own TypeError/ValueError naming the argument,
  except the documented differences of ``DIFFERENCES``.

multiloss' side of the rule is ``LossSpec.converts`` (the inputs torch converts: integer
targets of mse_loss, float class indices of multi_margin_loss) and the spec's checks.
"""

from __future__ import annotations

import functools
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing
from multiloss._registry import common_float

DTYPES = ("int64", "int32", "uint8", "bool", "float16", "bfloat16", "float32", "float64")
TORCH_SPECS = [s for s in testing.all_specs()
               if s.reference_name.startswith("torch.nn.functional")]
NAMES_ARGUMENT = re.compile(r"^[a-z_0-9]+: ")
LOW = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def _int32_indices(spec, name, dtype, torch_error):
    """Class indices in int32 (JAX's default integer) or another integer dtype: torch's
    cross_entropy, nll_loss and linear_cross_entropy want int64 ("expected target dtype to be
    Long or Byte, but got Int"), multi_margin_loss and multilabel_margin_loss int64 only
    ("expected scalar type Long but found Int"); multiloss takes class indices of any integer
    dtype on both backends (documented in the losses' notes)."""
    return (dtype in ("int32", "uint8") and name == "target"
            and ("Long or Byte" in torch_error or "expected scalar type Long" in torch_error))


def _no_cpu_kernel(spec, name, dtype, torch_error):
    """torch has no CPU kernel for float16/bfloat16 (ctc_loss, multi_margin_loss,
    multilabel_margin_loss: "... not implemented for 'Half'"), a gap of the CPU build, not a
    dtype rule (CUDA has them): the torch backend raises torch's own NotImplementedError, JAX
    computes (in float32, rounded to the input's dtype)."""
    return dtype in LOW and "not implemented for" in torch_error


DIFFERENCES = (_int32_indices, _no_cpu_kernel)

#: torch accepts, but computes in uint8 where it wraps: margin_ranking_loss negates the target
#: in its dtype (-1 of a uint8 label 1 is 255). multiloss gives the loss of the values as
#: floats (test_integer_inputs_are_converted_first), checked here against the float32 target.
UINT8_WRAPS = {("margin_ranking", "target", "uint8")}


def _base(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        grid = [s for s in testing.samples_for(spec, "float32")
                if s.sample_weight is None and not s.contract_reference
                and all(np.asarray(x).size for x in s.inputs)]
    means = [s for s in grid if s.options.get("reduction", "mean") == "mean"]
    return (means or grid)[0]


def _cast(x, dtype):
    """x in ``dtype``; unsigned from |x|: torch computes some steps of a loss in an integer
    input's dtype, where uint8 wraps (a label of -1 is 255, and 255 == -1 in torch's uint8
    comparison; uint8 products overflow), while multiloss converts integers to the floating
    dtype first (test_integer_inputs_are_converted_first)."""
    x = np.array(x)
    if dtype == "uint8":
        x = np.abs(x)
    return torch.from_numpy(x).to(getattr(torch, dtype))


def _numpy_or_jax(t):
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy(), dtype=jnp.bfloat16)
    return t.numpy()


def _raw_multi_margin(torch, inputs, opts, reduction):
    x, t = inputs
    return torch.nn.functional.multi_margin_loss(
        x, t, p=opts["p"], margin=opts["margin"], weight=opts["weight"], reduction=reduction)


def _raw_multilabel_margin(torch, inputs, opts, reduction):
    return torch.nn.functional.multilabel_margin_loss(*inputs, reduction=reduction)


#: torch's function itself where the spec's reference converts an input first (the class
#: indices' .long() of the parity references, made for samples of any integer dtype)
RAW = {"multi_margin": _raw_multi_margin, "multilabel_margin": _raw_multilabel_margin}


@functools.cache
def _torch_table(name):
    """{(input, dtype): ("ok", result dtype, value) | ("raise", message)}: torch's answer."""
    spec = multiloss.resolve(name)
    sample = _base(spec)
    table = {}
    for i, inp in enumerate(spec.inputs):
        for dtype in DTYPES:
            tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
            tensors[i] = _cast(sample.inputs[i], dtype)
            opts = testing._reference_options(torch, spec, sample, torch.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                try:
                    out = RAW.get(name, spec.reference)(torch, tensors, opts,
                                                        opts["reduction"])
                except Exception as e:  # noqa: BLE001 - the table records what torch raises
                    table[inp.name, dtype] = ("raise", f"{type(e).__name__}: {e}")
                    continue
            table[inp.name, dtype] = ("ok", str(out.dtype).replace("torch.", ""),
                                      out.detach().double().numpy())
    return sample, table


def _ours(spec, sample, i, dtype, backend):
    tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
    tensors[i] = _cast(sample.inputs[i], dtype)
    loss = multiloss.get(spec.name, backend, **sample.options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if backend == "torch":
            out = loss(*tensors)
            return str(out.dtype).replace("torch.", ""), out.detach().double().numpy()
        out = loss(*[_numpy_or_jax(t) for t in tensors])
        return str(out.dtype), np.asarray(out, dtype=np.float64)


def _tolerance(*dtypes):
    low = [LOW[d] for d in dtypes if d in LOW]
    return 4 * max(low) if low else testing.TOLERANCE["float32"]


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=lambda s: s.name)
def test_dtype_acceptance_matches_torch(spec):
    sample, table = _torch_table(spec.name)
    checked = 0
    for i, inp in enumerate(spec.inputs):
        for dtype in DTYPES:
            where = f"{spec.name}: {inp.name} in {dtype}"
            answer = table[inp.name, dtype]
            if answer[0] == "raise":
                documented = [d for d in DIFFERENCES if d(spec, inp.name, dtype, answer[1])]
                for backend in ("jax", "torch"):
                    if documented:
                        if documented[0] is _no_cpu_kernel and backend == "torch":
                            with pytest.raises(NotImplementedError):
                                _ours(spec, sample, i, dtype, backend)
                        elif documented[0] is _int32_indices:  # torch's number on int64
                            tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
                            tensors[i] = _cast(sample.inputs[i], dtype).long()
                            opts = testing._reference_options(torch, spec, sample, torch.float32)
                            ref = spec.reference(torch, tensors, opts, opts["reduction"])
                            _, value = _ours(spec, sample, i, dtype, backend)
                            err = testing.rel_error(value, ref.detach().double().numpy(), 1.0)
                            assert err <= testing.TOLERANCE["float32"], (where, backend, err)
                        else:  # no CPU kernel in torch: JAX computes (test_mixed_precision)
                            _ours(spec, sample, i, dtype, backend)
                        continue
                    with pytest.raises((TypeError, ValueError)) as e:
                        _ours(spec, sample, i, dtype, backend)
                    assert NAMES_ARGUMENT.match(str(e.value)), (where, backend, str(e.value))
                    assert inp.name in str(e.value) or "input" in str(e.value), (
                        where, backend, str(e.value))
                checked += 1
                continue
            _, ref_dtype, ref = answer
            if (spec.name, inp.name, dtype) in UINT8_WRAPS:  # torch on the values as floats
                tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
                tensors[i] = _cast(sample.inputs[i], dtype).float()
                opts = testing._reference_options(torch, spec, sample, torch.float32)
                ref = spec.reference(torch, tensors, opts, opts["reduction"]).double().numpy()
            infos = [np.asarray(x).dtype.name for x in sample.inputs]
            infos[i] = dtype
            converted = spec.converted([
                multiloss._registry.ArrayInfo((), "f" if "float" in d else
                                              ("b" if d == "bool" else d[0]), d)
                for d in infos], spec.bind(sample.options))
            floats = {x.dtype for x in converted if x.kind == "f"}
            promoted = common_float(floats)
            for backend in ("jax", "torch"):
                try:
                    dt, value = _ours(spec, sample, i, dtype, backend)
                except Exception as e:  # noqa: BLE001 - reported with torch's answer
                    pytest.fail(f"{where}: torch accepts ({ref_dtype}), {backend} raises {e!r}")
                # the result dtype: torch's, or the promotion of mixed floating inputs
                assert dt == ref_dtype or (len(floats) > 1 and dt == promoted), (
                    where, backend, dt, ref_dtype)
                err = testing.rel_error(value, ref, 1.0)
                assert err <= _tolerance(dt, ref_dtype, dtype), (where, backend, err)
            checked += 1
    assert checked == len(spec.inputs) * len(DTYPES)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_multilabel_soft_margin_takes_integer_targets(backend):
    """torch's MultiLabelSoftMarginLoss module test passes int64 0/1 targets."""
    x = np.array([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]], np.float32)
    t = np.array([[1, 0, 1], [0, 0, 1]], np.int64)
    ref = torch.nn.MultiLabelSoftMarginLoss()(torch.from_numpy(x), torch.from_numpy(t))
    loss = multiloss.get("multilabel_soft_margin", backend)
    out = loss(*((x, t) if backend == "jax" else (torch.from_numpy(x), torch.from_numpy(t))))
    assert str(out.dtype).replace("torch.", "") == "float32"
    assert float(out) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_mixed_dtypes_where_torch_refuses_them(backend):
    """binary_cross_entropy and linear_cross_entropy refuse mixed floating dtypes in torch;
    multiloss raises its own TypeError, quoting torch."""
    x = np.full((3,), 0.3, np.float32)
    t = np.full((3,), 1.0, np.float64)
    with pytest.raises(TypeError, match=r"^target: .*Found dtype Double but expected Float"):
        multiloss.get("binary_cross_entropy", backend)(
            *((x, t) if backend == "jax" else (torch.from_numpy(x), torch.from_numpy(t))))
    h = np.ones((2, 4), np.float16)
    w = np.ones((3, 4), np.float32)
    y = np.array([0, 2])
    args = (h, w, y) if backend == "jax" else tuple(torch.from_numpy(a) for a in (h, w, y))
    with pytest.raises(TypeError, match=r"^linear_weight: .*same dtype"):
        multiloss.get("linear_cross_entropy", backend)(*args)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_integer_inputs_are_converted_first(backend):
    """A documented difference: multiloss converts integer inputs to the floating dtype before
    the loss, where torch computes some steps in the integer dtype (cosine_embedding_loss'
    products of uint8 inputs wrap at 256; hinge_embedding_loss reads a uint8 label 255 as -1).
    The loss of integer inputs is the loss of the same values as floats."""
    x1 = np.array([[200, 3, 0], [1, 2, 250]], np.uint8)
    x2 = np.array([[100, 1, 1], [2, 0, 240]], np.float32)
    y = np.array([1, -1], np.int64)
    loss = multiloss.get("cosine_embedding", backend)

    def call(*a):
        return float(loss(*(a if backend == "jax" else [torch.from_numpy(v) for v in a])))

    assert call(x1, x2, y) == pytest.approx(call(x1.astype(np.float32), x2, y), rel=1e-6)
    wrapped = torch.nn.functional.cosine_embedding_loss(
        torch.from_numpy(x1), torch.from_numpy(x2), torch.from_numpy(y))
    assert float(wrapped) != pytest.approx(call(x1, x2, y), rel=1e-3)  # torch's uint8 wraps
