"""The fused-linear losses (linear_dpo, ..., linear_grpo, linear_generalized_jsd, ...) beyond
the registry's parity grid (which checks each against TRL / torchtune / Liger's definition on
the materialised logits, both backends, float64 and float32): the logits are not materialised
(XLA's compiled memory), the torch backward's paths (a cotangent the same for every pair
scales the gradient computed in the forward; a second backward with retain_graph recomputes;
create_graph gives differentiable gradients), against the plain loss on the materialised
logits; on JAX, no chunk's logits product fused into a reduction (XLA's optimised program)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

testing.enable_x64()
RNG = np.random.default_rng(3)


def _dpo_problem(pairs, t, d, v, dtype="float64"):
    x = (RNG.normal(size=(2 * pairs, t, d)) * 0.5).astype(dtype)
    w = (RNG.normal(size=(v, d)) * 0.5).astype(dtype)
    lab = RNG.integers(0, v, size=(2 * pairs, t))
    lab[:, :2] = -100
    rx = (x + RNG.normal(size=x.shape) * 0.1).astype(dtype)
    rw = (w + RNG.normal(size=w.shape) * 0.1).astype(dtype)
    return x, w, lab, rx, rw


def test_jax_linear_dpo_does_not_materialise_the_logits():
    """XLA's compiled temporaries of jax.grad of linear_dpo (one pair per chunk) are under a
    quarter of the materialised loss's (the logits, their log-softmax and gradient)."""
    x, w, lab, rx, rw = (jnp.asarray(a) for a in _dpo_problem(16, 8, 16, 2048, "float32"))
    fused = multiloss.get("linear_dpo", backend="jax", chunk_size=1)
    plain = multiloss.get("dpo", backend="jax")
    n = 16

    def f_fused(x, w):
        return fused(x, w, lab, rx, rw)

    def f_plain(x, w):
        _, s = multiloss.sequence_logps(x @ w.T, lab)
        _, rs = multiloss.sequence_logps(jax.lax.stop_gradient(rx @ rw.T), lab)
        return plain(s[:n], s[n:], rs[:n], rs[n:])

    mem = {}
    for name, f in (("fused", f_fused), ("plain", f_plain)):
        m = jax.jit(jax.grad(f, (0, 1))).lower(x, w).compile().memory_analysis()
        mem[name] = m.temp_size_in_bytes
    logits = 2 * n * 8 * 2048 * 4
    assert mem["plain"] >= logits, mem
    assert mem["fused"] < mem["plain"] / 4, mem
    assert abs(float(f_fused(x, w)) - float(f_plain(x, w))) <= 1e-5


def _torch_plain_dpo(x, w, lab, rx, rw):
    from trl.trainer.utils import selective_log_softmax

    n = x.shape[0] // 2
    mask = lab != -100

    def seq(z):
        return (selective_log_softmax(z, torch.where(mask, lab, 0)) * mask).sum(-1)

    s = seq(x @ w.T)
    with torch.no_grad():
        rs = seq(rx @ rw.T)
    return multiloss.get("dpo", backend="torch", reduction="none")(s[:n], s[n:], rs[:n], rs[n:])


def test_torch_backward_paths(chunk_size=2):
    """A uniform cotangent (the mean), a per-pair one (recomputed), a second backward of the
    same graph (retain_graph: recomputed, not scaled twice) and a Hessian-vector product
    (create_graph) all equal the materialised loss's."""
    x, w, lab, rx, rw = (torch.tensor(a) for a in _dpo_problem(3, 5, 4, 7))
    fused = multiloss.get("linear_dpo", backend="torch", reduction="none", chunk_size=chunk_size)
    ct = torch.tensor(RNG.normal(size=3))
    for weights in (torch.full((3,), 1 / 3, dtype=torch.float64), ct):
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        ws = [w.clone().requires_grad_(True) for _ in range(2)]
        ours = (fused(xs[0], ws[0], lab, rx, rw) * weights).sum()
        ref = (_torch_plain_dpo(xs[1], ws[1], lab, rx, rw) * weights).sum()
        assert abs(float(ours) - float(ref)) <= 1e-12 * abs(float(ref))
        ours.backward(retain_graph=True)
        ours.backward()  # the second backward accumulates the same gradient again
        ref.backward(retain_graph=True)
        ref.backward()
        for a, b in ((xs[0].grad, xs[1].grad), (ws[0].grad, ws[1].grad)):
            assert testing.rel_error(a.numpy(), b.numpy()) <= 1e-12
    # double backward: the Hessian-vector product along w
    hv = []
    for fn in (lambda x, w: fused(x, w, lab, rx, rw), lambda x, w: _torch_plain_dpo(
            x, w, lab, rx, rw)):
        wl = w.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(x, wl).mean(), wl, create_graph=True)
        (h,) = torch.autograd.grad((g * w).sum(), wl)
        hv.append(h.numpy())
    assert testing.rel_error(hv[0], hv[1]) <= 1e-12


