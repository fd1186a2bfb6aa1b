"""The fused-linear losses' second differentiation path, ``grad_in_forward=False`` (issue 17):
the chunks in a rematerialised loop differentiated by the framework's own autodiff (JAX: a
``lax.scan`` of a ``jax.checkpoint``-ed body, no custom derivative; torch: an autograd
function in ``setup_context`` form whose backward recomputes each chunk under
``torch.func.vjp``), so that forward mode, second order and torch.func work.

For every fused form of the registry (the losses with a ``grad_in_forward`` option), on one
float64 sample with a sample weight (a cotangent that differs per unit, so that the default
path recomputes its chunks): the second path's value and gradients equal the default path's
(1e-10); ``jax.jvp`` / ``torch.func.jvp`` equal the reverse-mode directional derivative;
the Hessian-vector products (JAX: ``jvp`` of ``grad`` on both paths; torch: ``torch.func`` and
double backward) equal the reference's (TRL / torchtune / Liger's definition on the
materialised logits, ``torch.autograd.functional.hvp``); ``torch.func.grad`` and ``vmap``
(values and per-sample gradients) equal eager autograd. The default path under
``jax.jvp`` and ``torch.func.grad`` raises our error naming the option. The registry's parity
grid runs one case per fused form with ``grad_in_forward=False`` against the references in
float64 and float32; tests/test_fused_linear.py checks that the second path keeps the logits
out of memory."""

from __future__ import annotations

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

testing.enable_x64()
TOL = 1e-10
LONG = os.environ.get("MULTILOSS_LONG") == "1"

FUSED = [s for s in testing.all_specs() if any(o.name == "grad_in_forward" for o in s.options)]


def _sample(spec):
    """The first float64 sample with a sample weight (a per-unit cotangent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return next(s for s in testing.samples_for(spec, "float64")
                    if s.sample_weight is not None)


def _opts(sample, grad_in_forward):
    return {**sample.options, "grad_in_forward": grad_in_forward}


def _rel(ours, ref):
    err = testing.rel_error(np.asarray(ours), np.asarray(ref))
    assert err <= TOL, err
    return err


def _problem(spec):
    sample = _sample(spec)
    pos = testing._diff_positions(spec, sample)
    primals = [np.asarray(sample.inputs[i], np.float64) for i in pos]
    rng = np.random.default_rng(7)
    tangents = [rng.normal(size=p.shape) for p in primals]
    return sample, pos, primals, tangents


def _scalar(sample, pos, call, ct):
    """s(*diff) = sum(ct * loss(inputs with diff at pos))."""
    def s(*diff):
        inputs = list(sample.inputs)
        for i, v in zip(pos, diff):
            inputs[i] = v
        return (call(inputs) * ct).sum()
    return s


#: JAX compiles each check (~1.5 s a form): CI runs the forms that cover every input kind of
#: the engine (a pair with a reference model, a sequence with float extras, kto's scalar kl,
#: a distillation form with a teacher); MULTILOSS_LONG=1 runs every fused form. The torch
#: checks run on every form.
JAX_CI = ("linear_dpo", "linear_grpo", "linear_kto", "linear_generalized_jsd")
#: The default path under JAX (forward over its custom_vjp; our error under jax.jvp): one
#: form in CI (one engine, one wrapper serve all), every form with MULTILOSS_LONG=1.
DEFAULT_PATH_CI = ("linear_dpo",)


@functools.cache
def _reference(name):
    """(sample, positions, primals, tangents, cotangent, value, gradients, directional
    derivative, Hessian-vector product) of s = sum(ct * loss) for the reference: TRL /
    torchtune / Liger's definition on the materialised logits, in torch."""
    spec = multiloss.resolve(name)
    sample, pos, primals, tangents = _problem(spec)
    tt = [torch.from_numpy(np.array(a)) for a in sample.inputs]
    tsw = torch.from_numpy(np.array(sample.sample_weight))
    shape = tuple(testing.reference_value(torch, spec, sample, tt, tsw).shape)
    ct = testing._cotangent(sample, shape, np.float64)
    tct = torch.from_numpy(np.array(ct))

    def ref_s(*diff):
        inputs = list(tt)
        for i, v in zip(pos, diff):
            inputs[i] = v
        return (testing.reference_value(torch, spec, sample, inputs, tsw) * tct).sum()

    tp = tuple(torch.from_numpy(p) for p in primals)
    tv = tuple(torch.from_numpy(t) for t in tangents)
    leaves = [p.clone().requires_grad_(True) for p in tp]
    value = ref_s(*leaves)
    grads = [g.numpy() for g in torch.autograd.grad(value, leaves)]
    hvp = [h.numpy() for h in torch.autograd.functional.hvp(ref_s, tp, tv)[1]]
    jv = sum(np.vdot(g, t) for g, t in zip(grads, tangents))
    return (sample, pos, primals, tangents, ct, value.detach().numpy(), grads, jv, hvp, ref_s)


