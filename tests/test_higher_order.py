"""Forward-mode and higher-order autodiff of every loss (issue 15, item 4).

For a small float64 sample of each loss, the scalar ``s = sum(ct * loss(...))`` (``ct`` the
parity harness's fixed cotangent, so that every reduction and the sample weight are covered)
is differentiated twice w.r.t. every differentiable input:

- the reference Hessian is ``torch.autograd.functional.hessian`` of the spec's ``reference``
  (torch's own function, or the defining library's: a reference written on JAX is bridged to
  torch differentiably, ``multiloss.losses._common._bridge``), reduced by the contract
  (``multiloss.testing.reference_value``);
- JAX: ``jax.hessian`` (forward over reverse) and ``jax.jacrev(jax.jacrev(...))`` agree with
  it to 1e-10 relative; ``jax.jvp`` gives the reference gradient times the tangent, and the
  Hessian-vector product ``jax.jvp(jax.grad(...))`` the reference Hessian times it;
- torch: ``torch.autograd.functional.hessian`` of the multiloss module agrees with it too;
- where the reference has no second derivative (torch's ``ctc_loss`` has no double backward)
  our torch backend raises as torch does, and the JAX Hessian is checked against an
  independent twice-differentiable CTC written here in plain torch.

CI runs a representative subset (the fast paths with custom derivatives, a reference written
on JAX, a few plain losses); ``MULTILOSS_LONG=1`` runs every registered loss:

    MULTILOSS_LONG=1 python -m pytest -q -p no:randomly tests/test_higher_order.py -n 2
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

import multiloss
from multiloss import testing

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402

testing.enable_x64()

LONG = os.environ.get("MULTILOSS_LONG") == "1"
TOL = 1e-10
#: Largest number of differentiated entries of a sample (the Hessian is its square).
MAX_ENTRIES = 64

#: The losses CI runs: every JAX fast path with custom derivatives, the metric losses with a
#: custom normalisation, a reference written on JAX (Keras, optax) and plain losses.
CI_LOSSES = ("cross_entropy", "nll", "binary_cross_entropy_with_logits", "linear_cross_entropy",
             "ctc", "contrastive", "mse", "kl_div", "focal", "keras.categorical_crossentropy")


#: The fused-linear losses: their default path is a custom_vjp computing the gradient in the
#: forward (no jax.jvp); their second path (grad_in_forward=False) and the default path's
#: Hessian-vector products are tested against the reference in tests/test_fused_linear_modes.py
#: (their hidden states are larger than MAX_ENTRIES here).
REVERSE_ONLY = ("linear_dpo", "linear_cpo", "linear_simpo", "linear_orpo", "linear_kto",
                "linear_grpo", "linear_generalized_jsd", "linear_forward_kl", "linear_reverse_kl",
                "linear_symmetric_kl", "linear_tvd")


def _finite(a):
    return np.all(np.isfinite(np.asarray(a, dtype=np.float64)))


def _pick(spec):
    """A float64 sample with differentiable inputs of at most MAX_ENTRIES entries whose
    reference value and gradients are finite; preferring a sample weight and "mean"."""
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in testing.samples_for(spec, "float64"):
            pos = testing._diff_positions(spec, s)
            if not pos:
                continue
            size = sum(np.size(s.inputs[i]) for i in pos)
            if testing._sw_differentiable(spec, s):
                size += np.size(s.sample_weight)
            if size > MAX_ENTRIES or size == 0:
                continue
            if not all(_finite(s.inputs[i]) for i in pos):
                continue
            try:
                value, grads = testing.run_reference(spec, s)
            except Exception:  # noqa: BLE001 - a sample the reference refuses is not used
                continue
            if not (_finite(value) and all(_finite(g) for g in grads)) \
                    or not any(np.any(np.asarray(g) != 0) for g in grads):
                continue
            opts = spec.bind(s.options)
            score = (s.sample_weight is not None) + (opts["reduction"] == "mean") \
                + ("ignore" in s.id) - 3 * any(k in s.id for k in ("zero", "empty", "all-"))\
                - size / 1000
            if best is None or score > best[0]:
                best = (score, s)
    return None if best is None else best[1]


def _cases():
    out = []
    for spec in testing.all_specs():
        if not LONG and spec.name not in CI_LOSSES:
            continue
        out.append(pytest.param(spec, id=spec.name))
    return out


def _wrt(spec, sample):
    """(positions of the differentiated inputs, whether the sample weight is one of them)."""
    return testing._diff_positions(spec, sample), testing._sw_differentiable(spec, sample)


def _scalar_torch(spec, sample, fn):
    """s(*diff) = sum(ct * fn(inputs, sample_weight)) on torch tensors."""
    pos, with_sw = _wrt(spec, sample)

    def s(*diff):
        inputs = [torch.from_numpy(np.array(x)) for x in sample.inputs]
        for i, v in zip(pos, diff):
            inputs[i] = v
        sw = diff[len(pos)] if with_sw else (
            None if sample.sample_weight is None else torch.from_numpy(
                np.array(sample.sample_weight)))
        out = fn(inputs, sw)
        ct = torch.from_numpy(testing._cotangent(sample, tuple(out.shape), np.float64))
        return (out * ct).sum()

    return s


def _reference_fn(spec, sample):
    def fn(inputs, sw):
        return testing.reference_value(torch, spec, sample, inputs, sw)
    return _scalar_torch(spec, sample, fn)


def _torch_ours_fn(spec, sample):
    loss = multiloss.get(spec.name, backend="torch", **sample.options)
    return _scalar_torch(spec, sample, lambda inputs, sw: loss(*inputs, sample_weight=sw))


def _jax_fn(spec, sample):
    loss = multiloss.get(spec.name, backend="jax", **sample.options)
    pos, with_sw = _wrt(spec, sample)

    def s(*diff):
        inputs = list(sample.inputs)
        for i, v in zip(pos, diff):
            inputs[i] = v
        sw = diff[len(pos)] if with_sw else sample.sample_weight
        out = loss(*inputs, sample_weight=sw)
        return jnp.sum(out * testing._cotangent(sample, out.shape, np.float64))

    return s


def _primals(spec, sample):
    pos, with_sw = _wrt(spec, sample)
    return [np.asarray(sample.inputs[i], np.float64) for i in pos] + (
        [np.asarray(sample.sample_weight, np.float64)] if with_sw else [])


def _torch_hessian(fn, primals):
    ts = tuple(torch.from_numpy(np.array(p)) for p in primals)
    h = torch.autograd.functional.hessian(fn, ts)
    return [[np.asarray(h[i][j].detach().numpy()) for j in range(len(ts))]
            for i in range(len(ts))]


def _flat(blocks, primals):
    """The nested Hessian blocks as one (n, n) matrix."""
    sizes = [p.size for p in primals]
    return np.block([[np.asarray(blocks[i][j], np.float64).reshape(sizes[i], sizes[j])
                      for j in range(len(primals))] for i in range(len(primals))])


def _rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref)), "non-finite entries differ"
    ok = np.isfinite(ref)
    scale = np.max(np.abs(ref[ok]), initial=0.0)
    diff = np.max(np.abs(ours[ok] - ref[ok]), initial=0.0)
    return diff / scale if scale > 0 else diff


def _reference_hessian(spec, sample):
    """The reference Hessian, or the exception torch raises computing it."""
    primals = _primals(spec, sample)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _flat(_torch_hessian(_reference_fn(spec, sample), primals), primals)
    except RuntimeError as e:  # no double backward (torch's ctc_loss)
        return e


@pytest.mark.parametrize("spec", _cases())
def test_hessian_matches_reference(spec):
    if spec.name in REVERSE_ONLY:
        pytest.skip(f"{spec.name}: forward mode and second order of both differentiation "
                    f"paths: tests/test_fused_linear_modes.py")  # reported as a skip
    sample = _pick(spec)
    if sample is None:
        pytest.skip(f"{spec.name}: no float64 sample with differentiable inputs of at most "
                    f"{MAX_ENTRIES} entries")  # not counted as passing: reported as a skip
    primals = _primals(spec, sample)
    ref = _reference_hessian(spec, sample)
    if isinstance(ref, Exception):
        # the reference's op has no second derivative (torch's ctc_loss, cdist's backward):
        # our torch backend raises as torch does; the JAX Hessian is checked on its own
        assert spec.name in NO_REFERENCE_HESSIAN, f"{spec.name}: reference Hessian raised {ref}"
        with pytest.raises(RuntimeError, match="derivative for .* not implemented"):
            _torch_hessian(_torch_ours_fn(spec, sample), primals)
        _check_jax_hessian_alone(spec, sample, primals)
        return
    assert np.any(ref != 0) or spec.name in _ZERO_HESSIAN, \
        f"{spec.name}: the reference Hessian of {sample.id} is all zeros; pick another sample"

    f = _jax_fn(spec, sample)
    argnums = tuple(range(len(primals)))
    h_fwd = _flat(jax.hessian(f, argnums)(*primals), primals)
    assert _rel(h_fwd, ref) <= TOL, f"jax.hessian {sample.id}: {_rel(h_fwd, ref):.2e}"
    h_rev = _flat(jax.jacrev(jax.jacrev(f, argnums), argnums)(*primals), primals)
    assert _rel(h_rev, ref) <= TOL, f"jacrev(jacrev) {sample.id}: {_rel(h_rev, ref):.2e}"

    # jvp and the Hessian-vector product (jvp of grad) along a random direction
    rng = np.random.default_rng(0)
    vs = [rng.normal(size=p.shape) for p in primals]
    v = np.concatenate([x.ravel() for x in vs])
    _, ref_grads = testing.run_reference(spec, sample)
    g = np.concatenate([np.asarray(x, np.float64).ravel() for x in ref_grads])
    _, tangent = jax.jvp(f, primals, vs)
    assert abs(float(tangent) - g @ v) <= TOL * max(np.abs(g).max() * np.abs(v).sum(), 1e-300)
    _, hv = jax.jvp(jax.grad(f, argnums), primals, vs)
    hv = np.concatenate([np.asarray(x).ravel() for x in hv])
    assert _rel(hv, ref @ v) <= TOL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h_torch = _flat(_torch_hessian(_torch_ours_fn(spec, sample), primals), primals)
    assert _rel(h_torch, ref) <= TOL, f"torch {sample.id}: {_rel(h_torch, ref):.2e}"


#: Losses whose Hessian is zero wherever it exists (piecewise linear in the inputs).
_ZERO_HESSIAN = ("l1", "multi_margin", "multilabel_margin", "margin_ranking", "hinge_embedding",
                 "quantile", "multiclass_hinge", "multiclass_perceptron", "perceptron",
                 "keras.hinge", "keras.mean_absolute_error", "keras.categorical_hinge",
                 "lovasz", "keras.squared_hinge", "mape", "keras.mean_absolute_percentage_error")

#: Losses whose reference has no double backward in torch 2.13: ``ctc`` (``ctc_loss``) and
#: ``contrastive`` (pytorch-metric-learning's distances are ``torch.cdist``).
NO_REFERENCE_HESSIAN = ("ctc", "contrastive")


def _check_jax_hessian_alone(spec, sample, primals):
    """Without a reference Hessian: jax.hessian equals jacrev(jacrev), is symmetric and finite,
    and matches central differences of the JAX gradient (itself the reference's, by the parity
    tests) to the accuracy of the differences."""
    f = _jax_fn(spec, sample)
    argnums = tuple(range(len(primals)))
    h = _flat(jax.hessian(f, argnums)(*primals), primals)
    assert _finite(h) and np.any(h != 0)
    h_rev = _flat(jax.jacrev(jax.jacrev(f, argnums), argnums)(*primals), primals)
    assert _rel(h_rev, h) <= TOL
    assert _rel(h.T, h) <= TOL
    grad = jax.jit(jax.grad(f, argnums))
    rng = np.random.default_rng(1)
    for _ in range(3):
        vs = [rng.normal(size=p.shape) for p in primals]
        eps = 1e-5
        up = grad(*[p + eps * v for p, v in zip(primals, vs)])
        down = grad(*[p - eps * v for p, v in zip(primals, vs)])
        fd = np.concatenate([(np.asarray(a) - np.asarray(b)).ravel() / (2 * eps)
                             for a, b in zip(up, down)])
        hv = h @ np.concatenate([v.ravel() for v in vs])
        assert _rel(fd, hv) <= 1e-6


# ---------------------------------------------------------------------------------------------
# ctc: the JAX Hessian against a CTC written here in plain torch (twice differentiable)


def _torch_ctc(lp, targets, input_lengths, target_lengths, blank=0):
    """-log p(target | log_probs) by the alpha recursion on torch's differentiable ops."""
    out = []
    for b in range(lp.shape[1]):
        tgt = [int(v) for v in targets[b][: int(target_lengths[b])]]
        ext = [blank]
        for c in tgt:
            ext += [c, blank]
        n_t = int(input_lengths[b])
        neg = torch.tensor(-math.inf, dtype=lp.dtype)
        alpha = [lp[0, b, ext[0]]] + ([lp[0, b, ext[1]]] if len(ext) > 1 else []) + \
            [neg] * (len(ext) - min(2, len(ext)))
        for t in range(1, n_t):
            new = []
            for s in range(len(ext)):
                terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else []) + (
                    [alpha[s - 2]] if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2] else [])
                new.append(torch.logsumexp(torch.stack(terms), 0) + lp[t, b, ext[s]])
            alpha = new
        last = [alpha[-1]] + ([alpha[-2]] if len(ext) > 1 else [])
        out.append(-torch.logsumexp(torch.stack(last), 0))
    return torch.stack(out)


