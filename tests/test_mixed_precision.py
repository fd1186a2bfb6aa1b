"""float16 and bfloat16 inputs (docs/distributed.md §4): the result has the input's dtype on
both backends (torch's rule); JAX computes in float32 and rounds once, so it is within half
an ulp of the float32 result on the same (rounded) inputs; the torch backend runs torch's own
kernels (sums and log-sum-exps accumulated in float32 by torch, the contract's sums too);
logits of +-1e4 give finite values and gradients.

``python tests/test_mixed_precision.py`` prints the table of docs/distributed.md (every loss's
whole sample grid, both dtypes, a few minutes); CI checks two samples per loss, one in each
dtype (one with a sample weight, one without).
"""

from __future__ import annotations

import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

DTYPES = ("bfloat16", "float16")
#: JAX: one rounding of a float32 result, half an ulp of the dtype relative to the result's
#: scale, plus float32's own parity tolerance (torch's and XLA's float32 differ by that).
JAX_TOL = {d: testing.low_precision_eps(d) / 2 + testing.TOLERANCE["float32"] for d in DTYPES}
#: torch's float16/bfloat16 kernels round their element-wise steps in the dtype: measured on
#: the whole grid (the table of docs/distributed.md) at most 2.7 ulps (bfloat16, triplet
#: margin with a distance) and 2.0 ulps (float16); bound: 4 ulps.
TORCH_TOL = {d: 4 * testing.low_precision_eps(d) for d in DTYPES}


def _grid(spec, dtype_of_samples="float32"):
    """The sample grid without empty batches, with at least one element."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for s in testing.samples_for(spec, dtype_of_samples):
            if "empty" in s.id or any(np.asarray(x).size == 0 for x in s.inputs):
                continue
            out.append(s)
    return out


def _two(spec):
    """Two samples of a loss for CI: one with a sample weight, one without, different
    reductions where the grid has them."""
    grid = _grid(spec)
    with_sw = [s for s in grid if s.sample_weight is not None]
    without = [s for s in grid if s.sample_weight is None]
    first = with_sw[len(with_sw) // 2] if with_sw else grid[0]
    red = first.options.get("reduction", "mean")
    others = [s for s in without if s.options.get("reduction", "mean") != red] or without
    return [first] + ([others[len(others) // 3]] if others else [])


def _result_dtype(spec, sample, dtype):
    """The result's dtype for the sample's floating inputs in ``dtype``: ``dtype``, or what
    the spec converts them to (``LossSpec.converts``: torchvision's float32 upcast)."""
    from multiloss._registry import ArrayInfo, common_float

    infos = []
    for x in sample.inputs:
        a = np.asarray(x)
        kind = a.dtype.kind
        infos.append(ArrayInfo(a.shape, kind, dtype if kind == "f" else a.dtype.name))
    return common_float([i.dtype for i in spec.converted(infos, spec.bind(sample.options)) if i.kind == "f"])


CASES = [pytest.param(spec, s, d, id=f"{d}-{s.id}")
         for spec in testing.all_specs() for s, d in zip(_two(spec), DTYPES)]


@pytest.mark.parametrize("spec,sample,dtype", CASES)
def test_low_precision_against_float32(spec, sample, dtype):
    r = testing.compare_low_precision(spec, sample, dtype)
    # JAX: the input's dtype (float32 where the reference upcasts: the box losses, as
    # torchvision), within half an ulp of float32, finite where float32 is
    want = _result_dtype(spec, sample, dtype)
    assert r.dtypes["jax"] == want, r.dtypes
    if r.ref_max < float(np.finfo(np.float16).max) / 2 or dtype == "bfloat16":
        assert r.finite_match["jax"], r
        assert r.errors["jax"] <= JAX_TOL[dtype], r
    # torch: torch's own kernels, or torch's NotImplementedError where it has none on CPU
    if spec.name in testing.TORCH_CPU_NO_LOW_PRECISION:
        assert r.dtypes["torch"].startswith("raise: NotImplementedError"), r.dtypes
        return
    assert r.dtypes["torch"] == want, r.dtypes
    if r.finite_match["torch"]:
        assert r.errors["torch"] <= TORCH_TOL[dtype], r
    else:  # torch's own kernel overflows or underflows in this dtype: the backend follows it
        assert r.finite_match.get("reference") is False, r
    if "reference" in r.errors and r.finite_match["torch"]:
        # torch's own function: the torch backend is as accurate or more (where it reduces
        # itself, e.g. mse's weighted mean, it sums in float32; torch 2.13 in the dtype)
        assert r.errors["torch"] <= r.errors["reference"] + JAX_TOL[dtype], r


LOGITS = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [0.0, 0.0, 1e4], [-1e4, -1e4, -1e4]])
TARGETS = {
    "index": np.array([1, 1, 0, 2]),
    "binary": np.array([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]),
}
EXTREME = [
    ("cross_entropy", "index", {}),
    ("cross_entropy", "index", {"weight": np.array([0.5, 2.0, 1.0]), "label_smoothing": 0.1}),
    ("cross_entropy", "probs", {"label_smoothing": 0.2}),
    ("binary_cross_entropy_with_logits", "binary", {}),
    ("binary_cross_entropy_with_logits", "binary", {"pos_weight": np.array([2.0, 1.0, 0.5])}),
    ("multilabel_soft_margin", "binary", {}),
]


