"""multiloss.sequence_logps (from logits) and multiloss.linear_sequence_logps (chunked from
hidden states and the head's weight) on both backends against TRL 1.16's own
``selective_log_softmax`` and masked sum/mean (what its DPO/CPO/ORPO trainers compute), values
and gradients w.r.t. logits / hidden states, weight and bias; float64, float32, bfloat16;
chunks that do not divide the rows, blocks of classes, ignored labels, an all-ignored
sequence; the JAX transformations (jit, vmap, jvp, hessian)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

LONG = os.environ.get("MULTILOSS_LONG") == "1"

trl_utils = pytest.importorskip("trl.trainer.utils")

testing.enable_x64()
RNG = np.random.default_rng(5)
TOL = {"float64": 1e-12, "float32": testing.TOLERANCE["float32"]}
N, T, D, V = 3, 5, 4, 7
#: chunks of 4 of the 15 rows (the last shifted back), blocks of classes on JAX
CHUNKS = {"chunk_size": 4, "memory_budget": 200}


def _problem(dtype="float64"):
    x = RNG.normal(size=(N, T, D)).astype(dtype)
    w = (RNG.normal(size=(V, D)) * 0.8).astype(dtype)
    b = (RNG.normal(size=V) * 0.5).astype(dtype)
    lab = RNG.integers(0, V, size=(N, T))
    lab[0, :2] = -100
    lab[1, 3] = -100
    return x, w, b, lab


def _trl(z, lab, average):
    """TRL: selective_log_softmax of the labels (ignored ones replaced by 0), times the mask,
    summed over the sequence (divided by the mask's sum for the average log-probs)."""
    mask = lab != -100
    tok = trl_utils.selective_log_softmax(z, torch.where(mask, lab, 0)) * mask
    s = tok.sum(-1)
    return tok, (s / mask.sum(-1) if average else s)


def _rel(a, b, floor=0.0):
    return testing.rel_error(np.asarray(a, np.float64), np.asarray(b, np.float64), floor)


def _ref(x, w, b, lab, ct, cs, average, materialised_dtype=None):
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    z = tx @ tw.T + tb
    tok, seq = _trl(z, torch.tensor(lab), average)
    loss = (tok * torch.tensor(ct)).sum() + (seq * torch.tensor(cs)).sum()
    return tok.detach().numpy(), seq.detach().numpy(), torch.autograd.grad(loss, (tx, tw, tb))


@pytest.mark.parametrize("dtype,average", [("float64", False), ("float64", True)] + (
    [("float32", False), ("float32", True)] if LONG else []))
def test_against_trl_values_and_gradients(dtype, average):
    x, w, b, lab = _problem(dtype)
    ct = RNG.normal(size=(N, T)).astype(dtype)
    cs = RNG.normal(size=N).astype(dtype)
    rtok, rseq, rgrads = _ref(x, w, b, lab, ct, cs, average)
    tol, floor = TOL[dtype], (0.0 if dtype == "float64" else 1.0)
    results = {}

    # torch: from logits, and chunked
    for form in ("logits", "linear"):
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        if form == "logits":
            tok, seq = multiloss.sequence_logps(tx @ tw.T + tb, torch.tensor(lab),
                                                average=average)
        else:
            tok, seq = multiloss.linear_sequence_logps(tx, tw, torch.tensor(lab), linear_bias=tb,
                                                       average=average, **CHUNKS)
        loss = (tok * torch.tensor(ct)).sum() + (seq * torch.tensor(cs)).sum()
        grads = torch.autograd.grad(loss, (tx, tw, tb))
        results[f"torch-{form}"] = (tok.detach(), seq.detach(), grads)

    # JAX, jitted
    for form in ("logits", "linear"):
        def f(x, w, b, form=form):
            if form == "logits":
                tok, seq = multiloss.sequence_logps(x @ w.T + b, jnp.asarray(lab),
                                                    average=average)
            else:
                tok, seq = multiloss.linear_sequence_logps(x, w, jnp.asarray(lab), linear_bias=b,
                                                           average=average, **CHUNKS)
            return jnp.sum(tok * ct) + jnp.sum(seq * cs), (tok, seq)

        (_, (tok, seq)), grads = jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))(x, w, b)
        results[f"jax-{form}"] = (tok, seq, grads)

    for name, (tok, seq, grads) in results.items():
        assert np.asarray(tok).dtype == np.dtype(dtype), name
        assert _rel(tok, rtok, floor) <= tol, (name, _rel(tok, rtok, floor))
        assert _rel(seq, rseq, floor) <= tol, (name, _rel(seq, rseq, floor))
        for g, r in zip(grads, rgrads):
            assert _rel(g, r, floor) <= tol, (name, _rel(g, r, floor))