def test_ctc_hessian_against_a_plain_torch_ctc():
    """torch's ctc_loss has no double backward; the JAX Hessian (the derivative of torch's
    gradient) equals the true Hessian where torch's gradient is the true gradient: through
    log_softmax, w.r.t. the logits (pytorch#52241). Checked against torch.autograd's Hessian
    of an alpha recursion written with torch's differentiable ops."""
    rng = np.random.default_rng(3)
    n_t, n, c = 4, 2, 3
    logits = rng.normal(size=(n_t, n, c))
    targets = np.array([[1, 2], [2, 2]])
    il, tl = np.array([4, 3]), np.array([2, 1])
    sw = np.array([0.7, 1.3])
    ours = multiloss.get("ctc", backend="jax", reduction="sum")

    def f(z):
        return ours(jax.nn.log_softmax(z, axis=2), targets, il, tl, sample_weight=sw)

    def ref(z):
        lp = torch.log_softmax(z, dim=2)
        return (_torch_ctc(lp, targets, il, tl) * torch.from_numpy(sw)).sum()

    h_ref = torch.autograd.functional.hessian(ref, torch.from_numpy(logits)).numpy()
    h_ref = h_ref.reshape(logits.size, logits.size)
    h = np.asarray(jax.hessian(f)(logits)).reshape(logits.size, logits.size)
    assert np.any(h_ref != 0)
    assert _rel(h, h_ref) <= TOL
    h_rev = np.asarray(jax.jacrev(jax.jacrev(f))(logits)).reshape(h.shape)
    assert _rel(h_rev, h_ref) <= TOL
    v = rng.normal(size=logits.shape)
    g_ref = torch.autograd.functional.jacobian(ref, torch.from_numpy(logits)).numpy()
    assert abs(float(jax.jvp(f, (logits,), (v,))[1]) - (g_ref * v).sum()) <= TOL * np.abs(
        g_ref).sum() * np.abs(v).max()