def _target(kind):
    if kind == "probs":
        return TARGETS["binary"] / TARGETS["binary"].sum(1, keepdims=True)
    return TARGETS[kind]


@pytest.mark.parametrize("dtype", [*DTYPES, "float32"])
@pytest.mark.parametrize("name,kind,opts", EXTREME, ids=[f"{n}-{k}-{len(o)}" for n, k, o in EXTREME])
def test_logits_of_1e4_give_finite_values_and_gradients(name, kind, opts, dtype):
    """Logits of +-1e4 (representable in both low-precision dtypes): finite values and
    gradients on JAX; on torch finite gradients, and the value is finite where torch's own
    function's is (its float16 cross-entropy with label smoothing overflows to inf: the
    smoothing term sums -log p ~ 2e4 over the classes in float16; documented)."""
    t = _target(kind)
    # JAX
    jx = jnp.asarray(LOGITS).astype(dtype)
    jt = jnp.asarray(t).astype(dtype) if t.dtype.kind == "f" else t
    loss = multiloss.get(name, "jax", **opts)
    v, g = jax.value_and_grad(lambda x: loss(x, jt).astype(jnp.float32))(jx)
    assert loss(jx, jt).dtype == jnp.dtype(dtype) and g.dtype == jnp.dtype(dtype)
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g, np.float32)))
    ref = float(multiloss.get(name, "jax", **opts)(jx.astype(jnp.float32),
                                                 jnp.asarray(jt).astype(jnp.float32)
                                                 if t.dtype.kind == "f" else jt))
    assert abs(float(v) - ref) <= JAX_TOL.get(dtype, 1e-6) * max(abs(ref), 1.0)
    # torch
    tx = torch.tensor(LOGITS).to(getattr(torch, dtype)).requires_grad_(True)
    tt = torch.tensor(t).to(getattr(torch, dtype)) if t.dtype.kind == "f" else torch.tensor(t)
    tv = multiloss.get(name, "torch", **opts)(tx, tt)
    (tg,) = torch.autograd.grad(tv, tx)
    assert tv.dtype == tg.dtype == getattr(torch, dtype)
    assert torch.isfinite(tg).all()
    spec = multiloss.resolve(name)
    topts = {k: (torch.tensor(v).to(tx.dtype) if isinstance(v, np.ndarray) else v)
             for k, v in spec.bind(opts).items()}
    own = spec.reference(torch, [tx.detach(), tt], topts, "mean")
    # finite wherever torch's own function is (and, with class weights, where the contract's
    # float32 reduction replaces torch's float16 one, also where torch's is not)
    assert bool(torch.isfinite(tv)) or not bool(torch.isfinite(own)), (float(tv), float(own))
    if dtype != "float16" or not opts.get("label_smoothing"):
        assert bool(torch.isfinite(tv))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bfloat16_value_checks_read_values(backend):
    """Value checks read bfloat16 arguments (gaussian_nll's variance; NumPy has no
    bfloat16): a negative variance raises, as in float32."""
    x = np.zeros((3, 2), np.float32)
    var = np.full((3, 2), -1.0, np.float32)
    loss = multiloss.get("gaussian_nll", backend)
    if backend == "jax":
        args = [jnp.asarray(a, jnp.bfloat16) for a in (x, x, var)]
    else:
        args = [torch.from_numpy(a).bfloat16() for a in (x, x, var)]
    with pytest.raises(ValueError, match=r"^var"):
        loss(*args)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_mixed_low_and_full_precision_promote(backend):
    """bfloat16 logits with float32 targets: float32 (the promotion of both backends)."""
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    t = np.random.default_rng(1).uniform(size=(4, 3)).astype(np.float32)
    loss = multiloss.get("binary_cross_entropy_with_logits", backend)
    if backend == "jax":
        out = loss(jnp.asarray(x, jnp.bfloat16), t)
    else:
        out = loss(torch.from_numpy(x).bfloat16(), torch.from_numpy(t))
    assert str(out.dtype).replace("torch.", "") == "float32"