def _jax_params():
    return [pytest.param(s, id=s.name) for s in FUSED if LONG or s.name in JAX_CI]


@pytest.mark.parametrize("spec", _jax_params())
def test_jax_second_path(spec):
    """grad_in_forward=False on JAX: value, gradient, jax.jvp and the Hessian-vector product
    (jvp of grad) in one transform, against the reference's; the default path's
    Hessian-vector product too, and its jax.jvp raises our error."""
    sample, pos, primals, tangents, ct, ref_v, ref_g, ref_jv, ref_hvp, _ = _reference(
        spec.name)
    sw = sample.sample_weight
    argnums = tuple(range(len(pos)))
    jl = multiloss.get(spec.name, backend="jax", **_opts(sample, False))
    f = _scalar(sample, pos, lambda inputs: jl(*inputs, sample_weight=sw), jnp.asarray(ct))
    (v, g), (jv, hv) = jax.jit(lambda p, t: jax.jvp(
        lambda *p: jax.value_and_grad(f, argnums)(*p), p, t))(tuple(primals), tuple(tangents))
    _rel(v, ref_v)
    for a, b in zip(g, ref_g):
        _rel(a, b)
    _rel(jv, ref_jv)
    for a, b in zip(hv, ref_hvp):
        _rel(a, b)
    if LONG or spec.name in DEFAULT_PATH_CI:
        # the default path: forward over reverse works (its custom_vjp's bwd is differentiable
        # JAX); forward mode alone raises our error naming the option
        jd = multiloss.get(spec.name, backend="jax", **_opts(sample, True))
        fd = _scalar(sample, pos, lambda inputs: jd(*inputs, sample_weight=sw), jnp.asarray(ct))
        hv0 = jax.jvp(jax.grad(fd, argnums), tuple(primals), tuple(tangents))[1]
        for a, b in zip(hv0, ref_hvp):
            _rel(a, b)
        with pytest.raises(TypeError, match="grad_in_forward=False"):
            jax.jvp(fd, tuple(primals), tuple(tangents))


