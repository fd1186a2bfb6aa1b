"""The fused-linear losses' second differentiation path, ``grad_in_forward=False`` (issue 17):
the chunks in a rematerialised loop differentiated by the framework's own autodiff (JAX: a
``lax.scan`` of a ``jax.checkpoint``-ed body, no custom derivative; torch: an autograd
function in ``setup_context`` form whose backward recomputes each chunk under
``torch.func.vjp``), so that forward mode, second order and torch.func work.

Each fused form of the registry (the losses with a ``grad_in_forward`` option) on one float64
sample with a sample weight (a cotangent that differs per unit), against the reference (TRL /
torchtune / Liger's definition on the materialised logits, torch autograd): the value, the
gradients, the directional derivative and the Hessian-vector product
(``torch.autograd.functional.hvp``), to 1e-10.

- torch, every form: ``torch.func.grad``, ``torch.func.jvp``, ``torch.autograd.forward_ad``,
  Hessian-vector products by ``torch.func`` and by double backward, ``vmap`` of the value and
  of the gradient (per-sample gradients); the default path under ``torch.func.grad`` raises
  our error naming the option.
- JAX: value, gradient, ``jax.jvp`` and the Hessian-vector product (``jvp`` of ``grad``) in
  one transform; linear_dpo inside ``jax.shard_map``; the default path's error under
  ``jax.jvp`` (and, long run, its Hessian-vector product, forward over its custom_vjp). CI
  runs a subset of the forms (each JAX check compiles, ~1.5 s); ``MULTILOSS_LONG=1`` runs
  every form, the default path's Hessian-vector products and torch.compile:

      MULTILOSS_LONG=1 python -m pytest -q -p no:randomly tests/test_fused_linear_modes.py

- memory: XLA's compiled temporaries stay a fraction of the logits; torch's autograd saves no
  logits.

The registry's parity grid runs one case per fused form with ``grad_in_forward=False``
against the references in float64 and float32, on both backends."""

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
#: (linear_dpo, a pair with a reference model: test_jax_second_path_under_shard_map.)
JAX_CI = ("linear_grpo", "linear_kto", "linear_generalized_jsd")
#: The default path under JAX: our error under jax.jvp on one form in CI (one engine, one
#: wrapper serve all); with MULTILOSS_LONG=1 on every form, and its Hessian-vector product
#: (forward over its custom_vjp) against the reference.
DEFAULT_PATH_CI = ("linear_generalized_jsd",)


@functools.cache
def _reference(name, mean=False):
    """(sample, positions, primals, tangents, cotangent, value, gradients, directional
    derivative, Hessian-vector product) of s = sum(ct * loss) for the reference: TRL /
    torchtune / Liger's definition on the materialised logits, in torch."""
    spec = multiloss.resolve(name)
    sample, pos, primals, tangents = _problem(spec)
    if mean:  # the same sample with reduction "mean" and no sample weight
        sample = sample._replace(options={**sample.options, "reduction": "mean"},
                                 sample_weight=None)
    tt = [torch.from_numpy(np.array(a)) for a in sample.inputs]
    tsw = None if mean else torch.from_numpy(np.array(sample.sample_weight))
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
        # the default path: forward mode alone raises our error naming the option; forward
        # over reverse works (its custom_vjp's bwd is differentiable JAX; a compile: LONG)
        jd = multiloss.get(spec.name, backend="jax", **_opts(sample, True))
        fd = _scalar(sample, pos, lambda inputs: jd(*inputs, sample_weight=sw), jnp.asarray(ct))
        with pytest.raises(TypeError, match="grad_in_forward=False"):
            jax.jvp(fd, tuple(primals), tuple(tangents))
    if LONG:
        hv0 = jax.jvp(jax.grad(fd, argnums), tuple(primals), tuple(tangents))[1]
        for a, b in zip(hv0, ref_hvp):
            _rel(a, b)