def test_all_ignored_sequence_and_bad_label():
    """A sequence with every label ignored: sum 0 (mean NaN, TRL's 0 / 0); a label outside
    [0, V) that is not ignored: NaN (torch's gather raises), on both backends."""
    x, w, b, lab = _problem()
    lab[2] = -100
    bad = lab.copy()
    bad[1, 0] = V
    for mod, arr in (("torch", torch.tensor), ("jax", jnp.asarray)):
        for fn, args in ((multiloss.sequence_logps, (arr(x @ w.T + b),)),
                         (multiloss.linear_sequence_logps, (arr(x), arr(w)))):
            _, s = fn(*args, arr(lab))
            _, m = fn(*args, arr(lab), average=True)
            assert float(s[2]) == 0.0 and np.isnan(float(m[2])), (mod, fn)
            tok, s = fn(*args, arr(bad))
            assert np.isnan(float(tok[1, 0])) and np.isnan(float(s[1])), (mod, fn)
            assert np.isfinite(np.asarray(tok[0])).all()


def test_bfloat16_against_trl():
    """bfloat16 logits: computed in float32 and rounded once, TRL's float32 path on the
    upcast logits to within one bfloat16 rounding (TRL's own bfloat16 path, torch's CPU
    log_softmax in bfloat16, rounds its intermediates: up to 100% relative error on
    log-probs near 0 -- a documented difference), on both backends."""
    x, w, b, lab = _problem("float32")
    z = torch.tensor(x @ w.T + b).to(torch.bfloat16)
    ref_tok, _ = _trl(z.float(), torch.tensor(lab), False)
    ref_tok = ref_tok.numpy()
    eps = float(jnp.finfo(jnp.bfloat16).eps)
    tok_t, _ = multiloss.sequence_logps(z, torch.tensor(lab))
    assert tok_t.dtype == torch.bfloat16
    tok_j, _ = multiloss.sequence_logps(jnp.asarray(z.float().numpy()).astype(jnp.bfloat16),
                                        jnp.asarray(lab))
    assert tok_j.dtype == jnp.bfloat16
    for tok in (tok_t.float().numpy(), np.asarray(tok_j, np.float32)):
        assert np.all(np.abs(tok - ref_tok) <= eps / 2 * np.abs(ref_tok)), (tok, ref_tok)
    # chunked from bfloat16 hidden states: float32 products, rounded once
    xb, wb = (torch.tensor(a).to(torch.bfloat16) for a in (x, w))
    exact, _ = _trl(xb.float() @ wb.float().T, torch.tensor(lab), False)
    exact = exact.numpy()
    t1, _ = multiloss.linear_sequence_logps(xb, wb, torch.tensor(lab))
    t2, _ = multiloss.linear_sequence_logps(jnp.asarray(xb.float().numpy()).astype(jnp.bfloat16),
                                            jnp.asarray(wb.float().numpy()).astype(jnp.bfloat16),
                                            jnp.asarray(lab))
    for tok in (t1.float().numpy(), np.asarray(t2, np.float32)):
        assert np.all(np.abs(tok - exact) <= eps / 2 * np.abs(exact)), (tok, exact)


@pytest.mark.skipif(not LONG, reason="MULTILOSS_LONG=1: the custom JVP is linear_cross_entropy's "
                    "(tests/test_higher_order.py checks it in CI)")
def test_jax_transformations():
    """vmap equals a loop; jvp equals the gradient along the tangent (the custom JVP of the
    chunked form, linear_cross_entropy's, whose Hessians tests/test_higher_order.py checks)."""
    x, w, b, lab = _problem()
    lab_j = jnp.asarray(lab)

    def f(x, w):
        return multiloss.linear_sequence_logps(x, w, lab_j, **CHUNKS).sequence.sum()

    xs = np.stack([x, x * 0.5])
    per = jax.vmap(lambda xi: multiloss.linear_sequence_logps(xi, w, lab_j, **CHUNKS).sequence)(xs)
    for i in range(2):
        one = multiloss.linear_sequence_logps(xs[i], w, lab_j, **CHUNKS).sequence
        assert _rel(per[i], one) <= 1e-12
    dx = RNG.normal(size=x.shape)
    _, tan = jax.jvp(lambda x: f(x, w), (x,), (dx,))
    g = jax.grad(f)(x, w)
    assert abs(float(tan) - float(jnp.sum(g * dx))) <= 1e-12 * abs(float(tan))


def test_torch_double_backward():
    """create_graph=True: the chunked form's gradient is differentiable again (its
    Hessian-vector product equals the materialised logits')."""
    x, w, b, lab = _problem()
    out = []
    for form in ("logits", "linear"):
        tw = torch.tensor(w, requires_grad=True)
        tx = torch.tensor(x)
        if form == "logits":
            _, s = multiloss.sequence_logps(tx @ tw.T, torch.tensor(lab))
        else:
            _, s = multiloss.linear_sequence_logps(tx, tw, torch.tensor(lab), chunk_size=4)
        (g,) = torch.autograd.grad(s.sum(), tw, create_graph=True)
        (hv,) = torch.autograd.grad((g * torch.tensor(w)).sum(), tw)
        out.append(hv.numpy())
    assert _rel(out[1], out[0]) <= 1e-12
