"""Robustness (docs/robustness.md): hostile input on both backends.

1. Property-based: for every registered loss, hypothesis draws a random valid case
   (``spec.random_sample``) and a mutation of it (NaN or inf in an input, Python lists,
   non-contiguous and broadcast views, a wrong dtype, rank or length, an out-of-range label,
   an empty batch, a bad sample weight, mixed float32/float64). Then either both backends
   agree with the reference (values and gradients, NaN for NaN), or both raise the same
   exception class with the same message, which names the argument. CI runs the "ci"
   hypothesis profile; the long campaign is
   ``HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_robustness.py -k fuzz``.
2. The catalogue: one documented outcome per kind of bad input (the table of
   docs/robustness.md), checked on both backends.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import multiloss
from multiloss import testing

BACKENDS = ("jax", "torch")
#: Per loss: a quarter of the hypothesis profile's examples, at least 2 ("ci": 5, so 2; "fuzz":
#: 2000, so 500 per loss), or MULTILOSS_FUZZ_EXAMPLES.
EXAMPLES_PER_LOSS = int(os.environ.get("MULTILOSS_FUZZ_EXAMPLES", 0)) or max(
    2, settings().max_examples // 4)

MUTATIONS = (
    "none", "nan", "inf", "lists", "fortran", "negative-strides", "broadcast",
    "int-input", "float-indices", "complex", "add-axis", "drop-axis", "shorter",
    "label-out-of-range", "empty", "sample-weight-shape", "sample-weight-complex",
    "float32-mix",
)

#: An exception message names the argument (or the loss, for the number of inputs).
NAMES_ARGUMENT = re.compile(r"^([a-z_0-9]+|sample_weight|normalizer): ")


# ---------------------------------------------------------------------------------------------
# mutations


def _floating(sample):
    return [i for i, x in enumerate(sample.inputs) if np.asarray(x).dtype.kind == "f"
            and np.asarray(x).size]


def _integer(sample):
    return [i for i, x in enumerate(sample.inputs) if np.asarray(x).dtype.kind in "iu"
            and np.asarray(x).size]


def _replace(sample, i, x, tag):
    inputs = list(sample.inputs)
    inputs[i] = x
    return sample._replace(id=f"{sample.id}+{tag}", inputs=tuple(inputs))


def mutate(spec, sample, mutation, rng):
    """The sample with one mutation applied, and whether the mutation keeps the values (the
    result must then equal the unmutated one's). None where it does not apply."""
    floats, ints = _floating(sample), _integer(sample)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    if mutation == "none":
        return sample
    if mutation in ("nan", "inf") and floats:
        i = pick(floats)
        x = np.array(sample.inputs[i])
        v = np.nan if mutation == "nan" else float(rng.choice([np.inf, -np.inf]))
        x.flat[int(rng.integers(x.size))] = v
        return _replace(sample, i, x, mutation)
    if mutation == "lists":
        return sample._replace(id=sample.id + "+lists",
                               inputs=tuple(np.asarray(x).tolist() for x in sample.inputs))
    if mutation in ("fortran", "negative-strides") and floats:
        i = pick(floats)
        x = np.asarray(sample.inputs[i])
        if mutation == "fortran":
            view = np.asfortranarray(x)
        else:  # the same values in a view with negative strides
            view = np.flip(np.ascontiguousarray(np.flip(x)))
        return _replace(sample, i, view, mutation)
    if mutation == "broadcast" and floats:
        # a read-only broadcast view (zero strides) of an input with every row equal
        i = pick(floats)
        x = np.asarray(sample.inputs[i])
        if x.ndim < 1 or x.shape[0] < 1:
            return None
        return _replace(sample, i, np.broadcast_to(x[:1], x.shape), mutation)
    if mutation == "int-input" and floats:
        i = pick(floats)
        return _replace(sample, i, np.round(np.asarray(sample.inputs[i])).astype(np.int64),
                        mutation)
    if mutation == "float-indices" and ints:
        i = pick(ints)
        return _replace(sample, i, np.asarray(sample.inputs[i]).astype(np.float64), mutation)
    if mutation == "complex" and floats:
        i = pick(floats)
        return _replace(sample, i, np.asarray(sample.inputs[i]).astype(np.complex128),
                        mutation)
    if mutation == "add-axis":
        i = int(rng.integers(len(sample.inputs)))
        return _replace(sample, i, np.asarray(sample.inputs[i])[..., None], mutation)
    if mutation == "drop-axis":
        cands = [i for i, x in enumerate(sample.inputs) if np.ndim(x) >= 1 and np.size(x)]
        if not cands:
            return None
        i = pick(cands)
        x = np.asarray(sample.inputs[i])
        return _replace(sample, i, x.reshape(x.shape[:-2] + (-1,)) if x.ndim >= 2
                        else x[0], mutation)
    if mutation == "shorter":
        cands = [i for i, x in enumerate(sample.inputs) if np.ndim(x) >= 1
                 and np.shape(x)[0] >= 2]
        if not cands:
            return None
        i = pick(cands)
        return _replace(sample, i, np.asarray(sample.inputs[i])[:-1], mutation)
    if mutation == "label-out-of-range" and ints:
        i = pick(ints)
        x = np.array(sample.inputs[i])
        x.flat[int(rng.integers(x.size))] = int(rng.choice([10**6, -7]))
        return _replace(sample, i, x, mutation)
    if mutation == "empty":
        layout = testing.batch_layout(spec, sample)
        if layout is None:
            return None
        return testing.take_rows(spec, sample, layout, np.zeros(0, np.int64))._replace(
            id=sample.id + "+empty")
    if mutation == "sample-weight-shape":
        return sample._replace(id=sample.id + "+sw-shape",
                               sample_weight=np.ones((7, 1, 1, 1, 1)))
    if mutation == "sample-weight-complex" and sample.sample_weight is not None:
        return sample._replace(id=sample.id + "+sw-complex",
                               sample_weight=np.asarray(sample.sample_weight, np.complex128))
    if mutation == "float32-mix" and floats:
        i = pick(floats)
        return _replace(sample, i, np.asarray(sample.inputs[i]).astype(np.float32), mutation)
    return None


# ---------------------------------------------------------------------------------------------
# outcomes


def _call(backend, spec, sample):
    """The backend's value on the sample (NumPy), or the exception it raised."""
    loss = multiloss.get(spec.name, backend, **sample.options)
    try:
        if backend == "jax":
            out = loss(*sample.inputs, sample_weight=sample.sample_weight)
            return np.asarray(out)
        inputs = [torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x
                  for x in sample.inputs]
        sw = sample.sample_weight
        sw = torch.from_numpy(np.array(sw)) if isinstance(sw, np.ndarray) else sw
        return loss(*inputs, sample_weight=sw).detach().numpy()
    except Exception as e:  # noqa: BLE001 - the outcome
        return e


def documented_difference(spec, sample, a, b) -> bool:
    """The one documented case where the backends differ (docs/robustness.md): torch's
    binary_cross_entropy kernel raises RuntimeError for an input outside [0, 1] (NaN and
    inf included), which it checks on the device; JAX returns NaN for that element (a check
    would need the values on the host, every call)."""
    return (spec.name == "binary_cross_entropy" and isinstance(b, RuntimeError)
            and "between 0 and 1" in str(b) and not isinstance(a, Exception)
            and bool(np.isnan(a).any()))


def check_outcome(spec, sample, dtype="float64"):
    """Both backends raise alike, or both agree with the reference (or, where the reference
    itself raises, with each other)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = (_call(backend, spec, sample) for backend in BACKENDS)
        if documented_difference(spec, sample, a, b):
            return "documented difference"
        if isinstance(a, Exception) or isinstance(b, Exception):
            assert isinstance(a, Exception) and isinstance(b, Exception), (
                f"{sample.id}: only one backend raised: jax {a!r}, torch {b!r}")
            assert type(a) is type(b), f"{sample.id}: jax {a!r}, torch {b!r}"
            assert str(a) == str(b), f"{sample.id}: jax {a!r}, torch {b!r}"
            assert NAMES_ARGUMENT.match(str(a)), f"{sample.id}: {a!r}"
            return "raised"
        assert a.dtype == b.dtype, f"{sample.id}: dtypes {a.dtype} and {b.dtype}"
        tol = testing.TOLERANCE["float32" if a.dtype == np.float32 else "float64"]
        arrays = [np.asarray(x) for x in sample.inputs]
        floats = {x.dtype for x in arrays if x.dtype.kind == "f"}
        if len(floats) > 1:
            # mixed float32/float64: both backends promote (docs/weighting.md §6; torch's
            # kernels disagree among themselves); the reference is the promoted case's
            err = testing.rel_error(a, b, testing.SCALE_FLOOR["float32"])
            assert err <= tol, f"{sample.id}: backends differ by {err:.2e}"
            common = np.result_type(*floats)
            arrays = [x.astype(common) if x.dtype.kind == "f" else x for x in arrays]
        arrays = sample._replace(inputs=tuple(arrays))
        try:
            testing.run_reference(spec, arrays)
        except Exception:  # noqa: BLE001 - the reference is stricter: compare the backends
            err = testing.rel_error(a, b, testing.SCALE_FLOOR["float32"])
            assert err <= tol, f"{sample.id}: backends differ by {err:.2e}"
            return "backends agree (the reference raises)"
        result = testing.compare(spec, arrays, str(a.dtype))
        assert not result.message, f"{sample.id}: {result.message}"
        bad = {k: v for k, v in result.errors.items() if not v <= tol}
        assert not bad, f"{sample.id}: errors above {tol:.1e}: {bad}"
        return "agree"


# ---------------------------------------------------------------------------------------------
# 1. property-based


@pytest.mark.parametrize("name", multiloss.available())
@settings(max_examples=EXAMPLES_PER_LOSS)
@given(seed=st.integers(0, 2**32 - 1), mutation=st.sampled_from(MUTATIONS))
def test_fuzz(name, seed, mutation):
    spec = multiloss.resolve(name)
    rng = np.random.default_rng(seed)
    sample = spec.random_sample(rng, np.dtype("float64"))
    mutated = mutate(spec, sample, mutation, rng)
    if mutated is None:  # the mutation does not apply to this case: the case itself
        mutated = sample
    check_outcome(spec, mutated)


# ---------------------------------------------------------------------------------------------
# 2. the catalogue of bad inputs (docs/robustness.md): one documented outcome each


def _wrap(backend):
    return jnp.asarray if backend == "jax" else torch.as_tensor


def _np(out):
    return out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


RNG = np.random.default_rng(5)
X = RNG.normal(size=(3, 5))
T = np.array([0, 4, 2])
Y = RNG.normal(size=(3, 5))


def _ce(backend, **opts):
    return multiloss.get("cross_entropy", backend, **opts)


def _mse(backend, **opts):
    return multiloss.get("mse", backend, **opts)


def _raises(exc, pattern, fn):
    with pytest.raises(exc, match=pattern):
        fn()


def _same(backend, got, want_fn):
    want = want_fn()
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-13, atol=0)


def _torch_ref_ce(x, t, **kw):
    return torch.nn.functional.cross_entropy(torch.as_tensor(np.asarray(x)),
                                             torch.as_tensor(np.asarray(t)), **kw).numpy()


def _cat_wrong_length(b):
    w = _wrap(b)
    _raises(ValueError, r"^target: expected class indices of shape \(3,\) for input of shape "
            r"\(3, 5\), got shape \(4,\)", lambda: _ce(b)(w(X), w(np.zeros(4, np.int64))))


def _cat_wrong_rank(b):
    w = _wrap(b)
    _raises(ValueError, r"^target: expected the shape of input, \(3, 5\), got \(3, 5, 1\)",
            lambda: _mse(b)(w(X), w(Y[..., None])))
    _raises(ValueError, r"^input: expected shape \(C,\), \(N, C\) or \(N, C, d1, \.\.\., dk\), "
            r"got shape \(\)", lambda: _ce(b)(w(np.array(1.0)), w(np.array(0))))


def _cat_wrong_dtype(b):
    w = _wrap(b)
    # (mse_loss promotes an integer input, as torch: tests/test_torch_dtypes.py; BCE refuses)
    _raises(TypeError, r"^input: expected a floating-point array, got int64 array of shape",
            lambda: multiloss.get("binary_cross_entropy", b)(w(X.astype(np.int64)), w(Y)))
    _raises(TypeError, r"^target: expected integer class indices of shape \(3,\), got float64",
            lambda: multiloss.get("nll", b)(w(X), w(T.astype(np.float64))))
    _raises(TypeError, r"^input: expected a floating-point array, got complex128",
            lambda: _mse(b)(w(X.astype(np.complex128)), w(Y.astype(np.complex128))))
    _raises(TypeError, r"^target: expected integer class indices of shape \(3,\).*got bool",
            lambda: _ce(b)(w(X), w(np.array([True, False, True]))))


def _cat_label_out_of_range(b):
    w = _wrap(b)
    _raises(ValueError, r"^target: expected class indices in \[0, 5\) or equal "
            r"ignore_index=-100, got 7 at index \(1,\)",
            lambda: _ce(b)(w(X), w(np.array([0, 7, 2]))))


def _cat_label_out_of_range_traced(b):
    # under a trace the values are unknown when the checks run: JAX gives NaN (never a
    # plausible number); torch code is never traced without values (torch.compile aside)
    if b == "jax":
        out = jax.jit(lambda x, t: _ce(b)(x, t))(X, np.array([0, 7, 2]))
        assert np.isnan(float(out))
    else:
        _cat_label_out_of_range(b)


def _cat_nan_inf(b):
    # NaN and inf propagate as in torch: the value and gradient are torch's
    w = _wrap(b)
    x = X.copy()
    x[0, 1], x[1, 2] = np.nan, np.inf
    got = _ce(b, reduction="none")(w(x), w(T))
    np.testing.assert_array_equal(np.isnan(_np(got)),
                                  np.isnan(_torch_ref_ce(x, T, reduction="none")))
    assert np.isnan(float(_np(_ce(b)(w(x), w(T)))))


def _cat_empty_batch(b):
    w = _wrap(b)
    x, t = np.zeros((0, 5)), np.zeros(0, np.int64)
    assert np.isnan(float(_np(_ce(b)(w(x), w(t)))))
    assert float(_np(_ce(b, empty_reduction="zero")(w(x), w(t)))) == 0.0
    assert float(_np(_ce(b, reduction="sum")(w(x), w(t)))) == 0.0
    assert _np(_ce(b, reduction="none")(w(x), w(t))).shape == (0,)


def _cat_lists(b):
    got = _ce(b)(X.tolist(), T.tolist())
    assert str(got.dtype).endswith("float64")
    _same(b, got, lambda: _torch_ref_ce(X, T))
    assert float(_np(_mse(b)(1.0, 0.5))) == 0.25  # Python scalars: 0-d arrays


def _cat_ragged_and_objects(b):
    _raises(TypeError, r"^input: expected an? (array|tensor), got list",
            lambda: _mse(b)([[1.0, 2.0], [3.0]], [[1.0, 2.0], [3.0]]))
    _raises(TypeError, r"^input: expected .*got object", lambda: _mse(b)(object(), Y))


def _cat_other_backend(b):
    other = torch.as_tensor(X) if b == "jax" else jnp.asarray(X)
    what = r"got a torch\.Tensor" if b == "jax" else r"got a JAX array"
    _raises(TypeError, rf"^input: expected .*{what}", lambda: _mse(b)(other, Y))


def _cat_devices(b):
    # torch: a tensor on another device than the first input; on a CPU-only machine the
    # "meta" device stands in for an accelerator. (JAX: tests/test_sharding.py commits
    # arrays to two of 8 host devices: ValueError naming the argument too.)
    _raises(ValueError, r"^target: expected a tensor on cpu \(the device of input\), got one "
            r"on meta; move it with \.to\('cpu'\)",
            lambda: _ce(b)(torch.as_tensor(X), torch.as_tensor(T, device="meta")))
    _raises(ValueError, r"^sample_weight: expected a tensor on meta",
            lambda: _ce(b)(torch.as_tensor(X, device="meta"),
                           torch.as_tensor(T, device="meta"),
                           sample_weight=torch.ones(3)))


def _cat_meta(b):
    # meta tensors (shapes without values): the checks that read values are skipped, as on
    # a JAX tracer; the result is a meta tensor of the loss's shape
    if b == "jax":
        out = jax.eval_shape(lambda x, t: _ce(b, reduction="none")(x, t),
                             jax.ShapeDtypeStruct((3, 5), jnp.float64),
                             jax.ShapeDtypeStruct((3,), jnp.int32))
        assert out.shape == (3,)
        return
    out = _ce(b, reduction="none")(torch.empty(3, 5, device="meta"),
                                   torch.empty(3, dtype=torch.int64, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (3,)


def _cat_non_contiguous(b):
    want = lambda: _torch_ref_ce(X, T)  # noqa: E731
    for view in (np.asfortranarray(X), np.flip(np.ascontiguousarray(np.flip(X)))):
        _same(b, _ce(b)(view, T), want)
    if b == "torch":
        xt = torch.as_tensor(np.ascontiguousarray(X.T)).T  # a transposed view
        assert not xt.is_contiguous()
        _same(b, _ce(b)(xt, torch.as_tensor(T)), want)


def _cat_broadcast(b):
    xb = np.broadcast_to(X[:1], X.shape)  # zero strides, read-only
    want = lambda: _torch_ref_ce(np.array(xb), T)  # noqa: E731
    _same(b, _ce(b)(xb, T), want)
    if b == "torch":
        _same(b, _ce(b)(torch.as_tensor(X[:1]).expand(3, 5), torch.as_tensor(T)), want)
    else:
        _same(b, _ce(b)(jnp.broadcast_to(jnp.asarray(X[:1]), X.shape), T), want)


def _cat_sample_weight(b):
    w = _wrap(b)
    _raises(ValueError, r"^sample_weight: expected an array that broadcasts to the unreduced "
            r"loss of shape \(3, 5\), got shape \(3,\)\..*w\[:, None\]",
            lambda: _mse(b)(w(X), w(Y), sample_weight=w(np.ones(3))))
    _raises(TypeError, r"^sample_weight: expected a real-valued array, got complex128",
            lambda: _mse(b)(w(X), w(Y), sample_weight=w(np.ones(5, np.complex128))))


def _cat_inputs_count(b):
    _raises(TypeError, r"^cross_entropy: expected 2 inputs \(input, target\), got 3$",
            lambda: _ce(b)(X, T, np.ones(3)))


def _cat_options(b):
    _raises(TypeError, r"unknown option\(s\) 'smoothing'; valid options are",
            lambda: _ce(b, smoothing=0.1))
    _raises(ValueError, r"^label_smoothing: expected a value in \[0\.0, 1\.0\], got 1\.5",
            lambda: _ce(b, label_smoothing=1.5))


def _cat_normalizer(b):
    w = _wrap(b)
    _raises(ValueError, r"^normalizer: expected a scalar, got shape \(3,\)",
            lambda: _ce(b)(w(X), w(T), normalizer=w(np.ones(3))))


def _cat_bce_out_of_range(b):
    # torch's kernel check, made by both backends where the values are concrete; under a JAX
    # trace the input gives NaN
    p, t = np.array([0.5, 1.5, np.nan]), np.array([1.0, 0.0, 1.0])
    loss = multiloss.get("binary_cross_entropy", b, reduction="none")
    _raises(ValueError, r"input: expected values in \[0, 1\] \(torch: all elements of input "
            r"should be between 0 and 1\), got 1.5 at index \(1,\)",
            lambda: loss(p, t))
    if b == "jax":
        out = np.asarray(jax.jit(loss)(p, t))
        assert np.isfinite(out[0]) and np.isnan(out[1:]).all()


CATALOGUE = {
    "wrong-length": _cat_wrong_length,
    "wrong-rank": _cat_wrong_rank,
    "wrong-dtype": _cat_wrong_dtype,
    "label-out-of-range": _cat_label_out_of_range,
    "label-out-of-range-traced": _cat_label_out_of_range_traced,
    "nan-and-inf": _cat_nan_inf,
    "empty-batch": _cat_empty_batch,
    "python-lists-and-scalars": _cat_lists,
    "ragged-lists-and-objects": _cat_ragged_and_objects,
    "other-backends-array": _cat_other_backend,
    "mismatched-devices": _cat_devices,
    "meta-tensors-and-shapes": _cat_meta,
    "non-contiguous": _cat_non_contiguous,
    "broadcast-views": _cat_broadcast,
    "bad-sample-weight": _cat_sample_weight,
    "wrong-number-of-inputs": _cat_inputs_count,
    "bad-options": _cat_options,
    "bad-normalizer": _cat_normalizer,
    "bce-input-outside-0-1": _cat_bce_out_of_range,
}


#: catalogue items checked on one backend only (the other's is checked elsewhere)
ONE_BACKEND = {"mismatched-devices": "torch"}


@pytest.mark.parametrize("item,backend", [
    (item, backend) for item in CATALOGUE for backend in BACKENDS
    if ONE_BACKEND.get(item, backend) == backend
])
def test_catalogue(item, backend):
    CATALOGUE[item](backend)