@pytest.mark.parametrize("spec", FUSED, ids=[s.name for s in FUSED])
def test_torch_second_path(spec):
    """grad_in_forward=False on torch: torch.func.grad, torch.func.jvp, Hessian-vector
    products (torch.func's jvp of grad, and double backward), vmap of the value and of the
    gradient (per-sample gradients) over two batches, against the reference; the default
    path under torch.func.grad raises our error naming the option."""
    sample, pos, primals, tangents, ct, ref_v, ref_g, ref_jv, ref_hvp, ref_s = _reference(
        spec.name)
    tsw = torch.from_numpy(np.array(sample.sample_weight))
    tct = torch.from_numpy(np.array(ct))
    argnums = tuple(range(len(pos)))
    tp = tuple(torch.from_numpy(p) for p in primals)
    tv = tuple(torch.from_numpy(t) for t in tangents)

    def torch_s(grad_in_forward):
        loss = multiloss.get(spec.name, backend="torch",
                             **_opts(sample, grad_in_forward))
        return _scalar(sample, pos, lambda inputs: loss(
            *[a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a))
              for a in inputs], sample_weight=tsw), tct)

    ts = torch_s(False)
    value, grads = torch.func.grad_and_value(ts, argnums)(*tp)[::-1]
    _rel(value, ref_v)
    for a, b in zip(grads, ref_g):
        _rel(a, b)
    _rel(torch.func.jvp(ts, tp, tv)[1], ref_jv)
    fhv = torch.func.jvp(torch.func.grad(ts, argnums), tp, tv)[1]
    dhv = torch.autograd.functional.hvp(ts, tp, tv)[1]
    for a, b, r in zip(fhv, dhv, ref_hvp):
        _rel(a, r)
        _rel(b, r)
    x2 = torch.stack([tp[0], 0.8 * tp[0]])  # two batches of hidden states
    rest = tp[1:]
    vals = torch.func.vmap(lambda x: ts(x, *rest))(x2)
    vgrads = torch.func.vmap(torch.func.grad(lambda x: ts(x, *rest)))(x2)
    for k in range(2):
        xk = x2[k].clone().requires_grad_(True)
        val = ref_s(xk, *rest)
        _rel(vals[k], val.detach())
        _rel(vgrads[k], torch.autograd.grad(val, xk)[0])
    with pytest.raises(RuntimeError, match="grad_in_forward=False"):
        torch.func.grad(torch_s(True), argnums)(*tp)


def _dpo_problem(pairs=32, t=8, d=16, v=8192):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2 * pairs, t, d)) * 0.5).astype(np.float32)
    w = (rng.normal(size=(v, d)) * 0.5).astype(np.float32)
    lab = rng.integers(0, v, size=(2 * pairs, t))
    lab[:, :2] = -100
    return x, w, lab, x + 0.1, w + 0.1


def test_jax_second_path_keeps_the_logits_out_of_memory():
    """XLA's compiled temporaries of jax.grad and of a Hessian-vector product (forward over
    reverse) of linear_dpo, grad_in_forward=False, one pair per chunk: under a quarter of the
    batch's logits (16 MiB; one pair's: 0.5 MiB; measured 2.1 and 2.6 MiB: a chunk's
    temporaries and the head's gradient, 0.5 MiB)."""
    x, w, lab, rx, rw = (jnp.asarray(a) for a in _dpo_problem())
    loss = multiloss.get("linear_dpo", backend="jax", chunk_size=1, grad_in_forward=False)

    def f(x, w):
        return loss(x, w, lab, rx, rw)

    logits = x.shape[0] * x.shape[1] * w.shape[0] * 4
    for g in (jax.grad(f, (0, 1)),
              lambda x, w: jax.jvp(jax.grad(f, (0, 1)), (x, w), (x, w))):
        temp = jax.jit(g).lower(x, w).compile().memory_analysis().temp_size_in_bytes
        print(f"temporaries {temp / 2**20:.2f} MiB, logits {logits / 2**20:.2f} MiB")
        assert temp < logits / 4, (temp, logits)


def test_torch_second_path_saves_no_logits():
    """What autograd keeps for the backward of linear_dpo, grad_in_forward=False (every tensor
    saved by any node, through saved_tensors_hooks): the inputs and the heads, never a chunk's
    logits; the backward recomputes them (tests above: its gradients)."""
    x, w, lab, rx, rw = (torch.from_numpy(np.asarray(a))
                         for a in _dpo_problem(pairs=8, d=4, v=2048))
    x.requires_grad_(True)
    w.requires_grad_(True)
    loss = multiloss.get("linear_dpo", backend="torch", chunk_size=1, grad_in_forward=False)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = loss(x, w, lab, rx, rw)
    shapes = [tuple(t.shape) for t in saved]
    assert saved and all(s[-1] != w.shape[0] for s in shapes), shapes  # no (..., V) logits
    logits = x.shape[0] * x.shape[1] * w.shape[0]
    assert sum(t.numel() for t in saved) < logits / 4, shapes  # the inputs (and the head)
    out.backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
