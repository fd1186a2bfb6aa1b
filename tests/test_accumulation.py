"""Gradient accumulation (docs/distributed.md): with the denominators of all k micro-batches
summed first (``loss.denominator``) and passed to each as ``normalizer``, the micro-batch
losses add up to the full batch's loss and their gradients to its gradient, on both backends,
for every loss (its "mean" with a sample weight) and for token-level cross-entropy with
padding (ignored targets), class weights and label smoothing in every reduction. float64, to
1e-12 relative, with 1, 2, 4 and 8 micro-batches.

torch runs every case; JAX runs the hand-made heterogeneous batches, which take every branch
of the one ``reduce`` that ``normalizer`` goes through (a class-weighted mean with label
smoothing, ctc's per-sequence scale, "sum_over_batch_size"'s count, "batchmean", "sum").
MULTILOSS_ACCUMULATION_ALL=1 adds the one-case-per-loss batches on JAX too (each micro-batch
shape is one more compilation: about a minute)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

TOL = 1e-12
KS = (1, 2, 4, 8)
CASES = [c for c in testing.data_parallel_cases(8) if
         c[2].options.get("reduction", "mean") != "none"]
HETEROGENEOUS = {f"{name}:{cid}" for name, cid, *_ in testing._heterogeneous_cases()}
ALL_K = os.environ.get("MULTILOSS_ACCUMULATION_ALL") == "1"
PARAMS = [
    pytest.param(case, backend, k, id=f"{case[0]}-{backend}-k{k}")
    for case in CASES
    for backend in ("jax", "torch")
    for k in KS
    if backend == "torch" or ALL_K or case[0] in HETEROGENEOUS
]


def _split(spec, sample, layout, k):
    n = testing.batch_size(spec, sample)
    return [testing.take_rows(spec, sample, layout, rows)
            for rows in np.array_split(np.arange(n), k)]


def _dividing(sample):
    return sample.options.get("reduction", "mean") in ("mean", "sum_over_batch_size",
                                                       "batchmean")


_JAX = {}  # case id -> (loss, jitted value_and_grad): compiled once per shape, kept for every k


def _jax_fns(spec, sample):
    if sample.id not in _JAX:
        pos = testing._diff_positions(spec, sample)
        loss = multiloss.get(spec.name, "jax", **sample.options)

        def f(diff, inputs, sw, normalizer=None):
            args = list(inputs)
            for i, v in zip(pos, diff):
                args[i] = v
            return loss(*args, sample_weight=sw, normalizer=normalizer)

        _JAX[sample.id] = loss, jax.jit(jax.value_and_grad(f))
    return _JAX[sample.id]


def _accumulate_jax(spec, sample, layout, k):
    """(full value, full grads, accumulated value, accumulated grads), the gradients w.r.t.
    every differentiable input, micro-batch gradients put back in their rows."""
    pos = testing._diff_positions(spec, sample)
    loss, vg = _jax_fns(spec, sample)
    inputs = [np.asarray(x) for x in sample.inputs]
    full_v, full_g = vg([inputs[i] for i in pos], inputs, sample.sample_weight)
    micro = _split(spec, sample, layout, k)
    norm = None
    if _dividing(sample):  # first pass: every micro-batch's denominator (no gradient)
        norm = sum(loss.denominator(*m.inputs, sample_weight=m.sample_weight) for m in micro)
    total, grads = 0.0, [[] for _ in pos]
    for m in micro:
        v, g = vg([np.asarray(m.inputs[i]) for i in pos], m.inputs, m.sample_weight, norm)
        total = total + v
        for j, gj in enumerate(g):
            grads[j].append(np.asarray(gj))
    axes = layout[0]
    acc = [np.concatenate(gs, axis=axes[i]) if axes[i] is not None else sum(gs)
           for i, gs in zip(pos, grads)]
    return np.asarray(full_v), [np.asarray(g) for g in full_g], np.asarray(total), acc


def _accumulate_torch(spec, sample, layout, k):
    pos = testing._diff_positions(spec, sample)
    loss = multiloss.get(spec.name, "torch", **sample.options)

    def tensors(s):
        xs = [torch.from_numpy(np.array(x)) for x in s.inputs]
        for i in pos:
            xs[i].requires_grad_(True)
        sw = None if s.sample_weight is None else torch.from_numpy(np.array(s.sample_weight))
        return xs, sw

    xs, sw = tensors(sample)
    full = loss(*xs, sample_weight=sw)
    full_g = torch.autograd.grad(full, [xs[i] for i in pos]) if pos else []
    micro = [tensors(m) for m in _split(spec, sample, layout, k)]
    norm = None
    if _dividing(sample):
        norm = sum(loss.denominator(*[x.detach() for x in m], sample_weight=s)
                   for m, s in micro)
    total = 0.0
    for m, s in micro:  # backward per micro-batch: gradients accumulate in .grad
        part = loss(*m, sample_weight=s, normalizer=norm)
        if pos:
            part.backward()
        total = total + part.detach()
    axes = layout[0]
    acc = [torch.cat([m[i].grad for m, _ in micro], dim=axes[i]) if axes[i] is not None
           else sum(m[i].grad for m, _ in micro) for i in pos]
    return (full.detach().numpy(), [g.numpy() for g in full_g], total.numpy(),
            [a.numpy() for a in acc])


@pytest.mark.parametrize("case,backend,k", PARAMS)
def test_micro_batches_reproduce_the_full_batch(case, backend, k):
    _, spec, sample, layout = case
    run = _accumulate_jax if backend == "jax" else _accumulate_torch
    full_v, full_g, acc_v, acc_g = run(spec, sample, layout, k)
    err = testing.rel_error(acc_v, full_v)
    assert err <= TOL, f"value error {err:.2e}"
    assert len(acc_g) == len(full_g) == len(testing._diff_positions(spec, sample))
    for i, (a, f) in enumerate(zip(acc_g, full_g, strict=True)):
        err = testing.rel_error(a, f)
        assert err <= TOL, f"gradient {i} error {err:.2e}"


def test_token_level_padding_is_the_point():
    """Without the normalizer, the mean of the micro-batch means is not the full batch's
    mean when micro-batches hold different numbers of padded (ignored) tokens."""
    _, spec, sample, layout = next(c for c in CASES if c[0] == "cross_entropy:tokens-plain-mean")
    loss = multiloss.get("cross_entropy", "jax")
    full = float(loss(*sample.inputs, sample_weight=sample.sample_weight))
    micro = _split(spec, sample, layout, 4)
    naive = np.mean([float(loss(*m.inputs, sample_weight=m.sample_weight)) for m in micro])
    norm = sum(loss.denominator(*m.inputs, sample_weight=m.sample_weight) for m in micro)
    exact = sum(float(loss(*m.inputs, sample_weight=m.sample_weight, normalizer=norm))
                for m in micro)
    assert abs(naive - full) > 1e-3 * abs(full)
    assert exact == pytest.approx(full, rel=1e-13)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_denominator_per_reduction(backend):
    """``denominator`` is what the reduction divides by: the summed effective weights for
    "mean", the number of elements that count for "sum_over_batch_size", the batch size for
    "batchmean"; "sum" and "none" have none."""
    x = np.random.default_rng(0).normal(size=(4, 3))
    t = np.array([0, -100, 2, 1])
    w = np.array([0.5, 2.0, 1.0])
    s = np.array([1.0, 3.0, 0.5, 2.0])
    wrap = (lambda a: a) if backend == "jax" else torch.as_tensor

    def den(**opts):
        d = multiloss.get("cross_entropy", backend, weight=w, **opts).denominator(
            wrap(x), wrap(t), sample_weight=wrap(s))
        return float(np.asarray(d))

    assert den() == pytest.approx(1.0 * 0.5 + 0.5 * 1.0 + 2.0 * 2.0)
    assert den(reduction="sum_over_batch_size") == 3.0
    kl = multiloss.get("kl_div", backend, reduction="batchmean")
    assert float(np.asarray(kl.denominator(wrap(x), wrap(x)))) == 4.0
    for red in ("sum", "none"):
        with pytest.raises(ValueError, match=rf"^denominator: reduction='{red}' has no "
                           r"denominator"):
            multiloss.get("cross_entropy", backend, reduction=red).denominator(wrap(x), wrap(t))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_normalizer_checks(backend):
    x = np.random.default_rng(0).normal(size=(4, 3))
    t = np.array([0, 1, 2, 1])
    wrap = (lambda a: a) if backend == "jax" else torch.as_tensor
    ce = multiloss.get("cross_entropy", backend)
    with pytest.raises(ValueError, match=r"^normalizer: expected a scalar, got shape \(2,\)"):
        ce(wrap(x), wrap(t), normalizer=wrap(np.ones(2)))
    with pytest.raises(TypeError, match=r"^normalizer: expected a real number"):
        ce(wrap(x), wrap(t), normalizer=wrap(np.array(1 + 2j)))
    with pytest.raises(ValueError, match=r"^normalizer: replaces the denominator of reduction "
                       r"'mean', 'sum_over_batch_size' or 'batchmean'; reduction='sum' has none"):
        multiloss.get("cross_entropy", backend, reduction="sum")(wrap(x), wrap(t), normalizer=2.0)
    # a normalizer of 0 is a mean over nothing: NaN (or 0), gradient 0
    for empty, want in (("nan", np.nan), ("zero", 0.0)):
        loss = multiloss.get("cross_entropy", backend, empty_reduction=empty)
        if backend == "jax":
            v, g = jax.value_and_grad(lambda z, loss=loss: loss(z, t, normalizer=0.0))(
                jnp.asarray(x))
        else:
            z = torch.tensor(x, requires_grad=True)
            v = loss(z, torch.as_tensor(t), normalizer=0.0)
            (g,) = torch.autograd.grad(v, z)
            v, g = v.detach(), g
        np.testing.assert_equal(float(np.asarray(v)), want)
        assert not np.asarray(g).any()
    # the same normalizer as the batch's own denominator: the batch's own mean
    v = ce(wrap(x), wrap(t), normalizer=4)
    assert float(np.asarray(v)) == pytest.approx(float(np.asarray(ce(wrap(x), wrap(t)))),
                                                 rel=1e-14)