def _upcast_cases():
    return [pytest.param(spec, id=spec.name) for spec in testing.all_specs()
            if spec.family != "keras"]


@pytest.mark.parametrize("spec", _upcast_cases())
def test_result_dtype_of_low_precision_as_the_reference(spec):
    """float16 inputs: the result's dtype is the reference's on both backends (float32 where
    the defining library upcasts: torchvision's box losses, TRL's ORPO), and where the
    reference's result is float32, its number: that of its float32 computation on the same
    (rounded) inputs within float32's tolerance, and that of the float16 call within the
    rounding the reference itself does in float16 before it upcasts (none for torchvision,
    which converts its inputs first; TRL's ORPO trainer upcasts after its float16 log-probs:
    linear_orpo computes those in float32) (issue 14, item 3: giou of float16 pixel boxes;
    issue 17: linear_orpo)."""
    _as_the_reference(spec, _grid(spec)[0])


def _jax(t):
    """A torch tensor as a JAX array of its dtype (NumPy has no bfloat16: exact via float32)."""
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy()).astype(jnp.bfloat16)
    return jnp.asarray(t.numpy())


def _as_the_reference(spec, sample, tdt=torch.float16):
    """The check of test_result_dtype_of_low_precision_as_the_reference for one sample with
    its floating inputs in ``tdt``; returns the errors measured {backend: (error against
    the reference's float32 computation, error against its own low-precision call)}."""
    errors = {}
    tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
    tensors = [t.to(tdt) if t.is_floating_point() else t for t in tensors]
    opts = testing._reference_options(torch, spec, sample, tdt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            ref = spec.reference(torch, tensors, opts, "none")
        except NotImplementedError:  # no CPU kernel in torch (test_low_precision_against_...)
            assert spec.name in testing.TORCH_CPU_NO_LOW_PRECISION
            return errors
        ref_dtype = str(ref.dtype).replace("torch.", "")
        ref = ref.detach().double().numpy()
        ref32 = None
        if ref_dtype == "float32":  # the reference's float32 computation, same rounded values
            up = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point()
                      else v) for k, v in opts.items()}
            ref32 = spec.reference(torch, [t.float() if t.is_floating_point() else t
                                           for t in tensors], up, "none")
            ref32 = ref32.detach().double().numpy()
            own = testing.rel_error(ref, ref32, 1.0)  # the reference's own float16 rounding
        options = {**sample.options, "reduction": "none"}
        for backend in ("jax", "torch"):
            loss = multiloss.get(spec.name, backend, **options)
            if backend == "jax":
                out = loss(*[_jax(t) for t in tensors])
                got = np.asarray(out, np.float64)
            else:
                out = loss(*tensors)
                got = out.detach().double().numpy()
            assert str(out.dtype).replace("torch.", "") == ref_dtype, (backend, out.dtype)
            if ref32 is not None:
                tol = testing.TOLERANCE["float32"]
                err = testing.rel_error(got, ref32, 1.0)
                assert err <= tol, (backend, err)
                err2 = testing.rel_error(got, ref, 1.0)
                assert err2 <= own + tol, (backend, err2, own)
                errors[backend] = (err, err2, own)

    return errors