def test_jax_second_path_under_shard_map():
    """linear_dpo, grad_in_forward=False, made with axis_name, inside jax.shard_map (a
    one-device mesh type-checks the varying values, check_vma): value, gradient and the
    Hessian-vector product (forward over reverse inside the map) are the reference's."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    sample, pos, primals, tangents, ct, ref_v, ref_g, ref_jv, ref_hvp, _ = _reference(
        "linear_dpo", mean=True)
    assert pos == [0, 1]  # hidden states (rows), head
    loss = multiloss.get("linear_dpo", backend="jax", axis_name="b", **_opts(sample, False))

    def f(x, w):
        return loss(x, w, *sample.inputs[2:])

    def both(x, w, tx, tw):
        (v, g), (_, hv) = jax.jvp(lambda x, w: jax.value_and_grad(f, (0, 1))(x, w), (x, w),
                                  (tx, tw))
        return v, g, hv

    mesh = Mesh(np.array(jax.devices()[:1]), ("b",))
    rows = P("b")
    v, g, hv = jax.shard_map(both, mesh=mesh, in_specs=(rows, P(), rows, P()),
                             out_specs=(P(), (rows, P()), (rows, P())))(*primals, *tangents)
    _rel(v, ref_v)
    for a, b in zip((*g, *hv), (*ref_g, *ref_hvp)):
        _rel(a, b)


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
    with torch.autograd.forward_ad.dual_level():  # plain forward AD (not torch.func)
        dual = [torch.autograd.forward_ad.make_dual(p, t) for p, t in zip(tp, tv)]
        _rel(torch.autograd.forward_ad.unpack_dual(ts(*dual)).tangent, ref_jv)
    with pytest.raises(RuntimeError, match="grad_in_forward=False"):
        torch.func.grad(torch_s(True), argnums)(*tp)


@pytest.mark.skipif(not LONG, reason="torch.compile costs ~4 s: MULTILOSS_LONG=1 runs it")
def test_torch_second_path_compiles():
    """torch.compile(fullgraph=True) of a training step through linear_dpo,
    grad_in_forward=False (the autograd function without its jvp under Dynamo): the eager
    value and gradients."""
    sample, pos, primals, tangents, ct, ref_v, ref_g, ref_jv, ref_hvp, _ = _reference(
        "linear_dpo", mean=True)
    loss = multiloss.get("linear_dpo", backend="torch", **_opts(sample, False))
    rest = [torch.from_numpy(np.array(a)) for a in sample.inputs[2:]]

    def step(x, w):
        return loss(x, w, *rest)

    torch._dynamo.reset()
    leaves = [torch.from_numpy(p).requires_grad_(True) for p in primals]
    out = torch.compile(step, fullgraph=True, backend="aot_eager")(*leaves)
    grads = torch.autograd.grad(out, leaves)
    _rel(out.detach(), ref_v)
    for a, b in zip(grads, ref_g):
        _rel(a, b)


@pytest.mark.skipif(not LONG, reason="torch.compile costs ~10 s: MULTILOSS_LONG=1 runs it")
@pytest.mark.parametrize("name", ["linear_dpo", "linear_forward_kl"])
def test_torch_default_path_compiles_without_fullgraph(name):
    """torch.compile (fullgraph=False) of the default path (grad_in_forward=True): the eager
    value and gradients, the chunks running eagerly behind a graph break; fullgraph=True is
    refused by Dynamo (docs/fused-linear.md, "Transformations")."""
    sample, pos, primals, tangents, ct, ref_v, ref_g, ref_jv, ref_hvp, _ = _reference(
        name, mean=True)
    loss = multiloss.get(name, backend="torch", **_opts(sample, True))
    rest = [torch.from_numpy(np.array(a)) for a in sample.inputs[2:]]

    def step(x, w):
        return loss(x, w, *rest)

    torch._dynamo.reset()
    leaves = [torch.from_numpy(p).requires_grad_(True) for p in primals]
    out = torch.compile(step, backend="aot_eager")(*leaves)
    grads = torch.autograd.grad(out, leaves)
    _rel(out.detach(), ref_v)
    for a, b in zip(grads, ref_g):
        _rel(a, b)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(step, fullgraph=True, backend="aot_eager")(*leaves)


def _dpo_problem(pairs=32, t=8, d=16, v=8192):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2 * pairs, t, d)) * 0.5).astype(np.float32)
    w = (rng.normal(size=(v, d)) * 0.5).astype(np.float32)
    lab = rng.integers(0, v, size=(2 * pairs, t))
    lab[:, :2] = -100
    return x, w, lab, x + 0.1, w + 0.1


def test_jax_second_path_keeps_the_logits_out_of_memory():
    """XLA's compiled temporaries of jax.grad (and, with MULTILOSS_LONG=1, of a Hessian-vector
    product, forward over reverse) of linear_dpo, grad_in_forward=False, one pair per chunk:
    under a quarter of the batch's logits (16 MiB; one pair's: 0.5 MiB; measured 1.6 and
    2.1 MiB: a chunk's temporaries and the head's gradient, 0.5 MiB)."""
    x, w, lab, rx, rw = (jnp.asarray(a) for a in _dpo_problem())
    loss = multiloss.get("linear_dpo", backend="jax", chunk_size=1, grad_in_forward=False)

    def f(x, w):
        return loss(x, w, lab, rx, rw)

    logits = x.shape[0] * x.shape[1] * w.shape[0] * 4
    hvp = lambda x, w: jax.jvp(jax.grad(f, (0, 1)), (x, w), (x, w))  # noqa: E731
    for g in (jax.grad(f, (0, 1)),) + ((hvp,) if LONG else ()):  # each compile ~1 s
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