def test_linear_kto_kl_optional_as_kto():
    """kto's kl is optional on linear_kto as on kto (issue 17): left out, or None, z_ref = 0:
    the plain kto without kl on the materialised logits' log-probs, and TRL's KTOTrainer loss
    (its KL estimate 0), on both backends, values and gradients; a positive kl changes the
    loss (so it is not dropped when given)."""
    from trl.trainer.utils import selective_log_softmax

    from multiloss.losses.preference import kto_reference_terms

    n, t, d, v = 4, 5, 3, 7
    x = RNG.normal(size=(n, t, d)) * 0.7
    w = RNG.normal(size=(v, d)) * 0.7
    lab = RNG.integers(0, v, size=(n, t))
    lab[:, 0] = -100
    rx, rw = x + RNG.normal(size=x.shape) * 0.1, w + RNG.normal(size=w.shape) * 0.1
    y = np.array([True, False, True, True])
    mask = torch.tensor(lab != -100)

    def seq(z):
        return (selective_log_softmax(z, torch.where(mask, torch.tensor(lab), 0)) * mask).sum(-1)

    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    s = seq(xt @ wt.T)
    with torch.no_grad():
        rs = seq(torch.tensor(rx) @ torch.tensor(rw).T)
    opts = multiloss.resolve("kto").bind({})
    _, trl = kto_reference_terms(torch, (s, rs, torch.tensor(y)), opts)  # TRL, KL 0
    trl_grads = [g.numpy() for g in torch.autograd.grad(trl, (xt, wt))]
    plain = multiloss.get("kto", backend="torch")(s.detach(), rs, torch.tensor(y))
    trl = float(trl.detach())
    assert abs(float(plain) - trl) <= 1e-15
    args = (x, w, lab, rx, rw, y)
    for backend in ("jax", "torch"):
        value, grads = testing.value_and_grads(backend, "linear_kto", args, wrt=(0, 1),
                                               chunk_size=2)
        assert abs(float(value) - trl) <= 1e-12 * abs(trl), backend
        for g, r in zip(grads, trl_grads):
            assert testing.rel_error(g, r) <= 1e-12, backend
        loss = multiloss.get("linear_kto", backend=backend)
        conv = torch.tensor if backend == "torch" else jnp.asarray
        assert float(loss(*map(conv, args), kl=None)) == float(value), backend
        with_kl = float(loss(*map(conv, args), conv(np.float64(0.5))))
        assert abs(with_kl - trl) > 1e-3, backend


LABEL_LOGP_FORMS = ("linear_dpo", "linear_cpo", "linear_simpo", "linear_orpo", "linear_kto",
                    "linear_grpo")


@pytest.mark.parametrize("grad_in_forward", [True, False])
@pytest.mark.parametrize("name", LABEL_LOGP_FORMS)
def test_bfloat16_head_log_probs_in_float32_rounded_once(name, grad_in_forward):
    """bfloat16 hidden states and head: the logits in bfloat16 (the head's dtype, as the
    reference's), their log-softmax and the loss in float32, the result rounded once, on
    both paths of both backends; so JAX's and torch's values agree to the bit (once torch's
    default path took the log-sum-exp in bfloat16 and the second path returned float32)."""
    spec = next(s for s in testing.all_specs() if s.name == name)
    sample = testing.samples_for(spec, "float32")[0]
    opts = dict(sample.options, grad_in_forward=grad_in_forward, reduction="none")
    floats = [np.asarray(a).dtype.kind == "f" for a in sample.inputs]
    ours = multiloss.get(name, "jax", **opts)(*[
        jnp.asarray(a, jnp.bfloat16) if f else jnp.asarray(a)
        for a, f in zip(sample.inputs, floats)])
    theirs = multiloss.get(name, "torch", **opts)(*[
        torch.from_numpy(np.asarray(a)).to(torch.bfloat16) if f else torch.from_numpy(
            np.asarray(a)) for a, f in zip(sample.inputs, floats)])
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    got, want = np.asarray(ours.astype(jnp.float32)), theirs.float().numpy()
    if ours.dtype == jnp.bfloat16:  # float32 ulps apart at most: the same bfloat16
        np.testing.assert_array_equal(got, want)
    else:  # linear_orpo: float32 as TRL's, a few float32 ulps apart
        np.testing.assert_allclose(got, want, rtol=1e-6)