# ---------------------------------------------------------------------------------------------
# torch linear_cross_entropy: autocast, an ignored NaN row, double backward


def test_torch_linear_cross_entropy_follows_torch_autocast():
    """Under torch.autocast the loss is F.linear_cross_entropy's (linear in bfloat16 or
    float16, cross_entropy in float32): torch's value and gradients (issue 15: 1.30963 where
    torch gives 1.30589 before)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, generator=gen)
    w = torch.randn(40, 32, generator=gen)
    t = torch.randint(0, 40, (16,), generator=gen)
    t[3] = -100
    ours = multiloss.get("linear_cross_entropy", backend="torch")
    for dtype in (torch.bfloat16, torch.float16):
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        xo, wo = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            ref = torch.nn.functional.linear_cross_entropy(xr, wr, t)
            out = ours(xo, wo, t)
        assert out.dtype == ref.dtype == torch.float32
        # the same logits; the mean rounds in another order (a few float32 ulps)
        tol = 8 * float(torch.finfo(torch.float32).eps) * abs(ref.item())
        assert abs(out.item() - ref.item()) <= tol
        plain = ours(x, w, t)
        assert abs(plain.item() - ref.item()) > 10 * tol  # autocast changes the number
        ref.backward()
        out.backward()
        eps = float(torch.finfo(dtype).eps)
        assert (xo.grad - xr.grad).abs().max() <= 4 * eps * xr.grad.abs().max()
        assert (wo.grad - wr.grad).abs().max() <= 4 * eps * wr.grad.abs().max()


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_ignores_a_nan_row(backend, reduction):
    """A NaN hidden state in an ignored row: the row contributes nothing to the loss, as in
    F.linear_cross_entropy (issue 14); the gradients are torch's (NaN: p * 0 in that row)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, -100, 5, 2, 1])
    x[1, 2] = float("nan")
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = torch.nn.functional.linear_cross_entropy(xr, wr, t, reduction=reduction)
    ref.sum().backward()
    assert np.isfinite(ref.detach().numpy()).all()
    value, grads = testing.value_and_grads(backend, "linear_cross_entropy",
                                           [x.numpy(), w.numpy(), t.numpy()], wrt=(0, 1),
                                           reduction=reduction)
    assert testing.rel_error(value, ref.detach().numpy()) <= 1e-12
    for g, r in zip(grads, (xr.grad, wr.grad)):
        assert testing.rel_error(g, r.numpy()) <= 1e-12


def test_torch_linear_cross_entropy_hessian_is_not_zero():
    """torch 2.13's chunked op (LinearCrossEntropyOptions) gives an all-zero Hessian; ours is
    F.linear_cross_entropy's (reference path) Hessian, and double backward works."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 4, -100, 1, 2, 3])
    ours = multiloss.get("linear_cross_entropy", backend="torch", chunk_size=4)
    for fn in (lambda a, b: ours(a, b, t),):
        h = torch.autograd.functional.hessian(fn, (x, w))
        h_ref = torch.autograd.functional.hessian(
            lambda a, b: torch.nn.functional.linear_cross_entropy(a, b, t), (x, w))
        for i in range(2):
            for j in range(2):
                assert h_ref[i][j].abs().max() > 0
                assert _rel(h[i][j].numpy(), h_ref[i][j].numpy()) <= TOL
    xg = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(ours(xg, w, t), xg, create_graph=True)
    (hvp,) = torch.autograd.grad(gx, xg, torch.ones_like(gx))
    assert hvp.abs().max() > 0