#: TRL 1.16's DPO divides ipo's and sigmoid_norm's scores by completion_mask.sum(dim=1).clamp(
#: min=1.0), a float32 tensor from the integer mask: with either among the loss types its
#: float16/bfloat16 loss is float32 (LossSpec.converts of the bound options, issue 17); the
#: other loss types keep the inputs' dtype
DPO_FLOAT32 = [("dpo", "ipo", "float16"), ("dpo", "sigmoid_norm", "bfloat16"),
               ("dpo", ["hinge", "sigmoid_norm"], "float16"), ("linear_dpo", "ipo", "float16"),
               ("linear_dpo", "sigmoid_norm", "bfloat16"), ("dpo", "sigmoid", "float16"),
               ("linear_dpo", ["sigmoid", "bco_pair"], "float16")]


@pytest.mark.parametrize("name,loss_type,dtype", [
    pytest.param(*c, id=f"{c[0]}-{c[1]}-{c[2]}") for c in DPO_FLOAT32])
def test_dpo_float32_count_as_trl(name, loss_type, dtype):
    """float16/bfloat16 inputs of dpo and linear_dpo: TRL's result dtype on both backends
    (float32 with ipo or sigmoid_norm, the inputs' otherwise), and where float32, TRL's
    float32 computation's number within float32's tolerance."""
    spec = multiloss.resolve(name)
    sample = _grid(spec)[0]
    options = {k: v for k, v in sample.options.items()
               if k not in ("linear_bias", "ref_linear_bias", "loss_weights")}
    options.update(loss_type=loss_type, reduction="none")
    sample = sample._replace(options=options)
    tdt = getattr(torch, dtype)
    tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
    ref = spec.reference(torch, [t.to(tdt) if t.is_floating_point() else t for t in tensors],
                         spec.bind(options), "none")
    upcast = any(t in ("ipo", "sigmoid_norm") for t in np.atleast_1d(loss_type))
    assert ref.dtype == (torch.float32 if upcast else tdt)  # TRL's
    _as_the_reference(spec, sample, tdt)


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("name", ["iou", "giou", "diou", "ciou"])
def test_float16_pixel_boxes_as_torchvision(backend, name):
    """torchvision converts float16 boxes to float32 (_upcast_non_float): the areas of
    pixel-scale boxes overflow float16. giou of these boxes is 0.2109 in torchvision (float32);
    computed in float16 it was NaN."""
    b1 = np.array([[100, 100, 400, 380]], np.float16)
    b2 = np.array([[120, 90, 420, 400]], np.float16)
    want = multiloss.get(name, "torch", reduction="mean")(
        torch.from_numpy(b1.astype(np.float32)), torch.from_numpy(b2.astype(np.float32)))
    args = (b1, b2) if backend == "jax" else (torch.from_numpy(b1), torch.from_numpy(b2))
    out = multiloss.get(name, backend, reduction="mean")(*args)
    assert str(out.dtype).replace("torch.", "") == "float32"
    assert float(out) == pytest.approx(float(want), rel=1e-6)
    if name == "giou":
        assert float(out) == pytest.approx(0.2109, abs=1e-4)


def _table():  # pragma: no cover - the documentation's table
    print("| loss | dtype | result dtype | torch's own function | torch backend | JAX backend | cases |")
    print("|---|---|---|---|---|---|---|")
    for spec in testing.all_specs():
        grid = _grid(spec)
        for dtype in DTYPES:
            rs = [testing.compare_low_precision(spec, s, dtype) for s in grid]
            cells = []
            dts = sorted({v for r in rs for k, v in r.dtypes.items()
                          if k != "reference" and not v.startswith("raise")})
            for who in ("reference", "torch", "jax"):
                errs = [r.errors[who] for r in rs if who in r.errors and r.finite_match[who]]
                raised = [r.dtypes[who] for r in rs if r.dtypes[who].startswith("raise")
                          and "LookupError" not in r.dtypes[who]]
                nonfinite = sum(1 for r in rs if who in r.finite_match
                                and not r.finite_match[who])
                if raised and not errs:
                    cells.append(raised[0].replace("raise: ", "").split(":")[0])
                    continue
                eps = testing.low_precision_eps(dtype)
                cell = f"{max(errs):.1e} ({max(errs) / eps:.2f} ulp)" if errs else "-"
                if nonfinite:
                    cell += f", {nonfinite} non-finite"
                cells.append(cell)
            print(f"| {spec.name} | {dtype} | {', '.join(dts)} | " + " | ".join(cells)
                  + f" | {len(rs)} |", flush=True)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    jax.config.update("jax_enable_x64", True)
    _table()
    sys.exit(0)