def _bf16_ulps(got, want):
    """|got - want| in bfloat16 ulps of the larger magnitude (0 where both are 0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    big = np.maximum(np.abs(got), np.abs(want))
    ulp = np.exp2(np.floor(np.log2(np.where(big > 0, big, 1.0))) - 7)
    return np.where(big > 0, np.abs(got - want) / ulp, 0.0)


@pytest.mark.parametrize("grad_in_forward", [True, False])
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_half_head_gradients_accumulate_in_float32_as_trls_fused_head(backend,
                                                                     grad_in_forward):
    """bfloat16 hidden states and head in 8 chunks (one sequence each): linear_grpo's
    gradients of the hidden states and the head are TRL 1.16's fused head's
    (``trl.kernels.ChunkedLogProbFunction``, what its GRPO, DPO and KTO trainers call: the
    logits in bfloat16, their log-softmax in float32, the logits' gradient rounded to
    bfloat16, the products summed in float32 over every chunk and rounded once) within one
    bfloat16 ulp (float32 summation order), the loss (float32 in TRL, rounded once here) too.
    The normaliser (128 tokens) is a power of two, so that scaling the gradient computed in
    the forward by it rounds nothing. Summed in bfloat16 chunk by chunk (before), the head's
    gradient was up to several ulps off."""
    from trl.kernels import ChunkedLogProbFunction

    rng = np.random.default_rng(11)
    n, t, d, v = 8, 16, 32, 256
    x = rng.normal(size=(n, t, d)).astype(np.float32)
    w = (rng.normal(size=(v, d)) / 2).astype(np.float32)
    lab = rng.integers(0, v, size=(n, t))
    # every floating input bfloat16 (with float32 old_logps the contract would promote the
    # head to float32, torch's rule for mixed dtypes)
    old = torch.from_numpy(-rng.uniform(4, 7, size=(n, t))).to(torch.bfloat16)
    adv = torch.from_numpy(rng.normal(size=n)).to(torch.bfloat16)
    mask = np.ones((n, t), np.int64)

    xt = torch.from_numpy(x).to(torch.bfloat16).requires_grad_(True)
    wt = torch.from_numpy(w).to(torch.bfloat16).requires_grad_(True)
    tok = ChunkedLogProbFunction.apply(xt.reshape(-1, d), wt, None,
                                       torch.from_numpy(lab).reshape(-1), 1.0, 64, None, 1.0,
                                       ())[0].view(n, t)
    assert tok.dtype == torch.float32
    want = multiloss.get("grpo", "torch")(tok, old, adv, torch.from_numpy(mask))
    want.backward()
    want_g = [xt.grad.float().numpy(), wt.grad.float().numpy()]

    loss = multiloss.get("linear_grpo", backend, chunk_size=1, grad_in_forward=grad_in_forward)
    if backend == "jax":
        old_j, adv_j = (jnp.asarray(a.float().numpy(), jnp.bfloat16) for a in (old, adv))

        def f(x, w):
            return loss(x, w, lab, old_j, adv_j, mask)

        xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
        got = f(xb, wb)
        got_g = [np.asarray(g.astype(jnp.float32)) for g in jax.grad(f, (0, 1))(xb, wb)]
        got = float(got.astype(jnp.float32))
    else:
        xo = torch.from_numpy(x).to(torch.bfloat16).requires_grad_(True)
        wo = torch.from_numpy(w).to(torch.bfloat16).requires_grad_(True)
        out = loss(xo, wo, torch.from_numpy(lab), old, adv, torch.from_numpy(mask))
        out.backward()
        assert xo.grad.dtype == wo.grad.dtype == torch.bfloat16
        got, got_g = float(out.float()), [xo.grad.float().numpy(), wo.grad.float().numpy()]
    assert _bf16_ulps(got, float(want.detach().to(torch.bfloat16).float())) <= 1
    for name, g, r in zip(("input", "linear_weight"), got_g, want_g):
        ulps = _bf16_ulps(g, r)
        assert ulps.max() <= 1, (name, ulps.max(), (ulps > 0).mean())


def _bitwise(a, b):
    a, b = a.double(), b.double()
    same = (a == b) & (torch.signbit(a) == torch.signbit(b))
    return bool((same | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_torch_distillation_closed_forms_are_autograds_operations(dtype):
    """The torch distillation forms' closed-form chunks (distillation/_closed_torch.py) give
    the plain loss's per-token values and, for a per-token cotangent that differs between
    tokens (NaN and infinity included), autograd's gradient of the logits bit for bit, with
    infinite and NaN logits (whole rows too) and ignored labels, in blocks of 1 and 3 rows."""
    from multiloss.losses.distillation import _closed_torch as C
    from multiloss.losses.distillation import _torch as P

    cases = [("forward_kl", True, {}), ("reverse_kl", True, {}),
             ("symmetric_kl", True, {"sym_kd_ratio": 0.3}), ("tvd", False, {}),
             ("generalized_jsd", False, {"beta": 0.3, "temperature": 2.0}),
             ("generalized_jsd", False, {"beta": 0.0, "temperature": 0.7}),
             ("generalized_jsd", False, {"beta": 1.0})]
    gen = torch.Generator().manual_seed(0)
    inf, nan = float("inf"), float("nan")
    for name, multiply, opts in cases:
        chunk = C.closed(getattr(C, f"{name}_rows"), multiply, 1)
        for trial in range(2):
            z = (torch.randn(5, 7, generator=gen, dtype=torch.float64) * 3).to(dtype)
            zt = (torch.randn(5, 7, generator=gen, dtype=torch.float64) * 3).to(dtype)
            lab = torch.tensor([1, -100, 3, 0, 6])
            ct = (torch.randn(5, generator=gen, dtype=torch.float64) * 2).to(dtype)
            if trial:
                z[0, 2], z[2, 1], z[3, 0], zt[0, 5], zt[2, 1] = inf, -inf, nan, -inf, inf
                z[4], zt[1, 3], ct[2] = -inf, nan, inf
            zz = z.clone().requires_grad_(True)
            ref = getattr(P, name)(zz, zt, lab, **opts).loss
            gref, = torch.autograd.grad(ref, zz, ct)
            for block in (1, 3):
                out, dz = chunk(z.clone(), zt.clone(), lab, -100, ct, True, opts, block)
                assert _bitwise(out, ref.detach()) and _bitwise(dz, gref), (name, opts, trial)
                assert dz.dtype == dtype and out.dtype == ref.dtype


def _fused_products(hlo):
    """The fusions of an optimised HLO module that hold a matrix product together with a
    reduction or an exponential (the ops of each, sorted)."""
    import re

    comps = {m.group(1): m.group(0)
             for m in re.finditer(r"^%(\S+) \(.*?\n}\n", hlo, re.S | re.M)}
    out = []
    for body in comps.values():
        for line in body.splitlines():
            m = re.search(r" = \S+ fusion\(.*calls=%([^,\s]+)", line)
            if m:
                ops = set(re.findall(r"= \S+ ([\w-]+)\(", comps.get(m.group(1), "")))
                if "dot" in ops and ops & {"reduce", "exponential"}:
                    out.append(sorted(ops))
    return out


def _fused_forms():
    from benchmarks.fused_linear import LOSSES

    return [pytest.param(n, g, id=f"{n}-{'forward' if g else 'remat'}")
            for n in LOSSES for g in (True, False)] + [
        pytest.param("linear_cross_entropy", None, id="linear_cross_entropy")]


@pytest.mark.parametrize("name,grad_in_forward", _fused_forms())
def test_jax_chunk_logits_product_not_fused_into_reductions(name, grad_in_forward):
    """In every fused-linear JAX form, on both differentiation paths of the language-model
    forms, no chunk's logits product is fused with a reduction or an exponential of the
    logits. XLA on CPU fuses a product with a softmax's max or sum that is its only consumer
    into one YNNPACK kernel, which at chunk sizes runs at less than half the product's speed
    (``_lm/_jax.py``'s ``_unfused``; before it, linear_forward_kl and linear_tvd took
    1.05-1.19x the materialised loss's time): checked on XLA's optimised program of
    jax.grad, 4-8 chunks of a (4096, 64) head."""
    from benchmarks.fused_linear import DISTILLATION, OPTIONS, problem

    if name == "linear_cross_entropy":
        args = (RNG.normal(size=(128, 64)).astype("float32"),
                RNG.normal(size=(4096, 64)).astype("float32"), RNG.integers(0, 4096, 128))
        opts = {"chunk_size": 16}
    else:  # chunks of 16 tokens, or of one unit (a pair of 16-token sequences, a sequence)
        args = tuple(problem(name, tokens=128, seq=16, dim=64, vocab=4096).values())
        opts = {**OPTIONS[name], "grad_in_forward": grad_in_forward,
                "chunk_size": 16 if name in DISTILLATION else 1}
    loss = multiloss.get(name, backend="jax", **opts)
    args = tuple(jnp.asarray(a) for a in args)

    def f(x, w):
        return loss(x, w, *args[2:])

    hlo = jax.jit(jax.grad(f, (0, 1))).lower(*args[:2]).compile().as_text()
    assert " dot(" in hlo
    assert _fused_products(hlo) == [], name
